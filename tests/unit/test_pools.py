"""What one instance may take on a model (SPEC §5): the reported seed pool, the two admission
checks (share and global cap) and lending, against a small model of the ledger."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlservice.capacity.pools import NO_PENDING, UNBOUNDED_SLOTS, Pending, Pool, compute_pool
from rlservice.types import DIMS, RATE_DIMS, Estimate, ModelLimits, Snapshot

from .helpers import ZERO, Quad, avg, dims, limits, model_limits, preset, snapshot, tokens


def per_dim(t: int, r: int, i: int = 0, o: int = 0) -> Quad:
    return Estimate(t, r, i, o).per_dim()


def add(a: Quad, b: Quad) -> Quad:
    return tuple(x + y for x, y in zip(a, b, strict=True))


@dataclass
class Ledger:
    """The ledger of one model in one window, as SPEC §5 states it: settled usage, open leases per
    live instance, in-flight and waiters. Admission is the two checks written out from the
    specification, independently of compute_pool; share_only leaves the global check out, to show
    what the seed formula alone would admit."""

    lim: ModelLimits
    lend: bool = False
    share_only: bool = False
    settled: Quad = ZERO
    overage: Quad = ZERO
    leases: dict[int, list[Quad]] = field(default_factory=dict)
    waiting: set[int] = field(default_factory=set)
    # What each instance's closed leases used.
    used: dict[int, Quad] = field(default_factory=dict)

    def own_open(self, inst: int) -> Quad:
        total = ZERO
        for est in self.leases[inst]:
            total = add(total, est)
        return total

    def open(self) -> Quad:
        total = ZERO
        for inst in self.leases:
            total = add(total, self.own_open(inst))
        return total

    def inflight(self) -> int:
        return sum(len(held) for held in self.leases.values())

    def snap(self, inst: int) -> Snapshot:
        return snapshot(
            len(self.leases),
            settled=self.settled,
            open=self.open(),
            own_open=self.own_open(inst),
            own_settled=self.used.get(inst, ZERO),
            inflight_total=self.inflight(),
            own_inflight=len(self.leases[inst]),
            waiters=len(self.waiting),
            own_waiting=int(inst in self.waiting),
        )

    def pool(self, inst: int, avg_tokens: int = 1, avg_requests: int = 1) -> Pool:
        return compute_pool(self.lim, self.snap(inst), avg(avg_tokens, avg_requests), lend=self.lend)

    def admits(self, inst: int, e: Quad) -> bool:
        n = max(len(self.leases), 1)
        # Borrowing is for an instance with its own waiters on record while nobody else waits.
        lending = self.lend and inst in self.waiting and not (self.waiting - {inst})
        # While others wait, what an instance holds of the window stays within floor(limit / N).
        contended = bool(self.waiting - {inst})
        committed = add(self.settled, self.open())
        own = self.own_open(inst)
        used = self.used.get(inst, ZERO)
        for d, limit in enumerate(self.lim.rates):
            if limit is None:
                continue
            if not self.share_only and e[d] > limit - committed[d]:
                return False
            if not lending and own[d] + e[d] > max(0, limit - self.settled[d]) // n:
                return False
            if not lending and contended and used[d] + own[d] + e[d] > limit // n:
                return False
        conc = self.lim.max_concurrent
        if conc is not None:
            if not self.share_only and self.inflight() >= conc:
                return False
            if not lending and len(self.leases[inst]) >= conc // n:
                return False
        return True

    def acquire(self, inst: int, e: Quad) -> bool:
        if not self.admits(inst, e):
            return False
        self.leases[inst].append(e)
        return True

    def release(self, inst: int, pick: int, actual: Quad | None = None) -> None:
        """Closes one open lease at its actual usage (None: at its estimate)."""
        held = self.leases[inst]
        if not held:
            return
        est = held.pop(pick % len(held))
        used = est if actual is None else actual
        self.settled = add(self.settled, used)
        self.used[inst] = add(self.used.get(inst, ZERO), used)
        self.overage = add(self.overage, tuple(max(0, u - e) for u, e in zip(used, est, strict=True)))

    def join(self, inst: int) -> None:
        self.leases[inst] = []

    def die(self, inst: int) -> None:
        """Its open leases close at their estimate, its in-flight is freed, N drops."""
        for est in self.leases.pop(inst):
            self.settled = add(self.settled, est)
        self.waiting.discard(inst)

    def committed(self) -> Quad:
        return add(self.settled, self.open())

    def check(self) -> None:
        committed = self.committed()
        for d, limit in enumerate(self.lim.rates):
            if limit is not None:
                assert committed[d] <= limit + self.overage[d], (d, committed[d], limit)
        if self.lim.max_concurrent is not None:
            assert self.inflight() <= self.lim.max_concurrent


def room_admits(pool: Pool, e: Quad) -> bool:
    fits = all(room is None or e[d] <= room for d, room in enumerate(pool.room))
    return fits and (pool.concurrent_room is None or pool.concurrent_room >= 1)


def two_instances(lim: ModelLimits, lend: bool = False) -> Ledger:
    ledger = Ledger(lim, lend=lend)
    ledger.join(0)
    ledger.join(1)
    return ledger


JOB = per_dim(10_000, 1)
TPM_100K = limits(tpm=100_000)
A, B = 0, 1


# ----- SPEC §5 seed examples: TPM 100 000, 10 000-token jobs, N = 2 ---------------------------


def seed(settled: int, limit: int = 100_000, n: int = 2) -> Pool:
    return compute_pool(limits(tpm=limit), snapshot(n, settled=tokens(settled)), avg(10_000, 1))


def test_fresh_window_gives_each_instance_half() -> None:
    pool = seed(0)
    assert (pool.rates[0], pool.total_slots) == (50_000, 5)
    assert pool.room[0] == 50_000


@pytest.mark.parametrize(
    ("settled", "pool_tpm", "slots"),
    [
        (10_000, 45_000, 4),
        (20_000, 40_000, 4),
        (25_000, 37_500, 3),
        (60_000, 20_000, 2),
        (75_000, 12_500, 1),
        (100_000, 0, 0),
    ],
)
def test_settled_usage_shrinks_every_pool_by_half(settled: int, pool_tpm: int, slots: int) -> None:
    # 10 000 used; 20 000 used; 5 jobs at 5 000; 60 000 used; 5 jobs at 15 000; both used 50 000.
    pool = seed(settled)
    assert (pool.rates[0], pool.total_slots) == (pool_tpm, slots)


def test_jobs_released_at_their_actual_usage() -> None:
    for actual, pool_tpm, slots in ((15_000, 12_500, 1), (5_000, 37_500, 3)):
        ledger = two_instances(TPM_100K)
        for _ in range(5):
            assert ledger.acquire(A, JOB)
        for _ in range(5):
            ledger.release(A, 0, per_dim(actual, 1))
        for inst in (A, B):
            pool = ledger.pool(inst, 10_000)
            assert (pool.rates[0], pool.total_slots) == (pool_tpm, slots)


def test_three_instances_share_what_is_left() -> None:
    assert seed(45_000, limit=90_000, n=3).rates[0] == 15_000


def test_overages_one_after_another_until_an_estimate_no_longer_fits() -> None:
    # Jobs of 10 000 that use 12 000, one after another on A.
    ledger = two_instances(TPM_100K)
    seen = []
    while ledger.acquire(A, JOB):
        ledger.release(A, 0, per_dim(12_000, 1))
        pool = ledger.pool(A, 10_000)
        assert ledger.pool(B, 10_000).rates == pool.rates
        seen.append(pool.rates[0])
    assert seen == [44_000, 38_000, 32_000, 26_000, 20_000, 14_000, 8_000]
    assert ledger.pool(A, 10_000).room[0] == 8_000


def test_two_estimates_average_to_six_slots() -> None:
    pool = compute_pool(TPM_100K, snapshot(2), avg(7_500, 1))
    assert (pool.rates[0], pool.total_slots) == (50_000, 6)


def test_concurrency_three_instances() -> None:
    pool = compute_pool(limits(concurrent=100), snapshot(3), avg(1_000, 1))
    assert (pool.max_concurrent, pool.total_slots, pool.concurrent_room) == (33, 33, 33)


def test_rpm_limits_before_tpm() -> None:
    pool = compute_pool(limits(tpm=100_000, rpm=6), snapshot(2), avg(7_500, 1))
    assert pool.rates[:2] == (50_000, 3)
    assert pool.total_slots == 3


def test_an_open_lease_moves_no_pool() -> None:
    ledger = two_instances(TPM_100K)
    assert ledger.acquire(A, JOB)
    a, b = ledger.pool(A, 10_000), ledger.pool(B, 10_000)
    assert a.rates[0] == b.rates[0] == 50_000
    assert a.total_slots == b.total_slots == 5
    # What it moves is what A may still take.
    assert (a.room[0], b.room[0]) == (40_000, 50_000)
    # Its release moves every pool by its actual usage / N.
    ledger.release(A, 0, per_dim(8_000, 1))
    assert ledger.pool(A, 10_000).rates[0] == ledger.pool(B, 10_000).rates[0] == 46_000


def test_unlimited_dimensions_stay_none() -> None:
    pool = compute_pool(limits(rpd=10), snapshot(1), avg(1, 1))
    assert pool.rates == pool.capacity == pool.room == (None, None, None, 10, None, None)
    assert pool.max_concurrent is pool.concurrent_capacity is pool.concurrent_room is None


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
    averages = settings.average_estimates()
    pool = compute_pool(model_limits(settings, model), snapshot(n), averages)
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
    averages = settings.average_estimates()
    pool = compute_pool(model_limits(settings, model), snapshot(2), averages)
    assert pool.rates[dim] == per_instance
    assert [r for i, r in enumerate(pool.rates) if i != dim] == [None] * (len(RATE_DIMS) - 1)


def test_slots_are_exact_when_the_pool_is_a_multiple_of_the_average() -> None:
    # The default preset's requests average 11 / 5 = 2.2; 66 / 2.2 is exactly 30 slots, but 66 / 2.2
    # in floats is 29.999999999999996.
    settings = preset("default")
    averages = settings.average_estimates()
    pool = compute_pool(limits(rpm=66), snapshot(1), averages)
    assert pool.total_slots == 30


# ----- the two checks -----------------------------------------------------------------------


def test_the_share_check_stops_a_busy_instance_at_its_slots() -> None:
    ledger = two_instances(TPM_100K)
    started = 0
    while ledger.acquire(A, JOB):
        started += 1
        assert ledger.pool(A, 10_000).room[0] == 50_000 - 10_000 * started
    assert started == 5
    assert ledger.pool(B, 10_000).room[0] == 50_000
    assert sum(ledger.acquire(B, JOB) for _ in range(6)) == 5


def test_the_seed_formula_alone_over_admits() -> None:
    # B holds 5 open leases; A runs jobs one after another, each using its 10 000. The share check
    # alone sees A's pool shrink only by what was settled and admits 9 of them: 140 000 committed.
    alone = two_instances(TPM_100K)
    alone.share_only = True
    for _ in range(5):
        assert alone.acquire(B, JOB)
    ran = 0
    while alone.acquire(A, JOB):
        alone.release(A, 0)
        ran += 1
    assert ran == 9
    assert alone.committed()[0] == 140_000
    # With the global check A stops after 5, at the limit.
    both = two_instances(TPM_100K)
    for _ in range(5):
        assert both.acquire(B, JOB)
    ran = 0
    while both.acquire(A, JOB):
        both.release(A, 0)
        ran += 1
    assert ran == 5
    assert both.committed()[0] == 100_000


def test_a_pool_can_read_more_than_the_global_check_lets_through() -> None:
    # A and B each hold 5 open leases of 10 000; A's close at 10 000.
    ledger = two_instances(TPM_100K)
    for inst in (A, B):
        for _ in range(5):
            assert ledger.acquire(inst, JOB)
    for _ in range(5):
        ledger.release(A, 0)
    a = ledger.pool(A, 10_000)
    assert (a.rates[0], a.total_slots) == (25_000, 2)
    # Two more jobs would be 120 000 committed: the global check leaves A nothing.
    assert a.room[0] == 0
    assert not ledger.acquire(A, JOB)
    # B's close (at 6 000 each) settle: both pools are 10 000, and now A may take one.
    for _ in range(5):
        ledger.release(B, 0, per_dim(6_000, 1))
    a = ledger.pool(A, 10_000)
    assert (a.rates[0], a.room[0]) == (10_000, 10_000)
    assert ledger.acquire(A, JOB)
    ledger.check()


def test_overage_never_makes_a_pool_or_a_room_negative() -> None:
    lim = limits(tpm=100_000, rpm=100)
    own_over = compute_pool(lim, snapshot(2, open=dims(70_000, 10), own_open=dims(70_000, 10)), avg(10_000, 1))
    assert own_over.rates[:2] == (50_000, 50)
    assert own_over.room[:2] == (0, 40)
    everyone_over = compute_pool(lim, snapshot(2, settled=dims(130_000, 10), own_open=ZERO), avg(10_000, 1))
    assert everyone_over.rates[:2] == (0, 45)
    assert everyone_over.room[:2] == (0, 45)
    assert everyone_over.total_slots == 0


def test_concurrency_share_and_global_cap() -> None:
    lim = limits(concurrent=10)
    pool = compute_pool(lim, snapshot(2, inflight_total=7, own_inflight=2), avg(1, 1))
    # The reported share does not move with in-flight; what may still start does.
    assert (pool.max_concurrent, pool.total_slots) == (5, 5)
    assert pool.concurrent_room == 3
    crowded = compute_pool(lim, snapshot(2, inflight_total=9, own_inflight=1), avg(1, 1))
    assert crowded.concurrent_room == 1
    over = compute_pool(lim, snapshot(2, inflight_total=6, own_inflight=6), avg(1, 1))
    assert over.concurrent_room == 0


def test_pending_attempts_count_as_own_and_total() -> None:
    lim = limits(tpm=100_000, concurrent=10)
    pending = NO_PENDING.add(Estimate(10_000, 1), 2)
    pool = compute_pool(lim, snapshot(2), avg(10_000, 1), pending=pending)
    assert (pool.rates[0], pool.max_concurrent) == (50_000, 5)
    assert (pool.room[0], pool.concurrent_room) == (30_000, 3)
    tight = compute_pool(lim, snapshot(2, open=tokens(75_000)), avg(10_000, 1), pending=pending)
    assert tight.room[0] == 5_000
    full = compute_pool(lim, snapshot(2, inflight_total=8), avg(10_000, 1), pending=pending)
    assert full.concurrent_room == 0


def test_pending_adds_and_undoes() -> None:
    p = Pending().add(Estimate(100, 1, 60, 40), 1).add(Estimate(50, 2), 1)
    assert p == Pending((150, 3, 150, 3, 60, 40), 2)
    assert p.add(Estimate(100, 1, 60, 40), -1).add(Estimate(50, 2), -1) == NO_PENDING


def test_day_and_minute_dimensions_are_independent() -> None:
    lim = limits(tpm=1_000, tpd=10_000)
    snap = snapshot(1, settled=dims(500, 0, 8_000), open=dims(400, 0, 400), own_open=dims(400, 0, 400))
    pool = compute_pool(lim, snap, avg(100, 1))
    assert (pool.rates[0], pool.rates[2]) == (500, 2_000)
    assert (pool.room[0], pool.room[2]) == (100, 1_600)
    assert pool.total_slots == 5


def test_no_live_instance_is_counted_as_one() -> None:
    pool = compute_pool(limits(tpm=100), snapshot(0), avg(10, 1))
    assert pool.rates[0] == pool.room[0] == 100


def test_zero_estimates_leave_slots_unbounded() -> None:
    pool = compute_pool(limits(tpm=100), snapshot(1), avg(0, 1))
    assert pool.total_slots == UNBOUNDED_SLOTS
    conc = compute_pool(limits(tpm=100, concurrent=4), snapshot(1), avg(0, 1))
    assert conc.total_slots == 4


# ----- lending ------------------------------------------------------------------------------


def test_a_lender_may_take_the_whole_window_while_nobody_else_waits() -> None:
    ledger = two_instances(TPM_100K, lend=True)
    ledger.waiting.add(A)
    started = 0
    while ledger.acquire(A, JOB):
        started += 1
        pool = ledger.pool(A, 10_000)
        assert pool.lending
        # The reported pool stays the seed's; what A may take is what is left globally.
        assert (pool.rates[0], pool.room[0]) == (50_000, 100_000 - 10_000 * started)
        assert (pool.capacity[0], pool.capacity_slots) == (100_000, 10)
    assert started == 10
    ledger.check()


def test_a_lender_borrows_only_with_its_own_waiters_on_record() -> None:
    ledger = two_instances(TPM_100K, lend=True)
    # A job beyond the share first queues: until the instance's waiters are on record it keeps to its share.
    assert not ledger.pool(A, 10_000).lending
    assert ledger.pool(A, 10_000).room[0] == 50_000
    ledger.waiting.add(A)
    assert ledger.pool(A, 10_000).lending
    assert ledger.pool(A, 10_000).room[0] == 100_000


def test_lending_stops_as_soon_as_another_instance_waits() -> None:
    ledger = two_instances(TPM_100K, lend=True)
    ledger.waiting.add(A)
    for _ in range(3):
        assert ledger.acquire(A, JOB)
    assert ledger.pool(A, 10_000).room[0] == 70_000
    ledger.waiting.add(B)
    a = ledger.pool(A, 10_000)
    assert not a.lending
    assert (a.room[0], a.capacity[0], a.capacity_slots) == (20_000, 50_000, 5)
    # While both wait nobody borrows; once A's waiters are gone, B may.
    assert not ledger.pool(B, 10_000).lending
    ledger.waiting.discard(A)
    assert ledger.pool(B, 10_000).lending


def test_a_lender_over_its_share_takes_nothing_until_back_within_it() -> None:
    ledger = two_instances(TPM_100K, lend=True)
    ledger.waiting.add(A)
    for _ in range(8):
        assert ledger.acquire(A, JOB)
    ledger.waiting.add(B)
    assert ledger.pool(A, 10_000).room[0] == 0
    assert not ledger.acquire(A, JOB)
    # B gets what is left globally, not its full share, until A's leases close.
    assert ledger.pool(B, 10_000).room[0] == 20_000
    for closed in range(1, 4):
        ledger.release(A, 0, per_dim(0, 1))
        assert ledger.pool(A, 10_000).room[0] == 0, closed
    # 4 open: back within its share of 50 000.
    ledger.release(A, 0, per_dim(0, 1))
    assert ledger.pool(A, 10_000).room[0] == 10_000
    assert ledger.acquire(A, JOB)


def test_lending_concurrency() -> None:
    lim = limits(concurrent=10)
    pool = compute_pool(
        lim, snapshot(2, inflight_total=7, own_inflight=7, waiters=1, own_waiting=1), avg(1, 1), lend=True
    )
    assert (pool.max_concurrent, pool.concurrent_capacity, pool.concurrent_room) == (5, 10, 3)
    waited = compute_pool(
        lim, snapshot(2, inflight_total=7, own_inflight=7, waiters=2, own_waiting=1), avg(1, 1), lend=True
    )
    assert (waited.concurrent_capacity, waited.concurrent_room) == (5, 0)


def test_lending_off_keeps_the_share_whoever_waits() -> None:
    pool = compute_pool(TPM_100K, snapshot(2), avg(10_000, 1), lend=False)
    assert not pool.lending
    assert (pool.room[0], pool.capacity_slots) == (50_000, 5)


# ----- properties ---------------------------------------------------------------------------


@st.composite
def model_limits_strategy(draw: st.DrawFn, max_rate: int = 2_000_000, max_concurrent: int = 500) -> ModelLimits:
    rates = tuple(draw(st.one_of(st.none(), st.integers(1, max_rate))) for _ in RATE_DIMS)
    concurrent = draw(st.one_of(st.none(), st.integers(1, max_concurrent)))
    if all(r is None for r in rates) and concurrent is None:
        concurrent = draw(st.integers(1, max_concurrent))
    return ModelLimits(rates=rates, max_concurrent=concurrent)


Op = tuple[str, int, int, int]


@st.composite
def op_sequences(draw: st.DrawFn) -> list[Op]:
    # Each sequence uses a random subset of the operations (swarm testing): runs without releases
    # fill the window up, so that joins, deaths and waiters meet busy ledgers.
    kinds = draw(st.lists(st.sampled_from(["acquire", "release", "join", "die", "wait"]), min_size=1, unique=True))
    op = st.tuples(st.sampled_from(kinds), st.integers(0, 20), st.integers(1, 400), st.integers(1, 5))
    return draw(st.lists(op, max_size=120))


def check_room_agrees(ledger: Ledger, e: Quad) -> None:
    for inst in ledger.leases:
        pool = ledger.pool(inst)
        assert room_admits(pool, e) == ledger.admits(inst, e), (inst, e, pool)
        assert pool.lending == (ledger.lend and ledger.waiting == {inst})


# Small limits against estimates of their order make the window fill up. Estimates start at 1 in
# every dimension but input and output tokens, which split the tokens.
@settings(max_examples=300)
@given(
    model_limits_strategy(max_rate=500, max_concurrent=20),
    st.integers(1, 5),
    st.booleans(),
    st.integers(0, 150),
    op_sequences(),
)
def test_no_sequence_of_acquires_releases_joins_deaths_and_waiters_over_commits(
    lim: ModelLimits, start: int, lend: bool, max_percent: int, ops: list[Op]
) -> None:
    ledger = Ledger(lim, lend=lend)
    next_id = 0
    for _ in range(start):
        ledger.join(next_id)
        next_id += 1
    for kind, pick, amount, small in ops:
        live = sorted(ledger.leases)
        inst = live[pick % len(live)] if live else 0
        # Jobs all input, all output or between: 0, 1/3, 2/3 or all of the tokens are input.
        part = amount * (pick % 4) // 3
        e = per_dim(amount, small, part, amount - part)
        check_room_agrees(ledger, e)
        if kind == "join" or not live:
            ledger.join(next_id)
            next_id += 1
        elif kind == "die" and len(live) > 1:
            ledger.die(inst)
        elif kind == "wait":
            ledger.waiting ^= {inst}
        elif kind == "release":
            # Up to max_percent of the estimate used: above 100 are overages, which the guarantee
            # leaves out (check() allows them).
            held = ledger.leases[inst]
            if held:
                est = held[amount % len(held)]
                ledger.release(inst, amount, tuple(x * (amount % (max_percent + 1)) // 100 for x in est))
        else:
            ledger.acquire(inst, e)
        ledger.check()


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
    slots = {inst: ledger.pool(inst, avg_tokens=estimate).total_slots for inst in range(n)}
    assert set(slots.values()) == {per_instance}
    started = dict.fromkeys(range(n), 0)
    wanting = list(range(n))
    while wanting:
        inst = rnd.choice(wanting)
        if ledger.acquire(inst, tokens(estimate)):
            started[inst] += 1
        else:
            wanting.remove(inst)
        ledger.check()
    assert started == slots


@given(
    model_limits_strategy(),
    st.integers(1, 6),
    st.integers(1, 20_000),
    st.integers(1, 20),
    st.integers(1, 20_000),
    st.integers(1, 20_000),
)
def test_fresh_window_is_the_seed_formula(
    lim: ModelLimits, n: int, avg_t: int, avg_r: int, avg_i: int, avg_o: int
) -> None:
    pool = compute_pool(lim, snapshot(n), avg(avg_t, avg_r, avg_i, avg_o))
    for d, limit in enumerate(lim.rates):
        assert pool.rates[d] == (None if limit is None else limit // n)
    if lim.max_concurrent is not None:
        assert pool.max_concurrent == lim.max_concurrent // n
    per_kind = (avg_t, avg_r, avg_i, avg_o)
    expected = [(limit // n) // per_kind[DIMS[d].kind] for d, limit in enumerate(lim.rates) if limit is not None]
    if lim.max_concurrent is not None:
        expected.append(lim.max_concurrent // n)
    assert pool.total_slots == min(expected)


@given(
    st.integers(1, 10_000_000),
    st.integers(0, 10_000_000),
    st.integers(0, 10_000_000),
    st.integers(0, 10_000_000),
    st.integers(1, 8),
)
def test_the_reported_pool_moves_with_settled_usage_and_n_only(
    limit: int, settled: int, open_: int, own: int, n: int
) -> None:
    snap = snapshot(n, settled=tokens(settled), open=tokens(open_ + own), own_open=tokens(own))
    pool = compute_pool(limits(tpm=limit), snap, avg(1, 1))
    assert pool.rates[0] == max(0, limit - settled) // n
    assert pool.room[0] == max(0, min(pool.rates[0] - own, limit - settled - open_ - own))


@given(
    st.lists(st.integers(0, 50_000), min_size=1, max_size=7),
    st.lists(st.integers(0, 20), min_size=1, max_size=7),
    st.integers(1, 5_000_000),
    st.integers(1, 6),
)
def test_slots_are_the_exact_floor_for_any_average(tokens: list[int], requests: list[int], limit: int, n: int) -> None:
    avg_t = Fraction(sum(tokens), len(tokens))
    avg_r = Fraction(sum(requests), len(requests))
    pool = compute_pool(limits(tpm=limit, rpd=limit), snapshot(n), avg(avg_t, avg_r))
    share = limit // n
    expected = [share * len(tokens) // sum(tokens)] if sum(tokens) else []
    if sum(requests):
        expected.append(share * len(requests) // sum(requests))
    assert pool.total_slots == (min(expected) if expected else UNBOUNDED_SLOTS)
