"""The per-instance pool (SPEC §5 with the documented fair-share deviation)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlservice.capacity.pools import NO_PENDING, UNBOUNDED_SLOTS, Pending, Pool, compute_pool
from rlservice.types import ModelLimits

from .helpers import limits, model_limits, preset, snapshot


@dataclass
class Ledger:
    """The ledger's arithmetic for one model and window, as the acquire script applies it."""

    lim: ModelLimits
    own: dict[int, list[int]] = field(default_factory=dict)
    inflight: dict[int, int] = field(default_factory=dict)
    retired: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    leases: dict[int, list[tuple[int, int]]] = field(default_factory=dict)

    def total(self) -> tuple[int, int, int, int]:
        t = [self.retired[d] + sum(o[d] for o in self.own.values()) for d in range(4)]
        return (t[0], t[1], t[2], t[3])

    def compute(self, inst: int, avg_t: float = 1.0, avg_r: float = 1.0) -> Pool:
        own = self.own[inst]
        snap = snapshot(
            len(self.own),
            total=self.total(),
            retired=(self.retired[0], self.retired[1], self.retired[2], self.retired[3]),
            own=(own[0], own[1], own[2], own[3]),
            inflight_total=sum(self.inflight.values()),
            own_inflight=self.inflight[inst],
        )
        return compute_pool(self.lim, snap, avg_t, avg_r)

    def acquire(self, inst: int, tokens: int, requests: int) -> bool:
        """Grants when every estimate fits the pool and a concurrency slot is free, as fits() does."""
        pool = self.compute(inst)
        need = (tokens, requests, tokens, requests)
        for d, room in enumerate(pool.rates):
            if room is not None and need[d] > room:
                return False
        if pool.max_concurrent is not None and pool.max_concurrent < 1:
            return False
        for d in range(4):
            if self.lim.rates[d] is not None:
                self.own[inst][d] += need[d]
        self.inflight[inst] += 1
        self.leases[inst].append((tokens, requests))
        return True

    def release(self, inst: int, pick: int, percent_used: int) -> None:
        """Releases one open lease in its window with at most its estimate used: the rest is refunded."""
        if not self.leases[inst]:
            return
        tokens, requests = self.leases[inst].pop(pick % len(self.leases[inst]))
        estimate = (tokens, requests, tokens, requests)
        for d in range(4):
            if self.lim.rates[d] is not None:
                self.own[inst][d] -= estimate[d] - estimate[d] * percent_used // 100
        self.inflight[inst] -= 1

    def join(self, inst: int) -> None:
        self.own[inst] = [0, 0, 0, 0]
        self.inflight[inst] = 0
        self.leases[inst] = []

    def die(self, inst: int) -> None:
        for d in range(4):
            self.retired[d] += self.own[inst][d]
        del self.own[inst]
        del self.inflight[inst]
        del self.leases[inst]

    def check(self) -> None:
        total = self.total()
        for d, limit in enumerate(self.lim.rates):
            if limit is not None:
                assert total[d] <= limit, (d, total[d], limit)
        if self.lim.max_concurrent is not None:
            assert sum(self.inflight.values()) <= self.lim.max_concurrent


# ----- seed examples ------------------------------------------------------------------------


def test_tpm_two_estimates_two_instances() -> None:
    pool = compute_pool(limits(tpm=100_000), snapshot(2), avg_tokens=7_500, avg_requests=1)
    assert pool.rates[0] == 50_000
    assert pool.shares[0] == 50_000
    assert pool.total_slots == 6


def test_concurrency_three_instances() -> None:
    pool = compute_pool(limits(concurrent=100), snapshot(3), avg_tokens=1_000, avg_requests=1)
    assert pool.max_concurrent == 33
    assert pool.concurrent_share == 33
    assert pool.total_slots == 33


def test_rpm_limits_before_tpm() -> None:
    pool = compute_pool(limits(tpm=100_000, rpm=6), snapshot(2), avg_tokens=7_500, avg_requests=1)
    assert pool.rates[:2] == (50_000, 3)
    assert pool.total_slots == 3


