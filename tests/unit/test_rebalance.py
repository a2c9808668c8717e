"""Local rebalancing of job-type ratios (SPEC §6)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rlservice.capacity.shares import normalise, rebalance, scaled
from rlservice.config import RatioAdjustment

from .helpers import preset

CFG = RatioAdjustment()


def flexible_all(*names: str) -> dict[str, bool]:
    return dict.fromkeys(names, True)


# ----- concrete cycles ----------------------------------------------------------------------


def test_a_donor_gives_max_adjustment_of_its_ratio() -> None:
    new = rebalance({"a": 0.5, "b": 0.5}, flexible_all("a", "b"), {"a": 0.1, "b": 0.9}, CFG)
    assert new["a"] == pytest.approx(0.4)
    assert new["b"] == pytest.approx(0.6)


def test_each_donor_gives_its_own_fraction() -> None:
    ratios = {"a": 0.5, "b": 0.2, "c": 0.3}
    new = rebalance(ratios, flexible_all("a", "b", "c"), {"a": 0.0, "b": 0.2, "c": 1.0}, CFG)
    assert new["a"] == pytest.approx(0.4)
    assert new["b"] == pytest.approx(0.16)
    assert new["c"] == pytest.approx(0.44)


def test_a_donor_never_goes_below_min_ratio() -> None:
    cfg = RatioAdjustment(min_ratio=0.018)
    new = rebalance({"a": 0.02, "b": 0.98}, flexible_all("a", "b"), {"a": 0.0, "b": 1.0}, cfg)
    assert new["a"] == pytest.approx(0.018)
    assert new["b"] == pytest.approx(0.982)


def test_a_donor_at_min_ratio_gives_nothing() -> None:
    ratios = {"a": 0.01, "b": 0.99}
    new = rebalance(ratios, flexible_all("a", "b"), {"a": 0.0, "b": 1.0}, CFG)
    assert new == ratios


def test_receivers_share_in_proportion_to_load() -> None:
    ratios = {"idle": 0.4, "busy": 0.3, "busier": 0.3}
    loads = {"idle": 0.0, "busy": 1.0, "busier": 3.0}
    new = rebalance(ratios, flexible_all(*ratios), loads, CFG)
    assert new["idle"] == pytest.approx(0.32)
    assert new["busy"] == pytest.approx(0.32)
    assert new["busier"] == pytest.approx(0.36)


def test_an_unbounded_load_weighs_like_a_huge_one() -> None:
    ratios = {"idle": 0.5, "starved": 0.25, "busy": 0.25}
    loads = {"idle": 0.0, "starved": math.inf, "busy": 1.0}
    new = rebalance(ratios, flexible_all(*ratios), loads, CFG)
    assert all(math.isfinite(r) for r in new.values())
    assert new["starved"] == pytest.approx(0.25 + 0.1, abs=1e-6)
    assert new["busy"] == pytest.approx(0.25, abs=1e-6)
    assert math.fsum(new.values()) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "loads",
    [
        {"a": 0.5, "b": 0.5},
        {"a": 0.1, "b": 0.5},
        {"a": 0.9, "b": 0.9},
        {"a": 0.1, "b": 0.2},
        {"a": 0.3, "b": 0.7},
    ],
    ids=["no-one", "donor-only", "receivers-only", "donors-only", "at-thresholds"],
)
def test_no_change_without_both_a_donor_and_a_receiver(loads: dict[str, float]) -> None:
    ratios = {"a": 0.45, "b": 0.55}
    assert rebalance(ratios, flexible_all("a", "b"), loads, CFG) == ratios


def test_fixed_types_neither_give_nor_receive() -> None:
    settings = preset("fixedRatio")
    ratios = settings.initial_ratios()
    flexible = {n: jt.ratio.flexible for n, jt in settings.job_types.items()}
    new = rebalance(ratios, flexible, {"fixedJobType": 0.0, "flexibleJobTypeA": 0.0, "flexibleJobTypeB": 2.0}, CFG)
    assert new["fixedJobType"] == 0.4
    assert new["flexibleJobTypeA"] == pytest.approx(0.24)
    assert new["flexibleJobTypeB"] == pytest.approx(0.36)
    busy_fixed = {"fixedJobType": 5.0, "flexibleJobTypeA": 0.0, "flexibleJobTypeB": 0.5}
    assert rebalance(ratios, flexible, busy_fixed, CFG) == ratios


def test_default_preset_vacation_planning_stays_fixed() -> None:
    settings = preset("default")
    ratios = settings.initial_ratios()
    flexible = {n: jt.ratio.flexible for n, jt in settings.job_types.items()}
    loads = dict.fromkeys(ratios, 0.0) | {"summary": 2.0, "VacationPlanning": 3.0}
    new = rebalance(ratios, flexible, loads, CFG)
    assert new["VacationPlanning"] == 0.4
    for name in ("ImageCreation", "BudgetCalculation", "WeatherForecast"):
        assert new[name] == pytest.approx(0.08)
    assert new["summary"] == pytest.approx(0.36)


def test_repeated_cycles_drain_an_idle_type_down_to_min_ratio() -> None:
    ratios = {"idle": 0.5, "busy": 0.5}
    for _ in range(200):
        ratios = rebalance(ratios, flexible_all("idle", "busy"), {"idle": 0.0, "busy": 1.0}, CFG)
    assert ratios["idle"] == pytest.approx(CFG.min_ratio)
    assert ratios["busy"] == pytest.approx(1 - CFG.min_ratio)


def test_normalise_scales_flexible_ratios_only() -> None:
    new = normalise({"fixed": 0.4, "a": 0.2, "b": 0.1}, {"fixed": False, "a": True, "b": True})
    assert new["fixed"] == 0.4
    assert new["a"] == pytest.approx(0.4)
    assert new["b"] == pytest.approx(0.2)


def test_normalise_without_flexible_ratios_changes_nothing() -> None:
    ratios = {"x": 0.3, "y": 0.2}
    assert normalise(ratios, {"x": False, "y": False}) == ratios


# ----- properties ---------------------------------------------------------------------------

Case = tuple[dict[str, float], dict[str, bool], list[dict[str, float]], RatioAdjustment, list[int]]

loads_strategy = st.one_of(st.floats(0, 5, allow_nan=False), st.just(math.inf), st.sampled_from([0.0, 0.3, 0.7]))


@st.composite
def rebalance_cases(draw: st.DrawFn) -> Case:
    count = draw(st.integers(1, 8))
    names = [f"t{i}" for i in range(count)]
    weights = [draw(st.integers(1, 100)) for _ in names]
    ratios = {n: w / sum(weights) for n, w in zip(names, weights, strict=True)}
    flexible = {n: draw(st.booleans()) for n in names}
    low = draw(st.floats(0, 1))
    high = draw(st.floats(low, 2))
    cfg = RatioAdjustment(
        low_load_threshold=low,
        high_load_threshold=high,
        max_adjustment=draw(st.floats(0.01, 1)),
        min_ratio=min(ratios.values()) * draw(st.floats(0.01, 1)),
    )
    cycles = draw(st.lists(st.fixed_dictionaries({n: loads_strategy for n in names}), min_size=1, max_size=30))
    bases = draw(st.lists(st.integers(0, 10_000_000), min_size=1, max_size=5))
    return ratios, flexible, cycles, cfg, bases


@given(rebalance_cases())
def test_rebalancing_keeps_every_invariant(case: Case) -> None:
    ratios, flexible, cycles, cfg, bases = case
    for loads in cycles:
        new = rebalance(ratios, flexible, loads, cfg)
        assert set(new) == set(ratios)
        assert math.fsum(new.values()) == pytest.approx(1.0, abs=1e-9)
        for name, r in new.items():
            assert cfg.min_ratio - 1e-12 <= r <= 1 + 1e-12
            if not flexible[name]:
                assert r == ratios[name]
        for base in bases:
            assert sum(scaled(base, r) for r in new.values()) <= base
        ratios = new


@given(rebalance_cases())
def test_who_gives_and_who_receives(case: Case) -> None:
    ratios, flexible, cycles, cfg, _ = case
    for loads in cycles:
        new = rebalance(ratios, flexible, loads, cfg)
        donors = [n for n in ratios if flexible[n] and loads[n] < cfg.low_load_threshold]
        receivers = [n for n in ratios if flexible[n] and loads[n] > cfg.high_load_threshold]
        if not donors or not receivers:
            assert new == ratios
        else:
            for name in donors:
                assert new[name] >= ratios[name] * (1 - cfg.max_adjustment) - 1e-12
                assert new[name] <= ratios[name] + 1e-12
            for name in receivers:
                assert new[name] >= ratios[name] - 1e-12
            for name in ratios:
                if name not in donors and name not in receivers:
                    assert new[name] == pytest.approx(ratios[name], abs=1e-12)
        ratios = new
