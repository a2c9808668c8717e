"""The worked example of docs/capacity.md: the default preset on two instances."""

from __future__ import annotations

from fractions import Fraction

import pytest

from rlservice.capacity.pools import Pool, compute_pool
from rlservice.capacity.shares import TypeUse, allocated_slots, load_of, may_take, rebalance, scaled
from rlservice.config import Settings

from .helpers import model_limits, preset, snapshot

MODELS = ("openai/gpt-5.2", "xai/grok-4.1-fast", "deepinfra/gpt-oss-20b")
TYPES = ("summary", "VacationPlanning", "ImageCreation", "BudgetCalculation", "WeatherForecast")


@pytest.fixture(scope="module")
def default() -> Settings:
    return preset("default")


def fresh_pool(settings: Settings, model: str, n: int = 2) -> Pool:
    avg_t, avg_r = settings.average_estimates()
    return compute_pool(model_limits(settings, model), snapshot(n), avg_t, avg_r)


def fill(
    settings: Settings, model: str, types: tuple[str, ...], n: int = 2, ratios: dict[str, float] | None = None
) -> dict[str, int]:
    """Starts jobs round-robin on one instance while the others stay idle, passing both the local
    share check and the ledger's check, until no type may start another."""
    lim = model_limits(settings, model)
    avg_t, avg_r = settings.average_estimates()
    ratios = ratios or settings.initial_ratios()
    own = [0, 0, 0, 0]
    inflight = 0
    committed = {t: [0, 0, 0, 0] for t in types}
    started = dict.fromkeys(types, 0)
    progress = True
    while progress:
        progress = False
        for name in types:
            jt = settings.job_types[name]
            own_t = (own[0], own[1], own[2], own[3])
            snap = snapshot(n, total=own_t, own=own_t, inflight_total=inflight, own_inflight=inflight)
            pool = compute_pool(lim, snap, avg_t, avg_r)
            c = committed[name]
            use = TypeUse((c[0], c[1], c[2], c[3]), started[name], started[name])
            need = (jt.estimated_tokens, jt.estimated_requests) * 2
            ledger_ok = all(room is None or need[d] <= room for d, room in enumerate(pool.rates))
            ledger_ok = ledger_ok and (pool.max_concurrent is None or pool.max_concurrent >= 1)
            share_ok = may_take(pool, ratios[name], use, jt.estimated_tokens, jt.estimated_requests, 1, None)
            if ledger_ok and share_ok:
                for d in range(4):
                    if lim.rates[d] is not None:
                        own[d] += need[d]
                        c[d] += need[d]
                inflight += 1
                started[name] += 1
                progress = True
    return started


def test_averages_and_ratios(default: Settings) -> None:
    assert default.average_estimates() == (Fraction(4_200), Fraction(11, 5))
    ratios = default.initial_ratios()
    assert [round(ratios[t], 12) for t in TYPES] == [0.3, 0.4, 0.1, 0.1, 0.1]


def test_pools_per_instance(default: Settings) -> None:
    gpt, grok, oss = (fresh_pool(default, m) for m in MODELS)
    assert (gpt.rates[:2], gpt.total_slots) == ((250_000, 250), 59)
    assert (grok.rates[:2], grok.total_slots) == ((2_000_000, 240), 109)
    assert (oss.max_concurrent, oss.total_slots) == (100, 100)


def test_allocated_slots_at_a_fresh_window(default: Settings) -> None:
    ratios = default.initial_ratios()
    table = {
        model: [allocated_slots(fresh_pool(default, model), ratios[t], 1, None) for t in TYPES] for model in MODELS
    }
    assert table == {
        "openai/gpt-5.2": [17, 23, 5, 5, 5],
        "xai/grok-4.1-fast": [32, 43, 10, 10, 10],
        "deepinfra/gpt-oss-20b": [30, 40, 10, 10, 10],
    }


