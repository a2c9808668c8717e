"""Job-type shares of what an instance may take: slots, per-dimension budgets, the instance's room
and memory (SPEC §6)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rlservice.capacity.pools import compute_pool
from rlservice.capacity.shares import TypeUse, allocated_slots, load_of, may_take, memory_slots, scaled
from rlservice.types import NO_AMOUNTS, Estimate

from .helpers import avg, limits, model_limits, pool_of, preset, snapshot, tokens

IDLE = TypeUse(NO_AMOUNTS, 0, 0)


def use(
    jobs: int,
    tokens: int = 0,
    requests: int = 0,
    all_models: int | None = None,
    input_tokens: int = 0,
    output_tokens: int = 0,
) -> TypeUse:
    held = Estimate(tokens, requests, input_tokens, output_tokens).per_dim()
    return TypeUse(held, jobs, jobs if all_models is None else all_models)


# ----- slots --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "ratios", "slots"),
    [
        (10, (0.6, 0.4), (6, 4)),
        (100, (0.5, 0.3, 0.2), (50, 30, 20)),
        (10, (0.33, 0.33, 0.34), (3, 3, 3)),
    ],
)
def test_spec_examples(base: int, ratios: tuple[float, ...], slots: tuple[int, ...]) -> None:
    pool = pool_of(capacity_slots=base)
    assert tuple(allocated_slots(pool, r, 1, None) for r in ratios) == slots


def test_slots_divide_the_pool_not_what_is_left_of_it() -> None:
    # An open lease moves no pool: the instance's 5 slots stay 5 while it holds 3 jobs, so a type's
    # allocation does not shrink or grow as it fills them.
    lim = limits(tpm=100_000)
    fresh = compute_pool(lim, snapshot(2), avg(10_000, 1))
    busy = compute_pool(lim, snapshot(2, open=tokens(30_000), own_open=tokens(30_000), own_inflight=3), avg(10_000, 1))
    assert fresh.capacity_slots == busy.capacity_slots == 5
    assert allocated_slots(fresh, 0.6, 1, None) == allocated_slots(busy, 0.6, 1, None) == 3


def test_lent_capacity_is_divided_by_the_same_ratios() -> None:
    # Lending with the other instance idle: the instance may hold the whole 100 000, 10 slots.
    pool = compute_pool(limits(tpm=100_000), snapshot(2, waiters=1, own_waiting=1), avg(10_000, 1), lend=True)
    assert (pool.total_slots, pool.capacity_slots) == (5, 10)
    assert [allocated_slots(pool, r, 1, None) for r in (0.6, 0.4)] == [6, 4]


@pytest.mark.parametrize(("base", "ratio", "expected"), [(100, 0.29, 29), (100, 0.57, 57), (10, 0.7, 7)])
def test_products_that_are_whole_on_paper_are_not_floored_below(base: int, ratio: float, expected: int) -> None:
    assert scaled(base, ratio) == expected


def test_scaled_never_negative() -> None:
    assert scaled(-5, 0.5) == 0


def test_min_job_type_capacity_is_a_floor() -> None:
    pool = pool_of(capacity_slots=10)
    assert allocated_slots(pool, 0.05, 1, None) == 1
    assert allocated_slots(pool, 0.05, 3, None) == 3
    assert allocated_slots(pool, 0.05, 0, None) == 0
    assert allocated_slots(pool_of(capacity_slots=0), 0.5, 1, None) == 1


def test_memory_caps_slots_even_below_min_capacity() -> None:
    pool = pool_of(capacity_slots=100)
    assert allocated_slots(pool, 0.5, 1, 7) == 7
    assert allocated_slots(pool, 0.5, 1, 80) == 50
    assert allocated_slots(pool, 0.5, 3, 1) == 1
    assert allocated_slots(pool, 0.5, 1, 0) == 0


# ----- may_take -----------------------------------------------------------------------------


def test_takes_while_its_window_jobs_are_below_allocated() -> None:
    pool = pool_of(capacity_slots=10)
    assert may_take(pool, 0.4, use(3), Estimate(1, 1), 1, None)
    assert not may_take(pool, 0.4, use(4), Estimate(1, 1), 1, None)


def test_per_dimension_budget_is_the_ratio_of_what_the_instance_may_hold() -> None:
    # The instance may hold 50 000: the type's budget at 0.6 is 30 000 of open estimates.
    pool = pool_of(capacity_slots=100, capacity=(50_000, None, None, None))
    assert may_take(pool, 0.6, use(2, tokens=20_000), Estimate(10_000, 1), 1, None)
    assert not may_take(pool, 0.6, use(2, tokens=20_001), Estimate(10_000, 1), 1, None)


def test_request_dimensions_use_the_request_estimate() -> None:
    pool = pool_of(capacity_slots=100, capacity=(None, 100, None, 40))
    assert may_take(pool, 0.5, use(1, requests=15), Estimate(1, 5), 1, None)
    assert not may_take(pool, 0.5, use(1, requests=16), Estimate(1, 5), 1, None)


def test_day_dimensions_are_checked_too() -> None:
    pool = pool_of(capacity_slots=100, capacity=(None, None, 1_000, None))
    assert may_take(pool, 0.5, use(1, tokens=400), Estimate(100, 1), 1, None)
    assert not may_take(pool, 0.5, use(1, tokens=401), Estimate(100, 1), 1, None)


def test_input_and_output_dimensions_use_the_part_estimates() -> None:
    # The instance may hold 50 000 input and 10 000 output tokens: at 0.5 the type's budgets are
    # 25 000 and 5 000 of open estimates.
    pool = pool_of(capacity_slots=100, capacity=(None, None, None, None, 50_000, 10_000))
    reading = Estimate(21_000, 1, 20_000, 1_000)
    assert may_take(pool, 0.5, use(1, input_tokens=5_000, output_tokens=4_000), reading, 1, None)
    assert not may_take(pool, 0.5, use(1, input_tokens=5_001), reading, 1, None)
    assert not may_take(pool, 0.5, use(1, output_tokens=4_001), reading, 1, None)
    # Tokens are not limited here: 21 000 of them fit whatever is held.
    assert may_take(pool, 0.5, use(1, tokens=10**9), reading, 1, None)


def test_the_instances_room_binds_even_when_the_type_fits() -> None:
    # The type's budget would allow 10 000 more, but the instance may take only 9 999 now.
    capacity = (50_000, None, None, None)
    assert may_take(pool_of(100, capacity, room=(10_000, None, None, None)), 0.5, IDLE, Estimate(10_000, 1), 1, None)
    assert not may_take(pool_of(100, capacity, room=(9_999, None, None, None)), 0.5, IDLE, Estimate(10_000, 1), 1, None)
    requests = pool_of(100, (None, 10, None, 10), room=(None, 10, None, 2))
    assert may_take(requests, 1.0, IDLE, Estimate(1, 2), 1, None)
    assert not may_take(requests, 1.0, IDLE, Estimate(1, 3), 1, None)


def test_no_concurrent_room_takes_nothing() -> None:
    assert may_take(pool_of(capacity_slots=10, concurrent_room=1), 1.0, IDLE, Estimate(1, 1), 1, None)
    assert not may_take(pool_of(capacity_slots=10, concurrent_room=0), 1.0, IDLE, Estimate(1, 1), 1, None)


def test_below_min_capacity_skips_the_per_dimension_budget_but_not_the_room() -> None:
    pool = pool_of(capacity_slots=100, capacity=(1_000, None, None, None), room=(10_000, None, None, None))
    big = 8_000
    assert may_take(pool, 0.1, use(0, tokens=5_000), Estimate(big, 1), 1, None)
    assert may_take(pool, 0.1, use(1, tokens=5_000), Estimate(big, 1), 2, None)
    assert not may_take(pool, 0.1, use(2, tokens=5_000), Estimate(big, 1), 2, None)
    assert not may_take(pool, 0.1, use(1, tokens=5_000), Estimate(big, 1), 1, None)
    # The foothold never passes the ledger's checks.
    assert not may_take(pool, 0.1, use(0), Estimate(10_001, 1), 1, None)


def test_memory_counts_in_flight_on_every_model() -> None:
    pool = pool_of(capacity_slots=100)
    assert may_take(pool, 0.5, use(0, all_models=4), Estimate(1, 1), 1, 5)
    assert not may_take(pool, 0.5, use(0, all_models=5), Estimate(1, 1), 1, 5)


# ----- memory -------------------------------------------------------------------------------


def test_memory_slots_of_slot_calc_memory() -> None:
    settings = preset("slotCalc-memory")
    assert settings.memory is not None
    capacity = settings.memory.capacity_kb
    ratios = settings.initial_ratios()
    heavy = settings.job_types["heavyMemoryJob"]
    light = settings.job_types["lightMemoryJob"]
    assert memory_slots(capacity, ratios["heavyMemoryJob"], heavy.estimated_memory_kb) == 5
    assert memory_slots(capacity, ratios["lightMemoryJob"], light.estimated_memory_kb) == 50


@pytest.mark.parametrize("n", [1, 2, 3])
def test_memory_decides_on_slot_calc_memory(n: int) -> None:
    settings = preset("slotCalc-memory")
    assert settings.memory is not None
    averages = settings.average_estimates()
    pool = compute_pool(model_limits(settings, "test-model"), snapshot(n), averages)
    assert pool.total_slots >= 3_333
    got = {}
    for name, jt in settings.job_types.items():
        mem = memory_slots(settings.memory.capacity_kb, 0.5, jt.estimated_memory_kb)
        got[name] = allocated_slots(pool, 0.5, settings.min_job_type_capacity, mem)
    assert got == {"heavyMemoryJob": 5, "lightMemoryJob": 50}


def test_memory_slots_follow_the_ratio() -> None:
    assert memory_slots(102_400, 0.6, 10_240) == 6
    assert memory_slots(102_400, 0.29, 1_024) == 29


def test_no_memory_bound() -> None:
    assert memory_slots(None, 0.5, 1_024) is None
    assert memory_slots(102_400, 0.5, None) is None


def test_zero_memory_starts_nothing() -> None:
    pool = pool_of(capacity_slots=100)
    mem = memory_slots(0, 0.5, 1_024)
    assert mem == 0
    assert allocated_slots(pool, 0.5, 1, mem) == 0
    assert not may_take(pool, 0.5, IDLE, Estimate(1, 1), 1, mem)


def test_a_job_larger_than_its_memory_share_never_starts() -> None:
    mem = memory_slots(102_400, 0.5, 60_000)
    assert mem == 0
    assert not may_take(pool_of(capacity_slots=100), 0.5, IDLE, Estimate(1, 1), 1, mem)


def test_huge_memory_leaves_the_distributed_slots() -> None:
    pool = pool_of(capacity_slots=40)
    mem = memory_slots(10**15, 0.5, 1)
    assert mem is not None
    assert mem > 10**14
    assert allocated_slots(pool, 0.5, 1, mem) == 20
    assert may_take(pool, 0.5, use(19), Estimate(1, 1), 1, mem)
    assert not may_take(pool, 0.5, use(20), Estimate(1, 1), 1, mem)


# ----- load ---------------------------------------------------------------------------------


def test_load_is_demand_over_allocated() -> None:
    assert load_of(3, 1, 4) == 1.0
    assert load_of(1, 0, 4) == 0.25
    assert load_of(0, 0, 0) == 0.0
    assert load_of(0, 1, 0) == math.inf


# ----- one instance filling its pool --------------------------------------------------------


@st.composite
def instance_setups(
    draw: st.DrawFn,
) -> tuple[int, int, list[tuple[int, float]], int, list[int], bool]:
    limit = draw(st.integers(1_000, 500_000))
    n = draw(st.integers(1, 3))
    count = draw(st.integers(1, 4))
    weights = [draw(st.integers(1, 20)) for _ in range(count)]
    estimates = [draw(st.integers(1, 50_000)) for _ in range(count)]
    types = [(e, w / sum(weights)) for e, w in zip(estimates, weights, strict=True)]
    min_capacity = draw(st.integers(0, 2))
    order = draw(st.lists(st.integers(0, count - 1), min_size=1, max_size=150))
    return limit, n, types, min_capacity, order, draw(st.booleans())


@given(instance_setups())
def test_types_stay_within_their_budgets_and_the_instance_within_what_it_may_hold(
    setup: tuple[int, int, list[tuple[int, float]], int, list[int], bool],
) -> None:
    # One busy instance among n idle ones starts jobs until no type may: may_take alone (the local
    # check) keeps it within its share (or, lending, the limit) and every type within its ratio.
    limit, n, types, min_capacity, order, lend = setup
    lim = limits(tpm=limit)
    mean = sum(e for e, _ in types) / len(types)
    held = [0] * len(types)
    in_flight = [0] * len(types)
    for t in order:
        estimate, ratio = types[t]
        own = sum(held)
        snap = snapshot(n, open=tokens(own), own_open=tokens(own), own_inflight=sum(in_flight))
        pool = compute_pool(lim, snap, avg(mean, 1), lend=lend)
        if may_take(
            pool, ratio, TypeUse(tokens(held[t]), in_flight[t], in_flight[t]), Estimate(estimate, 0), min_capacity, None
        ):
            held[t] += estimate
            in_flight[t] += 1
    assert sum(held) <= (limit if lend else limit // n)
    whole = limit if lend else limit // n
    for (estimate, ratio), mine in zip(types, held, strict=True):
        assert mine <= max(scaled(whole, ratio), min_capacity * estimate)
