"""When a failed call may be sent again.

Only Acquire (idempotent by job_id) and Release (the service answers a second release with the
first answer) are retried, and only on UNAVAILABLE: every other status is an answer, not a
transport failure, and sending the call again would not change it.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import grpc

from rlclient.errors import RateLimitError, ServiceUnavailable, error_for


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded exponential backoff with jitter. ``max_attempts`` counts the first call too."""

    max_attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_backoff < 0 or self.max_backoff < self.initial_backoff or self.multiplier < 1:
            raise ValueError("backoffs must satisfy 0 <= initial_backoff <= max_backoff and multiplier >= 1")

    def backoff(self, failed_attempts: int) -> float:
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier ** (failed_attempts - 1))
        # At least half the ceiling, so no retry comes straight back; the random rest spreads out
        # clients that failed together.
        return random.uniform(ceiling / 2, ceiling)


NO_RETRY = RetryPolicy(max_attempts=1)


def deadline_after(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def time_left(deadline: float | None) -> float | None:
    """The gRPC timeout for the next attempt; raises once the caller's deadline has passed."""
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise error_for(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed before the call could be retried")
    return left


def next_backoff(
    policy: RetryPolicy, error: RateLimitError, failed_attempts: int, deadline: float | None
) -> float | None:
    """Seconds to wait before sending the call again, or None when ``error`` is final."""
    if not isinstance(error, ServiceUnavailable) or failed_attempts >= policy.max_attempts:
        return None
    delay = policy.backoff(failed_attempts)
    if deadline is not None and time.monotonic() + delay >= deadline:
        return None
    return delay
