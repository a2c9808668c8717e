"""Validated settings: the YAML schema of SPEC §4, loaded once at start-up."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from rlcommon.config_files import ConfigError as ConfigError
from rlcommon.config_files import load_model, parse_model
from rlcommon.server_options import MAX_PENDING_CALLS

from .types import RATE_DIMS, Estimate

PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets"

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Share = Annotated[float, Field(gt=0, le=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Pricing(_Strict):
    """USD per million tokens."""

    input: NonNegativeFloat = 0.0
    cached: NonNegativeFloat = 0.0
    output: NonNegativeFloat = 0.0

    def cost_usd(self, input_tokens: int, cached_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input + cached_tokens * self.cached + output_tokens * self.output) / 1e6


class ModelConfig(_Strict):
    tokens_per_minute: PositiveInt | None = None
    requests_per_minute: PositiveInt | None = None
    tokens_per_day: PositiveInt | None = None
    requests_per_day: PositiveInt | None = None
    # Anthropic's ITPM and OTPM (SPEC §12): input and output tokens limited apart.
    input_tokens_per_minute: PositiveInt | None = None
    output_tokens_per_minute: PositiveInt | None = None
    max_concurrent_requests: PositiveInt | None = None
    # Anthropic does not count cache reads towards ITPM.
    cached_tokens_count_as_input: bool = True
    pricing: Pricing = Pricing()
    # fixed: minute and UTC-day windows; rolling: buckets refilled continuously (SPEC §12).
    window: Literal["fixed", "rolling"] = "fixed"

    @model_validator(mode="after")
    def _at_least_one_limit(self) -> Self:
        if not any((*self.rates(), self.max_concurrent_requests)):
            raise ValueError(
                "a model needs at least one limit: tokens_per_minute, requests_per_minute, tokens_per_day, "
                "requests_per_day, input_tokens_per_minute, output_tokens_per_minute or max_concurrent_requests"
            )
        return self

    def rates(self) -> tuple[int | None, ...]:
        """The rate limits in RATE_DIMS order."""
        return tuple(getattr(self, name) for name in RATE_DIMS)


class RatioConfig(_Strict):
    initial: Share | None = None
    flexible: bool = True


class JobTypeConfig(_Strict):
    # The parts come first: estimated_tokens is checked against them.
    estimated_input_tokens: NonNegativeInt | None = None
    estimated_output_tokens: NonNegativeInt | None = None
    # Input + output + cached; when unset, the sum of the two parts.
    estimated_tokens: NonNegativeInt
    estimated_requests: NonNegativeInt = 1
    estimated_memory_kb: PositiveInt | None = None
    ratio: RatioConfig = RatioConfig()
    max_wait_ms: dict[str, NonNegativeInt] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _tokens_from_parts(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "estimated_tokens" in data:
            return data
        parts = (data.get("estimated_input_tokens"), data.get("estimated_output_tokens"))
        # Anything but two whole numbers is left to the fields' own checks.
        if all(type(p) is int for p in parts):
            return {**data, "estimated_tokens": sum(parts)}
        return data

    @field_validator("estimated_tokens")
    @classmethod
    def _tokens_are_the_parts(cls, tokens: int, info: ValidationInfo) -> int:
        parts = (info.data.get("estimated_input_tokens"), info.data.get("estimated_output_tokens"))
        if parts[0] is not None and parts[1] is not None and tokens != parts[0] + parts[1]:
            raise ValueError(
                f"{tokens} is not estimated_input_tokens + estimated_output_tokens ({parts[0]} + {parts[1]}); "
                "give the same total, or leave estimated_tokens out"
            )
        return tokens

    def estimate(self) -> Estimate:
        return Estimate(
            self.estimated_tokens,
            self.estimated_requests,
            self.estimated_input_tokens or 0,
            self.estimated_output_tokens or 0,
        )


class RatioAdjustment(_Strict):
    high_load_threshold: NonNegativeFloat = 0.7
    low_load_threshold: NonNegativeFloat = 0.3
    max_adjustment: Share = 0.2
    min_ratio: Share = 0.01
    adjustment_interval_ms: PositiveInt = 5000
    releases_per_adjustment: PositiveInt = 10

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> Self:
        if self.low_load_threshold > self.high_load_threshold:
            raise ValueError("low_load_threshold must not exceed high_load_threshold")
        return self


class MemoryConfig(_Strict):
    capacity_kb: NonNegativeInt | None = None
    free_memory_ratio: Share | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.capacity_kb is None) == (self.free_memory_ratio is None):
            raise ValueError("memory needs exactly one of capacity_kb or free_memory_ratio")
        return self


class ProviderFeedbackConfig(_Strict):
    """How a provider's word in a Release moves the ledger (SPEC §11)."""

    # The longest pause a retry-after may ask for: a provider's odd header must not stop a model
    # for an hour.
    max_pause_ms: PositiveInt = 60_000
    # The pause of a RATE_LIMITED release that gives no retry-after.
    default_pause_ms: NonNegativeInt = 1000
    # How far the provider's remaining may fall below the ledger's before the gap is charged; unset:
    # the largest estimate of any job type, so that one call in flight that the provider has
    # counted and the ledger not yet does not shrink the pools.
    tolerance_tokens: NonNegativeInt | None = None
    # A rolling model learns the rate at which others use the key from the gaps the provider shows,
    # and refills that much slower: each gap moves the rate by gap / this time (ms). Longer learns
    # slower and is shaken less by one burst; 0 turns the learning off (docs/capacity.md).
    outside_rate_time_constant_ms: NonNegativeInt = 20_000