def test_per_dimension_budgets_in_jobs(default: Settings) -> None:
    ratios = default.initial_ratios()
    budgets = {}
    for model in MODELS[:2]:
        pool = fresh_pool(default, model)
        tpm, rpm = pool.rates[0], pool.rates[1]
        assert tpm is not None and rpm is not None
        row = []
        for t in TYPES:
            jt = default.job_types[t]
            row.append((scaled(tpm, ratios[t]) // jt.estimated_tokens, scaled(rpm, ratios[t]) // jt.estimated_requests))
        budgets[model] = row
    assert budgets == {
        "openai/gpt-5.2": [(7, 75), (50, 33), (5, 25), (8, 5), (25, 25)],
        "xai/grok-4.1-fast": [(60, 72), (400, 32), (40, 24), (66, 4), (200, 24)],
    }


def test_jobs_each_type_starts_alone(default: Settings) -> None:
    alone = {model: [fill(default, model, (t,))[t] for t in TYPES] for model in MODELS}
    assert alone == {
        "openai/gpt-5.2": [7, 29, 5, 5, 6],
        "xai/grok-4.1-fast": [38, 32, 11, 4, 11],
        "deepinfra/gpt-oss-20b": [30, 40, 10, 10, 10],
    }


def test_jobs_all_types_start_together_on_gpt(default: Settings) -> None:
    together = fill(default, "openai/gpt-5.2", TYPES)
    assert [together[t] for t in TYPES] == [7, 27, 5, 5, 6]
    tokens = sum(together[t] * default.job_types[t].estimated_tokens for t in TYPES)
    requests = sum(together[t] * default.job_types[t].estimated_requests for t in TYPES)
    assert (tokens, requests) == (170_000, 124)


def test_an_instance_dies(default: Settings) -> None:
    avg_t, avg_r = default.average_estimates()
    lim = model_limits(default, "openai/gpt-5.2")
    # A committed 50 000 tokens and 10 requests, B 100 000 and 20; then B dies.
    before = compute_pool(lim, snapshot(2, total=(150_000, 30, 0, 0), own=(50_000, 10, 0, 0)), avg_t, avg_r)
    assert before.rates[:2] == (200_000, 240)
    after = compute_pool(
        lim,
        snapshot(1, total=(150_000, 30, 0, 0), retired=(100_000, 20, 0, 0), own=(50_000, 10, 0, 0)),
        avg_t,
        avg_r,
    )
    assert after.shares[:2] == (400_000, 480)
    assert after.rates[:2] == (350_000, 470)
    assert after.total_slots == 83


def test_an_instance_joins(default: Settings) -> None:
    avg_t, avg_r = default.average_estimates()
    lim = model_limits(default, "openai/gpt-5.2")
    total = (300_000, 60, 0, 0)
    a = compute_pool(lim, snapshot(3, total=total, own=(200_000, 40, 0, 0)), avg_t, avg_r)
    b = compute_pool(lim, snapshot(3, total=total, own=(100_000, 20, 0, 0)), avg_t, avg_r)
    c = compute_pool(lim, snapshot(3, total=total), avg_t, avg_r)
    assert a.shares[0] == b.shares[0] == c.shares[0] == 166_666
    assert (a.rates[0], b.rates[0], c.rates[0]) == (0, 66_666, 166_666)
    assert (a.total_slots, b.total_slots, c.total_slots) == (0, 15, 39)
    next_minute = compute_pool(lim, snapshot(3), avg_t, avg_r)
    assert next_minute.rates[:2] == (166_666, 166)
    assert next_minute.total_slots == 39


def test_a_ratio_sized_by_tokens(default: Settings) -> None:
    # 15 summary jobs of 10 000 tokens need 150 000 of the 250 000 TPM pool: a ratio of 0.6.
    ratios = default.initial_ratios() | {"summary": 0.6}
    assert fill(default, "openai/gpt-5.2", ("summary",), ratios=ratios)["summary"] == 15


def test_one_rebalancing_cycle(default: Settings) -> None:
    ratios = default.initial_ratios()
    flexible = {n: jt.ratio.flexible for n, jt in default.job_types.items()}
    loads = {"summary": 2.0, "VacationPlanning": 3.0, "ImageCreation": 0.0, "BudgetCalculation": 0.1}
    loads["WeatherForecast"] = 0.2
    new = rebalance(ratios, flexible, loads, default.ratio_adjustment)
    assert [round(new[t], 12) for t in TYPES] == [0.36, 0.4, 0.08, 0.08, 0.08]
    assert scaled(250_000, new["summary"]) // 10_000 == 9


def test_load_of_a_queued_burst(default: Settings) -> None:
    # 20 summary Acquires on one instance: 7 run on gpt-5.2, 13 queue there.
    avg_t, avg_r = default.average_estimates()
    ratio = default.initial_ratios()["summary"]
    own = (70_000, 7, 0, 0)
    gpt = compute_pool(
        model_limits(default, "openai/gpt-5.2"), snapshot(2, total=own, own=own, own_inflight=7), avg_t, avg_r
    )
    allocated = [allocated_slots(gpt, ratio, 1, None)]
    allocated += [allocated_slots(fresh_pool(default, m), ratio, 1, None) for m in MODELS[1:]]
    assert allocated == [14, 32, 30]
    # Load is that of the busiest model: queued on gpt-5.2, summary is a receiver, not a donor.
    load = max(load_of(7, 13, allocated[0]), load_of(0, 0, allocated[1]), load_of(0, 0, allocated[2]))
    assert round(load, 2) == 1.43
    assert load > default.ratio_adjustment.high_load_threshold
