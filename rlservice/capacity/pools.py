"""What one instance may still take on a model: the fair-share formula, mirrored in lib.lua."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from ..types import TOKEN_DIMS, ModelLimits, Snapshot

Dims = tuple[int | None, int | None, int | None, int | None]

# Slots reported when no configured dimension bounds them (every estimate is 0).
UNBOUNDED_SLOTS = 1_000_000


@dataclass(frozen=True, slots=True)
class Pending:
    """Local attempts sent to Redis whose replies have not arrived yet."""

    tokens: int = 0
    requests: int = 0
    count: int = 0

    def add(self, tokens: int, requests: int, count: int) -> Pending:
        return Pending(self.tokens + tokens, self.requests + requests, self.count + count)

    def per_dim(self) -> tuple[int, int, int, int]:
        return (self.tokens, self.requests, self.tokens, self.requests)


NO_PENDING = Pending()


@dataclass(frozen=True, slots=True)
class Pool:
    """pool: what may still be taken per dimension; share: the fair share (dynamic limit)."""

    rates: Dims
    shares: Dims
    max_concurrent: int | None
    concurrent_share: int | None
    total_slots: int
    own: tuple[int, int, int, int]
    own_inflight: int


def compute_pool(
    limits: ModelLimits,
    snap: Snapshot,
    avg_tokens: Fraction | float,
    avg_requests: Fraction | float,
    pending: Pending = NO_PENDING,
) -> Pool:
    n = max(snap.instances, 1)
    extra = pending.per_dim()
    own = tuple(o + e for o, e in zip(snap.own, extra, strict=True))
    rates: list[int | None] = []
    shares: list[int | None] = []
    for i, limit in enumerate(limits.rates):
        if limit is None:
            rates.append(None)
            shares.append(None)
            continue
        share = (limit - snap.retired[i]) // n
        left = limit - snap.total[i] - extra[i]
        rates.append(max(0, min(share - own[i], left)))
        shares.append(max(0, share))
    conc: int | None = None
    conc_share: int | None = None
    own_inflight = snap.own_inflight + pending.count
    if limits.max_concurrent is not None:
        conc_share = limits.max_concurrent // n
        left = limits.max_concurrent - snap.inflight_total - pending.count
        conc = max(0, min(conc_share - own_inflight, left))
    # Exact integer arithmetic on the averages' ratios: 66 requests at an average of 2.2 are 30 slots.
    tn, td = avg_tokens.as_integer_ratio()
    rn, rd = avg_requests.as_integer_ratio()
    slots = []
    for i, pool in enumerate(rates):
        if pool is not None:
            num, den = (tn, td) if i in TOKEN_DIMS else (rn, rd)
            if num > 0:
                slots.append(pool * den // num)
    if conc is not None:
        slots.append(conc)
    return Pool(
        rates=(rates[0], rates[1], rates[2], rates[3]),
        shares=(shares[0], shares[1], shares[2], shares[3]),
        max_concurrent=conc,
        concurrent_share=conc_share,
        total_slots=min(slots) if slots else UNBOUNDED_SLOTS,
        own=(own[0], own[1], own[2], own[3]),
        own_inflight=own_inflight,
    )