def test_unlimited_dimensions_stay_none() -> None:
    pool = compute_pool(limits(rpd=10), snapshot(1), avg_tokens=1, avg_requests=1)
    assert pool.rates == (None, None, None, 10)
    assert pool.shares == (None, None, None, 10)
    assert pool.max_concurrent is None
    assert pool.concurrent_share is None


# preset, model -> slots with N = 1, 2, 3 at a fresh window
PRESET_SLOTS = [
    ("slotCalc-tpm", "model-alpha", (13, 6, 4)),
    ("slotCalc-rpm", "model-beta", (166, 83, 55)),
    ("slotCalc-tpd", "model-tpd", (133, 66, 44)),
    ("slotCalc-rpd", "model-rpd", (3_333, 1_666, 1_111)),
    ("slotCalc-concurrent", "model-gamma", (100, 50, 33)),
    ("slotCalc-tpm-rpm", "model-delta", (10, 5, 3)),
    ("slotCalc-multi-model", "model-tpm", (10, 5, 3)),
    ("slotCalc-multi-model", "model-concurrent", (50, 25, 16)),
    ("slotCalc-memory", "test-model", (10_000, 5_000, 3_333)),
    ("slotCalculation", "model-alpha", (13, 6, 4)),
    ("slotCalculation", "model-beta", (13, 6, 4)),
    ("instanceScaling", "scale-model", (10, 5, 3)),
    ("fixedRatio", "test-model", (10, 5, 3)),
    ("flexibleRatio", "flex-model", (10, 5, 3)),
    ("default", "openai/gpt-5.2", (119, 59, 39)),
    ("default", "xai/grok-4.1-fast", (218, 109, 72)),
    ("default", "deepinfra/gpt-oss-20b", (200, 100, 66)),
]


@pytest.mark.parametrize(("name", "model", "expected"), PRESET_SLOTS)
@pytest.mark.parametrize("n", [1, 2, 3])
def test_preset_slots(name: str, model: str, expected: tuple[int, int, int], n: int) -> None:
    settings = preset(name)
    avg_t, avg_r = settings.average_estimates()
    pool = compute_pool(model_limits(settings, model), snapshot(n), avg_t, avg_r)
    assert pool.total_slots == expected[n - 1]


@pytest.mark.parametrize(
    ("name", "model", "dim", "per_instance"),
    [
        ("slotCalc-tpm", "model-alpha", 0, 50_000),
        ("slotCalc-rpm", "model-beta", 1, 250),
        ("slotCalc-tpd", "model-tpd", 2, 500_000),
        ("slotCalc-rpd", "model-rpd", 3, 5_000),
    ],
)
def test_preset_pool_per_dimension_with_two_instances(name: str, model: str, dim: int, per_instance: int) -> None:
    settings = preset(name)
    avg_t, avg_r = settings.average_estimates()
    pool = compute_pool(model_limits(settings, model), snapshot(2), avg_t, avg_r)
    assert pool.rates[dim] == per_instance
    assert [r for i, r in enumerate(pool.rates) if i != dim] == [None, None, None]


def test_slots_are_exact_when_the_pool_is_a_multiple_of_the_average() -> None:
    # The default preset's requests average 11 / 5 = 2.2; 66 / 2.2 is exactly 30 slots, but 66 / 2.2
    # in floats is 29.999999999999996.
    settings = preset("default")
    avg_t, avg_r = settings.average_estimates()
    pool = compute_pool(limits(rpm=66), snapshot(1), avg_t, avg_r)
    assert pool.total_slots == 30


# ----- usage, retired, overage --------------------------------------------------------------


def test_own_usage_comes_off_the_own_share_only() -> None:
    lim = limits(tpm=100_000)
    mine = compute_pool(lim, snapshot(2, total=(30_000, 0, 0, 0), own=(20_000, 0, 0, 0)), 10_000, 1)
    theirs = compute_pool(lim, snapshot(2, total=(30_000, 0, 0, 0), own=(10_000, 0, 0, 0)), 10_000, 1)
    assert mine.rates[0] == 30_000
    assert theirs.rates[0] == 40_000
    assert mine.shares[0] == theirs.shares[0] == 50_000
    assert mine.own[0] == 20_000
    assert (mine.total_slots, theirs.total_slots) == (3, 4)


