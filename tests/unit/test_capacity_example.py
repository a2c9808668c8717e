"""The worked example of docs/capacity.md: the default preset on two instances."""

from __future__ import annotations

from fractions import Fraction

import pytest

from rlservice.capacity.pools import Pool, compute_pool
from rlservice.capacity.shares import TypeUse, allocated_slots, load_of, may_take, rebalance, scaled
from rlservice.config import Settings
from rlservice.types import NO_AMOUNTS, Snapshot

from .helpers import Quad, model_limits, preset, snapshot

MODELS = ("openai/gpt-5.2", "xai/grok-4.1-fast", "deepinfra/gpt-oss-20b")
TYPES = ("summary", "VacationPlanning", "ImageCreation", "BudgetCalculation", "WeatherForecast")
GPT = MODELS[0]


@pytest.fixture(scope="module")
def default() -> Settings:
    return preset("default")


def pool_at(settings: Settings, model: str, snap: Snapshot, lend: bool = False) -> Pool:
    averages = settings.average_estimates()
    return compute_pool(model_limits(settings, model), snap, averages, lend=lend)


def fresh_pool(settings: Settings, model: str, lend: bool = False) -> Pool:
    # A lender borrows for requests that queued: its own waiters are on record, nobody else's.
    return pool_at(settings, model, snapshot(2, waiters=int(lend), own_waiting=int(lend)), lend)


def slots_of(settings: Settings, pool: Pool) -> list[int]:
    ratios = settings.initial_ratios()
    return [allocated_slots(pool, ratios[t], 1, None) for t in TYPES]


def fill(
    settings: Settings,
    model: str,
    types: tuple[str, ...],
    lend: bool = False,
    ratios: dict[str, float] | None = None,
) -> tuple[dict[str, int], Quad]:
    """Starts jobs round-robin on one instance while the other stays idle, as long as may_take
    (the local share check, with the ledger's checks mirrored in the pool's room) lets one more
    start; returns the jobs started per type and what the instance then holds."""
    lim = model_limits(settings, model)
    ratios = ratios or settings.initial_ratios()
    held = list(NO_AMOUNTS)
    per_type = {t: list(NO_AMOUNTS) for t in types}
    started = dict.fromkeys(types, 0)
    progress = True
    while progress:
        progress = False
        for name in types:
            jt = settings.job_types[name]
            own = tuple(held)
            inflight = sum(started.values())
            snap = snapshot(
                2,
                open=own,
                own_open=own,
                inflight_total=inflight,
                own_inflight=inflight,
                waiters=int(lend),
                own_waiting=int(lend),
            )
            pool = pool_at(settings, model, snap, lend)
            mine = per_type[name]
            use = TypeUse(tuple(mine), started[name], started[name])
            if may_take(pool, ratios[name], use, jt.estimate(), 1, None):
                need = jt.estimate().per_dim()
                for d, limit in enumerate(lim.rates):
                    if limit is not None:
                        held[d] += need[d]
                        mine[d] += need[d]
                started[name] += 1
                progress = True
    return started, tuple(held)


def test_averages_and_ratios(default: Settings) -> None:
    assert default.lend_idle_capacity
    assert default.average_estimates() == (Fraction(4_200), Fraction(11, 5), Fraction(0), Fraction(0))
    ratios = default.initial_ratios()
    assert [round(ratios[t], 12) for t in TYPES] == [0.3, 0.4, 0.1, 0.1, 0.1]


def test_pools_per_instance(default: Settings) -> None:
    gpt, grok, oss = (fresh_pool(default, m) for m in MODELS)
    assert (gpt.rates[:2], gpt.total_slots) == ((250_000, 250), 59)
    assert (grok.rates[:2], grok.total_slots) == ((2_000_000, 240), 109)
    assert (oss.max_concurrent, oss.total_slots) == (100, 100)


def test_what_a_lender_may_hold_while_the_other_instance_is_idle(default: Settings) -> None:
    gpt, grok, oss = (fresh_pool(default, m, lend=True) for m in MODELS)
    # The reported pool stays the seed's; what the job types divide is the whole window.
    assert (gpt.rates[:2], gpt.total_slots) == ((250_000, 250), 59)
    assert (gpt.capacity[:2], gpt.capacity_slots) == ((500_000, 500), 119)
    assert (grok.capacity[:2], grok.capacity_slots) == ((4_000_000, 480), 218)
    assert (oss.concurrent_capacity, oss.capacity_slots) == (200, 200)