# Acquires one instance lets wait at once, by default. A waiter costs about 27 KB of the instance's memory
# (docs/performance.md, make bench-waiters): 5 000 of them hold about 135 MB, and a burst that size still
# reaches the queue before gRPC's own backlog limit (rlcommon.server_options) would shed calls unanswered.
DEFAULT_MAX_WAITERS = 5_000

# The most models that share one key prefix. The ledger's maintenance (registering, removing an
# instance, a heartbeat's states) works on every model in one script call, so their number is its
# batch: 64 keeps such a call within a few milliseconds of Redis.
MAX_MODELS = 64
# With the names' length, these bound the largest Acquire and GetAllocation (rlcommon.server_options).
MAX_JOB_TYPES = 64
MAX_NAME_LENGTH = 128


class Settings(_Strict):
    models: Annotated[dict[str, ModelConfig], Field(min_length=1, max_length=MAX_MODELS)]
    escalation_order: list[str] | None = None
    job_types: Annotated[dict[str, JobTypeConfig], Field(min_length=1, max_length=MAX_JOB_TYPES)]
    default_job_type: str | None = None
    ratio_adjustment: RatioAdjustment = RatioAdjustment()
    min_job_type_capacity: NonNegativeInt = 1
    memory: MemoryConfig | None = None
    lease_ttl_ms: PositiveInt = 300_000
    heartbeat_interval_ms: PositiveInt = 5000
    stale_after_ms: PositiveInt = 15_000
    # While no other instance has requests waiting for a model, an instance may take beyond its
    # share, up to what is left globally (SPEC §5).
    lend_idle_capacity: bool = False
    provider_feedback: ProviderFeedbackConfig = ProviderFeedbackConfig()
    # Beyond it an Acquire that would wait is refused at once with RESOURCE_EXHAUSTED.
    max_waiters: PositiveInt = DEFAULT_MAX_WAITERS

    @field_validator("max_waiters")
    @classmethod
    def _waiters_within_grpc_backlog(cls, value: int) -> int:
        if value > MAX_PENDING_CALLS:
            raise ValueError(
                f"{value} is above {MAX_PENDING_CALLS}, the calls gRPC holds before the service sees them: "
                "beyond it a burst of waiters would be dropped unanswered; run more instances instead"
            )
        return value

    @model_validator(mode="after")
    def _cross_references(self) -> Self:
        for kind, names in (("models", self.models), ("job_types", self.job_types)):
            for name in names:
                if not name.isprintable():
                    raise ValueError(f"{kind}: the name {name!r} holds a line break or another control character")
                if len(name) > MAX_NAME_LENGTH:
                    raise ValueError(f"{kind}: the name {name[:20]!r}... is longer than {MAX_NAME_LENGTH} characters")
        if self.escalation_order is not None:
            for i, name in enumerate(self.escalation_order):
                if name not in self.models:
                    raise ValueError(f"escalation_order[{i}]: unknown model {name!r}")
            if len(set(self.escalation_order)) != len(self.escalation_order):
                raise ValueError("escalation_order: a model is listed twice")
        if self.default_job_type is not None and self.default_job_type not in self.job_types:
            raise ValueError(f"default_job_type: unknown job type {self.default_job_type!r}")
        for jt_name, jt in self.job_types.items():
            for model in jt.max_wait_ms:
                if model not in self.models:
                    raise ValueError(f"job_types.{jt_name}.max_wait_ms: unknown model {model!r}")
        self._part_estimates_given()
        if self.stale_after_ms <= self.heartbeat_interval_ms:
            raise ValueError("stale_after_ms must be longer than heartbeat_interval_ms")
        given = sum(jt.ratio.initial or 0.0 for jt in self.job_types.values())
        if given > 1 + 1e-9:
            raise ValueError(f"job_types.*.ratio.initial: the given ratios sum to {given:.4g}, above 1")
        for name, ratio in self.initial_ratios().items():
            if ratio <= 0:
                raise ValueError(f"job_types.{name}.ratio.initial: ends up 0 (the other types take the whole pool)")
        return self

    def _part_estimates_given(self) -> None:
        """A model that limits input or output tokens apart needs every job type's estimate of both
        parts: its slots average them, and a job without one would be admitted without counting it."""
        needing = next(
            (name for name, m in self.models.items() if m.input_tokens_per_minute or m.output_tokens_per_minute), None
        )
        if needing is None:
            return
        for jt_name, jt in self.job_types.items():
            for part in ("estimated_input_tokens", "estimated_output_tokens"):
                if getattr(jt, part) is None:
                    raise ValueError(
                        f"job_types.{jt_name}.{part}: required, since model {needing!r} limits input and output "
                        "tokens apart"
                    )

    def initial_ratios(self) -> dict[str, float]:
        """Given ratios; types without one share the rest equally.

        When every type has a ratio and they sum below 1, the rest goes to the flexible types in
        proportion to their ratios (all types when none is flexible), so no capacity is stranded.
        """
        given = {n: jt.ratio.initial for n, jt in self.job_types.items() if jt.ratio.initial is not None}
        rest = 1.0 - math.fsum(given.values())
        # 0.3 + 0.35 + 0.35 leaves float dust, not a share.
        if rest < 1e-9:
            rest = 0.0
        unset = [n for n in self.job_types if n not in given]
        ratios = {n: float(r) for n, r in given.items()}
        if unset:
            for n in unset:
                ratios[n] = rest / len(unset)
            return ratios
        receivers = [n for n, jt in self.job_types.items() if jt.ratio.flexible] or list(self.job_types)
        weight = sum(ratios[n] for n in receivers)
        for n in receivers:
            ratios[n] += rest * ratios[n] / weight
        return ratios

    def model_order(self) -> list[str]:
        return list(self.escalation_order) if self.escalation_order else list(self.models)

    def feedback_tolerance(self) -> tuple[int, int, int, int]:
        """Per kind (KINDS), how far the provider's remaining may fall below the ledger's: the given
        tolerance for every kind of tokens, else the largest estimate of the kind; 1 request."""
        given = self.provider_feedback.tolerance_tokens
        largest = [max(kind) for kind in self._estimates_by_kind()]
        tokens, _, input_tokens, output_tokens = largest if given is None else [given] * len(largest)
        return tokens, 1, input_tokens, output_tokens

    def average_estimates(self) -> tuple[Fraction, Fraction, Fraction, Fraction]:
        """Exact averages per kind (KINDS) of the estimates over all job types (SPEC §5), as fractions
        so that a pool that is a multiple of the average gives a whole number of slots. A part a job
        type does not estimate counts as 0: only models that limit it use it, and those need every
        job type to give it."""
        n = len(self.job_types)
        tokens, requests, input_tokens, output_tokens = (Fraction(sum(kind), n) for kind in self._estimates_by_kind())
        return tokens, requests, input_tokens, output_tokens

    def _estimates_by_kind(self) -> list[tuple[int, ...]]:
        """Per kind (KINDS), every job type's estimate."""
        return list(zip(*(jt.estimate().per_kind() for jt in self.job_types.values()), strict=True))


def parse_settings(data: object, source: str) -> Settings:
    return parse_model(Settings, data, source)


def load_settings(path: Path) -> Settings:
    return load_model(Settings, path)


def preset_path(name: str) -> Path:
    path = PRESETS_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")))
        raise ConfigError(f"unknown preset {name!r}; known presets: {known}")
    return path