def test_usage_of_others_does_not_shrink_an_idle_instance() -> None:
    pool = compute_pool(limits(tpm=100_000), snapshot(2, total=(50_000, 0, 0, 0)), 10_000, 1)
    assert pool.rates[0] == 50_000


def test_retired_usage_is_split_off_before_dividing() -> None:
    # One of three instances died after committing 30 000. That stays spent, and the two live ones
    # split the 70 000 left of the limit after it, whatever they have used since.
    lim = limits(tpm=100_000)
    snap_a = snapshot(2, total=(60_000, 0, 0, 0), retired=(30_000, 0, 0, 0), own=(20_000, 0, 0, 0))
    snap_b = snapshot(2, total=(60_000, 0, 0, 0), retired=(30_000, 0, 0, 0), own=(10_000, 0, 0, 0))
    a = compute_pool(lim, snap_a, 10_000, 1)
    b = compute_pool(lim, snap_b, 10_000, 1)
    assert a.shares[0] == b.shares[0] == 35_000
    assert (a.rates[0], b.rates[0]) == (15_000, 25_000)


def test_global_remainder_caps_the_share() -> None:
    # One instance used 60 000 alone, then a second joined: the newcomer's share is 50 000 but only
    # 40 000 is left in the window.
    lim = limits(tpm=100_000)
    old = compute_pool(lim, snapshot(2, total=(60_000, 0, 0, 0), own=(60_000, 0, 0, 0)), 10_000, 1)
    new = compute_pool(lim, snapshot(2, total=(60_000, 0, 0, 0)), 10_000, 1)
    assert old.rates[0] == 0
    assert new.rates[0] == 40_000
    assert new.total_slots == 4


def test_a_busy_instance_cannot_eat_an_idle_ones_share() -> None:
    # With floor(remaining / N) the first instance would start 9 jobs of 10 000 here, one after the
    # other, while the second sat idle; its share stops it at 5.
    ledger = Ledger(limits(tpm=100_000))
    ledger.join(0)
    ledger.join(1)
    started = 0
    while ledger.acquire(0, 10_000, 1):
        started += 1
    assert started == 5
    assert ledger.compute(1).rates[0] == 50_000
    assert sum(ledger.acquire(1, 10_000, 1) for _ in range(6)) == 5


def test_overage_never_makes_a_pool_negative() -> None:
    lim = limits(tpm=100_000, rpm=100)
    own_over = compute_pool(lim, snapshot(2, total=(70_000, 10, 0, 0), own=(70_000, 10, 0, 0)), 10_000, 1)
    assert own_over.rates[:2] == (0, 40)
    assert own_over.total_slots == 0
    everyone_over = compute_pool(lim, snapshot(2, total=(130_000, 10, 0, 0), own=(10_000, 5, 0, 0)), 10_000, 1)
    assert everyone_over.rates[:2] == (0, 45)
    assert everyone_over.total_slots == 0


def test_retired_overage_zeroes_the_share() -> None:
    pool = compute_pool(limits(tpm=100), snapshot(1, total=(150, 0, 0, 0), retired=(150, 0, 0, 0)), 10, 1)
    assert pool.shares[0] == 0
    assert pool.rates[0] == 0


def test_concurrency_uses_in_flight_counts() -> None:
    lim = limits(concurrent=10)
    pool = compute_pool(lim, snapshot(2, inflight_total=7, own_inflight=2), 1, 1)
    assert pool.max_concurrent == 3
    assert pool.total_slots == 3
    assert pool.own_inflight == 2
    crowded = compute_pool(lim, snapshot(2, inflight_total=9, own_inflight=1), 1, 1)
    assert crowded.max_concurrent == 1
    over = compute_pool(lim, snapshot(2, inflight_total=6, own_inflight=6), 1, 1)
    assert over.max_concurrent == 0