def test_allocated_slots(default: Settings) -> None:
    share = {m: slots_of(default, fresh_pool(default, m)) for m in MODELS}
    assert share == {
        "openai/gpt-5.2": [17, 23, 5, 5, 5],
        "xai/grok-4.1-fast": [32, 43, 10, 10, 10],
        "deepinfra/gpt-oss-20b": [30, 40, 10, 10, 10],
    }
    lent = {m: slots_of(default, fresh_pool(default, m, lend=True)) for m in MODELS}
    assert lent == {
        "openai/gpt-5.2": [35, 47, 11, 11, 11],
        "xai/grok-4.1-fast": [65, 87, 21, 21, 21],
        "deepinfra/gpt-oss-20b": [60, 80, 20, 20, 20],
    }


@pytest.mark.parametrize(
    ("lend", "expected"),
    [
        (
            False,
            {
                "openai/gpt-5.2": [(7, 75), (50, 33), (5, 25), (8, 5), (25, 25)],
                "xai/grok-4.1-fast": [(60, 72), (400, 32), (40, 24), (66, 4), (200, 24)],
            },
        ),
        (
            True,
            {
                "openai/gpt-5.2": [(15, 150), (100, 66), (10, 50), (16, 10), (50, 50)],
                "xai/grok-4.1-fast": [(120, 144), (800, 64), (80, 48), (133, 9), (400, 48)],
            },
        ),
    ],
)
def test_per_dimension_budgets_in_jobs(
    default: Settings, lend: bool, expected: dict[str, list[tuple[int, int]]]
) -> None:
    ratios = default.initial_ratios()
    budgets = {}
    for model in MODELS[:2]:
        pool = fresh_pool(default, model, lend)
        tpm, rpm = pool.capacity[0], pool.capacity[1]
        assert tpm is not None and rpm is not None
        row = []
        for t in TYPES:
            jt = default.job_types[t]
            row.append((scaled(tpm, ratios[t]) // jt.estimated_tokens, scaled(rpm, ratios[t]) // jt.estimated_requests))
        budgets[model] = row
    assert budgets == expected


@pytest.mark.parametrize(
    ("lend", "expected"),
    [
        (
            False,
            {
                "openai/gpt-5.2": [7, 23, 5, 5, 5],
                "xai/grok-4.1-fast": [32, 32, 10, 4, 10],
                "deepinfra/gpt-oss-20b": [30, 40, 10, 10, 10],
            },
        ),
        (
            True,
            {
                "openai/gpt-5.2": [15, 47, 10, 10, 11],
                "xai/grok-4.1-fast": [65, 64, 21, 9, 21],
                "deepinfra/gpt-oss-20b": [60, 80, 20, 20, 20],
            },
        ),
    ],
)
def test_jobs_each_type_starts_alone(default: Settings, lend: bool, expected: dict[str, list[int]]) -> None:
    alone = {model: [fill(default, model, (t,), lend)[0][t] for t in TYPES] for model in MODELS}
    assert alone == expected


@pytest.mark.parametrize(
    ("lend", "jobs", "held"),
    [(False, [7, 23, 5, 5, 5], (161_000, 111)), (True, [15, 47, 10, 10, 11], (335_000, 227))],
)
def test_jobs_all_types_start_together_on_gpt(
    default: Settings, lend: bool, jobs: list[int], held: tuple[int, int]
) -> None:
    # An open lease moves no pool, so the types do not crowd each other out: together each starts
    # what it starts alone.
    together, own = fill(default, GPT, TYPES, lend)
    assert [together[t] for t in TYPES] == jobs
    assert own[:2] == held


def test_lending_stops_when_the_other_instance_waits(default: Settings) -> None:
    # A borrowed: it holds 335 000 tokens and 227 requests open on gpt-5.2. Then B has waiters.
    held = (335_000, 227, 0, 0)
    a = pool_at(default, GPT, snapshot(2, open=held, own_open=held, waiters=1), lend=True)
    assert not a.lending
    assert (a.capacity[:2], a.capacity_slots) == ((250_000, 250), 59)
    assert slots_of(default, a) == [17, 23, 5, 5, 5]
    # Over its share of tokens, A starts nothing on gpt-5.2 until its leases bring it back within.
    assert a.room[:2] == (0, 23)
    # B has the waiters and nobody else does: it borrows what A leaves.
    b = pool_at(default, GPT, snapshot(2, open=held, waiters=1, own_waiting=1), lend=True)
    assert b.lending
    assert (b.room[:2], b.capacity_slots) == ((165_000, 273), 39)
    assert slots_of(default, b) == [11, 15, 3, 3, 3]
    # A's leases close at their estimates: the settled usage halves into both reported pools.
    settled = pool_at(default, GPT, snapshot(2, settled=held, waiters=1), lend=True)
    assert (settled.rates[:2], settled.total_slots, settled.room[:2]) == ((82_500, 136), 19, (82_500, 136))


def test_an_instance_dies(default: Settings) -> None:
    # A holds 50 000 tokens and 10 requests open, B 100 000 and 20; then B dies.
    a_open = (50_000, 10, 0, 0)
    before = pool_at(default, GPT, snapshot(2, open=(150_000, 30, 0, 0), own_open=a_open))
    assert (before.rates[:2], before.room[:2]) == ((250_000, 250), (200_000, 240))
    # B's leases close at their estimates and N drops to 1.
    after = pool_at(default, GPT, snapshot(1, settled=(100_000, 20, 0, 0), open=a_open, own_open=a_open))
    assert (after.rates[:2], after.total_slots) == ((400_000, 480), 95)
    assert after.room[:2] == (350_000, 470)


def test_an_instance_joins(default: Settings) -> None:
    # A holds 200 000 tokens and 40 requests open, B 100 000 and 20; C joins. Every instance has
    # waiters, so nobody borrows.
    total = (300_000, 60, 0, 0)
    owns = ((200_000, 40, 0, 0), (100_000, 20, 0, 0), (0, 0, 0, 0))
    pools = [
        pool_at(default, GPT, snapshot(3, open=total, own_open=own, waiters=3, own_waiting=1), True) for own in owns
    ]
    assert {(p.rates[:2], p.total_slots) for p in pools} == {((166_666, 166), 39)}
    assert [p.room[:2] for p in pools] == [(0, 126), (66_666, 146), (166_666, 166)]
    next_minute = pool_at(default, GPT, snapshot(3))
    assert (next_minute.rates[:2], next_minute.room[:2], next_minute.total_slots) == (
        (166_666, 166),
        (166_666, 166),
        39,
    )


def test_a_ratio_sized_by_tokens(default: Settings) -> None:
    # 15 summary jobs of 10 000 tokens need 150 000 of the 250 000 TPM pool: a ratio of 0.6.
    ratios = default.initial_ratios() | {"summary": 0.6}
    assert fill(default, GPT, ("summary",), ratios=ratios)[0]["summary"] == 15
    assert fill(default, GPT, ("summary",), lend=True, ratios=ratios)[0]["summary"] == 30


def test_one_rebalancing_cycle(default: Settings) -> None:
    ratios = default.initial_ratios()
    flexible = {n: jt.ratio.flexible for n, jt in default.job_types.items()}
    loads = {"summary": 2.0, "VacationPlanning": 3.0, "ImageCreation": 0.0, "BudgetCalculation": 0.1}
    loads["WeatherForecast"] = 0.2
    new = rebalance(ratios, flexible, loads, default.ratio_adjustment)
    assert [round(new[t], 12) for t in TYPES] == [0.36, 0.4, 0.08, 0.08, 0.08]
    assert scaled(250_000, new["summary"]) // 10_000 == 9


def test_load_of_a_queued_burst(default: Settings) -> None:
    # 20 summary Acquires on one instance while the other has waiters too: 7 run on gpt-5.2, 13
    # queue there. Open leases move no pool, so summary keeps its 17 slots.
    ratio = default.initial_ratios()["summary"]
    own = (70_000, 7, 0, 0)
    gpt = pool_at(default, GPT, snapshot(2, open=own, own_open=own, own_inflight=7, waiters=2, own_waiting=1), True)
    allocated = [allocated_slots(gpt, ratio, 1, None)]
    allocated += [allocated_slots(fresh_pool(default, m), ratio, 1, None) for m in MODELS[1:]]
    assert allocated == [17, 32, 30]
    # Load is that of the busiest model: queued on gpt-5.2, summary is a receiver, not a donor.
    load = max(load_of(7, 13, allocated[0]), load_of(0, 0, allocated[1]), load_of(0, 0, allocated[2]))
    assert round(load, 2) == 1.18
    assert load > default.ratio_adjustment.high_load_threshold
