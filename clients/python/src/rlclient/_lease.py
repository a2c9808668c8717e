"""State and outcome rules shared by the sync and asyncio leases; no I/O here."""

from __future__ import annotations

import time
from collections.abc import Sequence

import grpc

from rlclient._proto import ratelimit_pb2 as pb
from rlclient.errors import CapacityExhausted
from rlclient.types import CallReport, Outcome, ProviderFeedback, ReleaseResult, Usage, provider_model

# Extending at a third of the lifetime leaves room for two failed attempts before the lease lapses.
KEEPALIVE_FRACTION = 1 / 3
MIN_KEEPALIVE_INTERVAL_S = 0.05


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class LeaseState:
    """A granted Acquire: what was granted, how it was asked for, and how the body said it ended."""

    def __init__(
        self,
        response: pb.AcquireResponse,
        *,
        job_type: str,
        job_id: str,
        models: Sequence[str] | None,
        lease_ttl_ms: int | None,
    ) -> None:
        self.lease_id: str = response.lease_id
        self.model_id: str = response.model_id
        self.models_tried: tuple[str, ...] = tuple(response.models_tried)
        self.reserved_tokens: int = response.reserved.tokens
        self.reserved_requests: int = response.reserved.requests
        self.waited_ms: int = response.waited_ms
        self.expires_at_ms: int = response.lease_expires_at_ms
        self.instance_id: str = response.instance_id
        self.job_type = job_type
        self.job_id = job_id
        self.models: tuple[str, ...] | None = tuple(models) if models is not None else None
        self.lease_ttl_ms = lease_ttl_ms
        self._recorded: CallReport | None = None
        self._result: ReleaseResult | None = None

    @property
    def provider_model(self) -> str:
        """The granted model as its provider names it: ``openai/gpt-5.2`` → ``gpt-5.2``."""
        return provider_model(self.model_id)

    @property
    def remaining_models(self) -> tuple[str, ...]:
        """The rest of the requested escalation order after the granted model.

        Empty when the lease was acquired without ``models``: the service's configured order is not
        known to the client.
        """
        if self.models is None:
            return ()
        tried = set(self.models_tried)
        return tuple(m for m in self.models if m not in tried)

    @property
    def released(self) -> bool:
        return self._result is not None

    @property
    def result(self) -> ReleaseResult | None:
        """The service's answer to the release, once released."""
        return self._result

    def usage(
        self, *, input_tokens: int = 0, output_tokens: int = 0, cached_tokens: int = 0, request_count: int = 1
    ) -> Usage:
        """Records what the provider call used; the lease is released with it when the block ends."""
        recorded = Usage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_tokens=cached_tokens,
            request_count=request_count,
        )
        self._recorded = CallReport(Outcome.SUCCESS, recorded)
        return recorded

    def report(self, report: CallReport) -> CallReport:
        """Records how the provider call ended (outcome, usage, the provider's feedback), as a
        provider adapter reads it; the lease is released with it when the block ends."""
        self._recorded = report
        return report

    def fail(self, usage: Usage | None = None) -> None:
        """Records that the provider call failed, with the usage it still counted if known."""
        self._recorded = self.failure(usage)

    def failure(self, usage: Usage | None) -> CallReport:
        """The report to release with when the call failed: a recorded failure (e.g. RATE_LIMITED)
        as it is unless ``usage`` is given, else FAILED_WITH_USAGE with the known usage, else
        FAILED_UNKNOWN_USAGE; the provider's feedback is kept either way."""
        recorded = self._recorded
        if usage is None and recorded is not None and recorded.outcome is not Outcome.SUCCESS:
            return recorded
        known = usage if usage is not None else self._recorded_usage()
        feedback = recorded.provider if recorded is not None else None
        if known is None:
            return CallReport(Outcome.FAILED_UNKNOWN_USAGE, None, feedback)
        return CallReport(Outcome.FAILED_WITH_USAGE, known, feedback)

    def explicit(self, usage: Usage | None, outcome: Outcome | None, provider: ProviderFeedback | None) -> CallReport:
        """The report of ``release(usage, outcome=..., provider=...)``: given values first, then
        recorded ones."""
        feedback = provider if provider is not None else self._recorded_feedback()
        if outcome is not None:
            return CallReport(outcome, usage if usage is not None else self._recorded_usage(), feedback)
        if usage is not None:
            return CallReport(Outcome.SUCCESS, usage, feedback)
        recorded = self._recorded or CallReport(Outcome.FAILED_UNKNOWN_USAGE)
        return CallReport(recorded.outcome, recorded.usage, feedback)

    def on_exit(self, body_raised: bool) -> CallReport:
        """The report to release with when the ``with`` block ends.

        A block that ends without reporting usage leaves the estimate committed: refunding it all
        as a zero-usage success would hand out capacity the provider may well have counted. A
        block that raised after recording a success releases FAILED_WITH_USAGE; a recorded failure
        (RATE_LIMITED from an adapter, say) stands.
        """
        recorded = self._recorded
        if recorded is None:
            return CallReport(Outcome.FAILED_UNKNOWN_USAGE)
        if body_raised and recorded.outcome is Outcome.SUCCESS:
            return CallReport(Outcome.FAILED_WITH_USAGE, recorded.usage, recorded.provider)
        return recorded

    def delegation(self) -> tuple[tuple[str, ...], str]:
        """The models and job id to acquire with when handing the job on; raises when none remain."""
        remaining = self.remaining_models
        if not remaining:
            order = "requested order" if self.models is not None else "order (acquired without models)"
            raise CapacityExhausted(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"all models exhausted: no model left after {self.model_id} in the {order}; "
                f"tried {', '.join(self.models_tried)}",
            )
        # A fresh id: the released lease's job_id may still map to it on the service.
        return remaining, f"{self.job_id}>{remaining[0]}"

    def keepalive_plan(self) -> tuple[int, float]:
        """The lifetime to extend by (ms) and the interval between extensions (s)."""
        ttl_ms = self.lease_ttl_ms or max(1, self.expires_at_ms - wall_ms())
        return ttl_ms, max(MIN_KEEPALIVE_INTERVAL_S, ttl_ms / 1000 * KEEPALIVE_FRACTION)

    def _recorded_usage(self) -> Usage | None:
        return self._recorded.usage if self._recorded is not None else None

    def _recorded_feedback(self) -> ProviderFeedback | None:
        return self._recorded.provider if self._recorded is not None else None

    def __repr__(self) -> str:
        state = "released" if self.released else f"expires_at_ms={self.expires_at_ms}"
        return (
            f"{type(self).__name__}(lease_id={self.lease_id!r}, model_id={self.model_id!r}, "
            f"job_type={self.job_type!r}, job_id={self.job_id!r}, {state})"
        )