def test_pending_attempts_count_as_own_and_total() -> None:
    lim = limits(tpm=100_000, concurrent=10)
    pending = NO_PENDING.add(20_000, 2, 2)
    pool = compute_pool(lim, snapshot(2), 10_000, 1, pending)
    assert pool.rates[0] == 30_000
    assert pool.max_concurrent == 3
    assert pool.own[0] == 20_000
    assert pool.own_inflight == 2
    tight = compute_pool(lim, snapshot(2, total=(75_000, 0, 0, 0)), 10_000, 1, pending)
    assert tight.rates[0] == 5_000


def test_pending_adds_and_undoes() -> None:
    p = Pending().add(100, 1, 1).add(50, 2, 1)
    assert p == Pending(150, 3, 2)
    assert p.per_dim() == (150, 3, 150, 3)
    assert p.add(-150, -3, -2) == NO_PENDING


def test_day_and_minute_dimensions_are_independent() -> None:
    lim = limits(tpm=1_000, tpd=10_000)
    snap = snapshot(1, total=(900, 0, 900, 0), own=(900, 0, 900, 0))
    pool = compute_pool(lim, snap, 100, 1)
    assert pool.rates[0] == 100
    assert pool.rates[2] == 9_100
    assert pool.total_slots == 1


def test_no_live_instance_is_counted_as_one() -> None:
    pool = compute_pool(limits(tpm=100), snapshot(0), 10, 1)
    assert pool.rates[0] == 100


def test_zero_estimates_leave_slots_unbounded() -> None:
    pool = compute_pool(limits(tpm=100), snapshot(1), avg_tokens=0, avg_requests=1)
    assert pool.total_slots == UNBOUNDED_SLOTS
    conc = compute_pool(limits(tpm=100, concurrent=4), snapshot(1), avg_tokens=0, avg_requests=1)
    assert conc.total_slots == 4


# ----- properties ---------------------------------------------------------------------------

DIMS = ("tpm", "rpm", "tpd", "rpd")


@st.composite
def model_limits_strategy(draw: st.DrawFn, max_rate: int = 2_000_000, max_concurrent: int = 500) -> ModelLimits:
    rates = [draw(st.one_of(st.none(), st.integers(1, max_rate))) for _ in DIMS]
    concurrent = draw(st.one_of(st.none(), st.integers(1, max_concurrent)))
    if all(r is None for r in rates) and concurrent is None:
        concurrent = draw(st.integers(1, max_concurrent))
    return ModelLimits(rates=(rates[0], rates[1], rates[2], rates[3]), max_concurrent=concurrent)


Op = tuple[str, int, int, int]


@st.composite
def op_sequences(draw: st.DrawFn) -> list[Op]:
    # Each sequence uses a random subset of the operations (swarm testing): runs without releases
    # fill the windows up, so that joins and deaths happen on busy ledgers.
    kinds = draw(st.lists(st.sampled_from(["acquire", "release", "join", "die"]), min_size=1, unique=True))
    op = st.tuples(st.sampled_from(kinds), st.integers(0, 20), st.integers(0, 400), st.integers(0, 100))
    return draw(st.lists(op, max_size=120))


# Small limits against estimates of their order make the windows fill up.
@settings(deadline=None, max_examples=300)
@given(model_limits_strategy(max_rate=500, max_concurrent=20), st.integers(1, 5), op_sequences())
def test_no_sequence_of_acquires_releases_joins_and_deaths_over_grants(
    lim: ModelLimits, start: int, ops: list[Op]
) -> None:
    ledger = Ledger(lim)
    next_id = 0
    for _ in range(start):
        ledger.join(next_id)
        next_id += 1
    for kind, pick, amount, small in ops:
        live = sorted(ledger.own)
        if kind == "join" or not live:
            ledger.join(next_id)
            next_id += 1
        elif kind == "die" and len(live) > 1:
            ledger.die(live[pick % len(live)])
        elif kind == "release":
            ledger.release(live[pick % len(live)], pick=amount, percent_used=small)
        else:
            ledger.acquire(live[pick % len(live)], tokens=amount, requests=small)
        ledger.check()
        for inst in ledger.own:
            pool = ledger.compute(inst)
            left = [None if lim_d is None else lim_d - t for lim_d, t in zip(lim.rates, ledger.total(), strict=True)]
            for room, rest in zip(pool.rates, left, strict=True):
                if room is not None:
                    assert rest is not None
                    assert 0 <= room <= max(0, rest)
            if pool.max_concurrent is not None:
                assert pool.max_concurrent >= 0


@st.composite
def fair_states(draw: st.DrawFn) -> tuple[int, int, int, list[int]]:
    """limit, retired, N, own committed per live instance, each within the fair share."""
    limit = draw(st.integers(1, 10_000_000))
    retired = draw(st.integers(0, limit))
    n = draw(st.integers(1, 8))
    share = (limit - retired) // n
    own = [draw(st.integers(0, share)) for _ in range(n)]
    return limit, retired, n, own


@given(fair_states())
def test_pools_of_instances_within_their_share_sum_to_at_most_what_is_left(
    state: tuple[int, int, int, list[int]],
) -> None:
    limit, retired, n, own = state
    total = retired + sum(own)
    pools = []
    for mine in own:
        snap = snapshot(n, total=(total, 0, 0, 0), retired=(retired, 0, 0, 0), own=(mine, 0, 0, 0))
        pool = compute_pool(limits(tpm=limit), snap, 1, 1).rates[0]
        assert pool is not None
        assert pool >= 0
        pools.append(pool)
    assert sum(pools) <= limit - total


@given(
    st.integers(1, 6),
    st.integers(1, 50_000),
    st.integers(0, 40),
    st.data(),
    st.randoms(use_true_random=False),
)
def test_as_many_jobs_as_slots_start_and_the_next_one_waits(
    n: int, estimate: int, per_instance: int, data: st.DataObject, rnd: random.Random
) -> None:
    share = per_instance * estimate + data.draw(st.integers(0, estimate - 1), label="share remainder")
    limit = share * n + data.draw(st.integers(0, n - 1), label="limit remainder")
    ledger = Ledger(limits(tpm=limit))
    for inst in range(n):
        ledger.join(inst)
    slots = {inst: ledger.compute(inst, avg_t=estimate).total_slots for inst in range(n)}
    assert set(slots.values()) == {per_instance}
    started = dict.fromkeys(range(n), 0)
    wanting = list(range(n))
    while wanting:
        inst = rnd.choice(wanting)
        if ledger.acquire(inst, estimate, 0):
            started[inst] += 1
        else:
            wanting.remove(inst)
        ledger.check()
    assert started == slots


@given(model_limits_strategy(), st.integers(1, 6), st.integers(1, 20_000), st.integers(1, 20))
def test_fresh_window_is_the_seed_formula(lim: ModelLimits, n: int, avg_t: int, avg_r: int) -> None:
    pool = compute_pool(lim, snapshot(n), avg_t, avg_r)
    for d, limit in enumerate(lim.rates):
        assert pool.rates[d] == (None if limit is None else limit // n)
    if lim.max_concurrent is not None:
        assert pool.max_concurrent == lim.max_concurrent // n
    expected = [
        (limit // n) // (avg_t if d in (0, 2) else avg_r) for d, limit in enumerate(lim.rates) if limit is not None
    ]
    if lim.max_concurrent is not None:
        expected.append(lim.max_concurrent // n)
    assert pool.total_slots == min(expected)


@given(
    st.lists(st.integers(0, 50_000), min_size=1, max_size=7),
    st.lists(st.integers(0, 20), min_size=1, max_size=7),
    st.integers(1, 5_000_000),
    st.integers(1, 6),
)
def test_slots_are_the_exact_floor_for_any_average(tokens: list[int], requests: list[int], limit: int, n: int) -> None:
    avg_t = Fraction(sum(tokens), len(tokens))
    avg_r = Fraction(sum(requests), len(requests))
    pool = compute_pool(limits(tpm=limit, rpd=limit), snapshot(n), avg_t, avg_r)
    share = limit // n
    expected = [share * len(tokens) // sum(tokens)] if sum(tokens) else []
    if sum(requests):
        expected.append(share * len(requests) // sum(requests))
    assert pool.total_slots == (min(expected) if expected else UNBOUNDED_SLOTS)
