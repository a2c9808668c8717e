"""Settings: the presets, field-naming errors and initial ratios (SPEC §4, PRESETS.md)."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rlservice.config import (
    PRESETS_DIR,
    ConfigError,
    Settings,
    load_settings,
    parse_settings,
    preset_path,
)

from .helpers import preset

SEED_PRESETS = (
    "default",
    "slotCalculation",
    "fixedRatio",
    "flexibleRatio",
    "instanceScaling",
    "slotCalc-tpm",
    "slotCalc-rpm",
    "slotCalc-tpd",
    "slotCalc-rpd",
    "slotCalc-concurrent",
    "slotCalc-tpm-rpm",
    "slotCalc-multi-model",
    "slotCalc-memory",
)

Limits = tuple[int | None, int | None, int | None, int | None, int | None]
# tokens, requests, initial ratio as written (None = shares the rest), flexible
JobRow = tuple[int, int, float | None, bool]

# The values of PRESETS.md: models in escalation order with (TPM, RPM, TPD, RPD, concurrent).
PRESET_TABLE: dict[str, tuple[dict[str, Limits], dict[str, JobRow]]] = {
    "default": (
        {
            "openai/gpt-5.2": (500_000, 500, None, None, None),
            "xai/grok-4.1-fast": (4_000_000, 480, None, None, None),
            "deepinfra/gpt-oss-20b": (None, None, None, None, 200),
        },
        {
            "summary": (10_000, 1, 0.3, True),
            "VacationPlanning": (2_000, 3, 0.4, False),
            "ImageCreation": (5_000, 1, None, True),
            "BudgetCalculation": (3_000, 5, None, True),
            "WeatherForecast": (1_000, 1, None, True),
        },
    ),
    "slotCalculation": (
        {"model-alpha": (100_000, None, None, None, None), "model-beta": (100_000, None, None, None, None)},
        {"jobTypeA": (10_000, 1, 0.6, True), "jobTypeB": (5_000, 1, 0.4, True)},
    ),
    "fixedRatio": (
        {"test-model": (100_000, None, None, None, None)},
        {
            "fixedJobType": (10_000, 1, 0.4, False),
            "flexibleJobTypeA": (10_000, 1, 0.3, True),
            "flexibleJobTypeB": (10_000, 1, 0.3, True),
        },
    ),
    "flexibleRatio": (
        {"flex-model": (100_000, None, None, None, None)},
        {
            "flexJobA": (10_000, 1, 0.33, True),
            "flexJobB": (10_000, 1, 0.33, True),
            "flexJobC": (10_000, 1, 0.33, True),
        },
    ),
    "instanceScaling": (
        {"scale-model": (100_000, None, None, None, None)},
        {"scaleJob": (10_000, 1, 1.0, True)},
    ),
    "slotCalc-tpm": (
        {"model-alpha": (100_000, None, None, None, None)},
        {"jobTypeA": (10_000, 1, 0.6, True), "jobTypeB": (5_000, 1, 0.4, True)},
    ),
    "slotCalc-rpm": (
        {"model-beta": (None, 500, None, None, None)},
        {"jobTypeA": (1_000, 1, 0.6, True), "jobTypeB": (1_000, 5, 0.4, True)},
    ),
    "slotCalc-tpd": (
        {"model-tpd": (None, None, 1_000_000, None, None)},
        {"jobTypeA": (10_000, 1, 0.6, True), "jobTypeB": (5_000, 1, 0.4, True)},
    ),
    "slotCalc-rpd": (
        {"model-rpd": (None, None, None, 10_000, None)},
        {"jobTypeA": (1_000, 1, 0.6, True), "jobTypeB": (1_000, 5, 0.4, True)},
    ),
    "slotCalc-concurrent": (
        {"model-gamma": (None, None, None, None, 100)},
        {"jobTypeA": (1_000, 1, 0.7, True), "jobTypeB": (1_000, 1, 0.3, True)},
    ),
    "slotCalc-tpm-rpm": (
        {"model-delta": (100_000, 50, None, None, None)},
        {"jobTypeA": (10_000, 1, 0.5, True), "jobTypeB": (10_000, 1, 0.5, True)},
    ),
    "slotCalc-multi-model": (
        {"model-tpm": (100_000, None, None, None, None), "model-concurrent": (None, None, None, None, 50)},
        {"jobTypeA": (10_000, 1, 0.5, True), "jobTypeB": (10_000, 1, 0.5, True)},
    ),
    "slotCalc-memory": (
        {"test-model": (10_000_000, None, None, None, None)},
        {"heavyMemoryJob": (1_000, 1, 0.5, True), "lightMemoryJob": (1_000, 1, 0.5, True)},
    ),
}


def minimal(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "models": {"m": {"tokens_per_minute": 100_000}},
        "job_types": {"a": {"estimated_tokens": 1_000}},
    }
    data.update(overrides)
    return data


def error_of(data: object) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_settings(data, "limits.yaml")
    return str(caught.value)


def job_types(**ratios: float | None) -> dict[str, Any]:
    return {
        name: {"estimated_tokens": 1_000} if r is None else {"estimated_tokens": 1_000, "ratio": {"initial": r}}
        for name, r in ratios.items()
    }


# ----- presets ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")))
def test_every_preset_file_loads(name: str) -> None:
    settings = preset(name)
    ratios = settings.initial_ratios()
    assert math.isclose(math.fsum(ratios.values()), 1.0, abs_tol=1e-9)
    assert all(r > 0 for r in ratios.values())


def test_every_seed_preset_exists() -> None:
    present = {p.stem for p in PRESETS_DIR.glob("*.yaml")}
    assert set(SEED_PRESETS) <= present


@pytest.mark.parametrize("name", SEED_PRESETS)
def test_seed_preset_values_match_the_table(name: str) -> None:
    settings = preset(name)
    models, types = PRESET_TABLE[name]
    assert settings.model_order() == list(models)
    for model, expected in models.items():
        m = settings.models[model]
        got = (
            m.tokens_per_minute,
            m.requests_per_minute,
            m.tokens_per_day,
            m.requests_per_day,
            m.max_concurrent_requests,
        )
        assert got == expected, model
    assert list(settings.job_types) == list(types)
    for jt_name, (tokens, requests, ratio, flexible) in types.items():
        jt = settings.job_types[jt_name]
        assert (jt.estimated_tokens, jt.estimated_requests, jt.ratio.initial, jt.ratio.flexible) == (
            tokens,
            requests,
            ratio,
            flexible,
        ), jt_name


def test_default_preset_pricing() -> None:
    models = preset("default").models
    prices = {name: (m.pricing.input, m.pricing.cached, m.pricing.output) for name, m in models.items()}
    assert prices == {
        "openai/gpt-5.2": (1.75, 0.175, 14),
        "xai/grok-4.1-fast": (0.2, 0.05, 0.5),
        "deepinfra/gpt-oss-20b": (0.03, 0.03, 0.14),
    }


@pytest.mark.parametrize(
    ("name", "standard", "budget"),
    [
        ("slotCalculation", "model-alpha", "model-beta"),
        ("slotCalc-multi-model", "model-tpm", "model-concurrent"),
    ],
)
def test_standard_and_budget_pricing(name: str, standard: str, budget: str) -> None:
    models = preset(name).models
    assert models[standard].pricing.model_dump() == {"input": 1, "cached": 0.1, "output": 2}
    assert models[budget].pricing.model_dump() == {"input": 0.5, "cached": 0.05, "output": 1}


def test_default_preset_ratios_give_the_rest_to_unset_types() -> None:
    ratios = preset("default").initial_ratios()
    assert ratios["summary"] == 0.3
    assert ratios["VacationPlanning"] == 0.4
    for name in ("ImageCreation", "BudgetCalculation", "WeatherForecast"):
        assert ratios[name] == pytest.approx(0.1, abs=1e-12)


def test_slot_calc_memory_has_a_fixed_capacity() -> None:
    settings = preset("slotCalc-memory")
    assert settings.memory is not None
    assert settings.memory.capacity_kb == 102_400
    assert settings.job_types["heavyMemoryJob"].estimated_memory_kb == 10_240
    assert settings.job_types["lightMemoryJob"].estimated_memory_kb == 1_024


def test_average_estimates_are_exact() -> None:
    # No preset estimates input and output tokens apart: they average 0.
    assert preset("default").average_estimates() == (Fraction(4_200), Fraction(11, 5), Fraction(0), Fraction(0))
    assert preset("slotCalc-rpm").average_estimates() == (Fraction(1_000), Fraction(3), Fraction(0), Fraction(0))
    assert preset("slotCalc-tpm").average_estimates() == (Fraction(7_500), Fraction(1), Fraction(0), Fraction(0))
    avg_t, *_ = parse_settings(
        minimal(job_types={"a": {"estimated_tokens": 1}, "b": {"estimated_tokens": 1}, "c": {"estimated_tokens": 0}}),
        "x",
    ).average_estimates()
    assert avg_t == Fraction(2, 3)


def test_model_order_without_escalation_order_is_config_order() -> None:
    data = minimal(models={"z": {"tokens_per_minute": 1}, "a": {"requests_per_minute": 1}})
    assert parse_settings(data, "x").model_order() == ["z", "a"]
    data["escalation_order"] = ["a", "z"]
    assert parse_settings(data, "x").model_order() == ["a", "z"]


def test_defaults_of_spec_section_4() -> None:
    s = parse_settings(minimal(), "x")
    adj = s.ratio_adjustment
    assert (adj.high_load_threshold, adj.low_load_threshold, adj.max_adjustment, adj.min_ratio) == (
        0.7,
        0.3,
        0.2,
        0.01,
    )
    assert (adj.adjustment_interval_ms, adj.releases_per_adjustment) == (5_000, 10)
    assert s.min_job_type_capacity == 1
    assert (s.lease_ttl_ms, s.heartbeat_interval_ms, s.stale_after_ms) == (300_000, 5_000, 15_000)
    assert s.job_types["a"].estimated_requests == 1
    assert s.job_types["a"].ratio.flexible is True
    assert s.memory is None
    fb = s.provider_feedback
    assert (fb.max_pause_ms, fb.default_pause_ms, fb.tolerance_tokens) == (60_000, 1000, None)
    assert all(m.window == "fixed" for m in s.models.values())


def test_the_feedback_tolerance_defaults_to_the_largest_estimate() -> None:
    data = minimal(job_types={"a": {"estimated_tokens": 300}, "b": {"estimated_tokens": 7000}})
    assert parse_settings(data, "x").feedback_tolerance() == (7000, 1, 0, 0)
    data["provider_feedback"] = {"tolerance_tokens": 50}
    assert parse_settings(data, "x").feedback_tolerance() == (50, 1, 50, 50)


def test_estimated_tokens_is_the_sum_of_the_parts_when_unset() -> None:
    data = minimal(job_types={"a": {"estimated_input_tokens": 7_000, "estimated_output_tokens": 3_000}})
    jt = parse_settings(data, "x").job_types["a"]
    assert (jt.estimated_tokens, jt.estimated_input_tokens, jt.estimated_output_tokens) == (10_000, 7_000, 3_000)
    # Given with the parts, it must be their sum; given alone, the parts stay unset.
    data["job_types"]["a"]["estimated_tokens"] = 10_000
    assert parse_settings(data, "x").job_types["a"].estimated_tokens == 10_000
    alone = parse_settings(minimal(), "x").job_types["a"]
    assert (alone.estimated_input_tokens, alone.estimated_output_tokens) == (None, None)


def test_token_kind_limits_default_to_unset_and_cached_tokens_to_input() -> None:
    m = parse_settings(minimal(), "x").models["m"]
    assert (m.input_tokens_per_minute, m.output_tokens_per_minute, m.cached_tokens_count_as_input) == (None, None, True)
    # An input or output limit alone is a limit.
    kinds = minimal(
        models={"claude": {"output_tokens_per_minute": 8_000, "cached_tokens_count_as_input": False}},
        job_types={"a": {"estimated_input_tokens": 6, "estimated_output_tokens": 4}},
    )
    claude = parse_settings(kinds, "x").models["claude"]
    assert claude.rates() == (None, None, None, None, None, 8_000)
    assert not claude.cached_tokens_count_as_input


def test_averages_and_tolerances_per_kind() -> None:
    data = minimal(
        models={"claude": {"input_tokens_per_minute": 100_000, "output_tokens_per_minute": 20_000}},
        job_types={
            "reading": {"estimated_input_tokens": 20_000, "estimated_output_tokens": 1_000},
            "writing": {"estimated_input_tokens": 1_000, "estimated_output_tokens": 4_000, "estimated_requests": 2},
        },
    )
    settings = parse_settings(data, "x")
    assert settings.average_estimates() == (Fraction(13_000), Fraction(3, 2), Fraction(10_500), Fraction(2_500))
    # The largest estimate of each kind; one request.
    assert settings.feedback_tolerance() == (21_000, 1, 20_000, 4_000)


def test_cost_is_per_million_tokens() -> None:
    pricing = preset("default").models["openai/gpt-5.2"].pricing
    cost = pricing.cost_usd(input_tokens=1_000, cached_tokens=500, output_tokens=200)
    assert cost == pytest.approx((1_000 * 1.75 + 500 * 0.175 + 200 * 14) / 1e6)


# ----- errors name the field ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "field", "why"),
    [
        (
            minimal(job_types={"summary": {"estimated_tokens": -1}}),
            "job_types.summary.estimated_tokens",
            "greater than or equal to 0",
        ),
        (minimal(job_types={"summary": {}}), "job_types.summary.estimated_tokens", "required"),
        (
            minimal(job_types={"summary": {"estimated_tokens": "lots"}}),
            "job_types.summary.estimated_tokens",
            "integer",
        ),
        (
            minimal(job_types={"a": {"estimated_tokens": 1, "estimated_requests": -1}}),
            "job_types.a.estimated_requests",
            "",
        ),
        (
            minimal(job_types={"a": {"estimated_tokens": 1, "estimated_memory_kb": 0}}),
            "job_types.a.estimated_memory_kb",
            "",
        ),
        (minimal(escalation_order=["m", "nope"]), "escalation_order[1]", "unknown model 'nope'"),
        (minimal(escalation_order=["m", "m"]), "escalation_order", "twice"),
        (minimal(job_types=job_types(a=0.7, b=0.5)), "job_types.*.ratio.initial", "above 1"),
        (minimal(job_types=job_types(a=1.5)), "job_types.a.ratio.initial", "less than or equal to 1"),
        (minimal(job_types=job_types(a=0.0)), "job_types.a.ratio.initial", "greater than 0"),
        (minimal(job_types=job_types(a=1.0, b=None)), "job_types.b.ratio.initial", "ends up 0"),
        (minimal(models={"m": {}}), "models.m", "at least one limit"),
        (minimal(models={"m": {"pricing": {"input": 1}}}), "models.m", "at least one limit"),
        (minimal(models={"m": {"tokens_per_minute": 0}}), "models.m.tokens_per_minute", "greater than 0"),
        (minimal(models={}), "models", ""),
        (minimal(models={f"m{i}": {"tokens_per_minute": 1} for i in range(65)}), "models", "at most 64"),
        (minimal(job_types={}), "job_types", ""),
        (minimal(default_job_type="chat"), "default_job_type", "unknown job type 'chat'"),
        (minimal(memory={"capacity_kb": 1, "free_memory_ratio": 0.5}), "memory", "exactly one"),
        (minimal(memory={}), "memory", "exactly one"),
        (minimal(memory={"free_memory_ratio": 1.5}), "memory.free_memory_ratio", ""),
        (minimal(stale_after_ms=5_000), "stale_after_ms", "heartbeat_interval_ms"),
        (minimal(stale_after_ms=100, heartbeat_interval_ms=200), "stale_after_ms", "heartbeat_interval_ms"),
        (
            minimal(job_types={"a": {"estimated_tokens": 1, "max_wait_ms": {"elsewhere": 10}}}),
            "job_types.a.max_wait_ms",
            "unknown model 'elsewhere'",
        ),
        (
            minimal(ratio_adjustment={"low_load_threshold": 0.8, "high_load_threshold": 0.5}),
            "ratio_adjustment",
            "low_load_threshold",
        ),
        (minimal(ratio_adjustment={"min_ratio": 0}), "ratio_adjustment.min_ratio", ""),
        (minimal(min_job_type_capacity=-1), "min_job_type_capacity", ""),
        (minimal(lease_ttl_ms=0), "lease_ttl_ms", ""),
        (minimal(surprise=True), "surprise", "not permitted"),
        (minimal(models={"m": {"tokens_per_minute": 1, "tpm": 5}}), "models.m.tpm", "not permitted"),
        (
            minimal(models={"m": {"tokens_per_minute": 1, "window": "sliding"}}),
            "models.m.window",
            "'fixed' or 'rolling'",
        ),
        (minimal(provider_feedback={"max_pause_ms": 0}), "provider_feedback.max_pause_ms", "greater than 0"),
        (minimal(provider_feedback={"default_pause_ms": -1}), "provider_feedback.default_pause_ms", ""),
        (minimal(provider_feedback={"tolerance_tokens": -1}), "provider_feedback.tolerance_tokens", ""),
        # Token kinds (SPEC §12).
        (minimal(models={"m": {"input_tokens_per_minute": 0}}), "models.m.input_tokens_per_minute", "greater than 0"),
        (minimal(models={"m": {"output_tokens_per_minute": -1}}), "models.m.output_tokens_per_minute", ""),
        (
            minimal(models={"m": {"pricing": {"input": 1}, "cached_tokens_count_as_input": False}}),
            "models.m",
            "input_tokens_per_minute",
        ),
        (
            minimal(models={"m": {"tokens_per_minute": 1, "cached_tokens_count_as_input": "sometimes"}}),
            "models.m.cached_tokens_count_as_input",
            "boolean",
        ),
        (minimal(job_types={"a": {"estimated_input_tokens": 10}}), "job_types.a.estimated_tokens", "required"),
        (
            minimal(
                job_types={"a": {"estimated_tokens": 30, "estimated_input_tokens": 10, "estimated_output_tokens": 5}}
            ),
            "job_types.a.estimated_tokens",
            "is not estimated_input_tokens + estimated_output_tokens (10 + 5)",
        ),
        (
            minimal(job_types={"a": {"estimated_input_tokens": -1, "estimated_output_tokens": 5}}),
            "job_types.a.estimated_input_tokens",
            "greater than or equal to 0",
        ),
        (
            minimal(
                models={"m": {"tokens_per_minute": 1}, "claude": {"input_tokens_per_minute": 1}},
                job_types={"a": {"estimated_tokens": 10, "estimated_output_tokens": 4}},
            ),
            "job_types.a.estimated_input_tokens",
            "required, since model 'claude' limits input and output tokens apart",
        ),
        (
            minimal(
                models={"claude": {"input_tokens_per_minute": 1}},
                job_types={"a": {"estimated_tokens": 10, "estimated_input_tokens": 6}},
            ),
            "job_types.a.estimated_output_tokens",
            "required, since model 'claude' limits input and output tokens apart",
        ),
        (
            minimal(
                models={"claude": {"output_tokens_per_minute": 1}},
                job_types={"a": {"estimated_tokens": 10, "estimated_input_tokens": 6}},
            ),
            "job_types.a.estimated_output_tokens",
            "required, since model 'claude' limits input and output tokens apart",
        ),
    ],
)
def test_errors_name_the_field(data: dict[str, Any], field: str, why: str) -> None:
    message = error_of(data)
    assert message.startswith("limits.yaml: ")
    assert field in message
    assert why in message


def test_top_level_must_be_a_mapping() -> None:
    assert "expected a mapping" in error_of([{"models": {}}])
    assert "expected a mapping" in error_of(None)


def test_every_bad_field_is_reported_at_once() -> None:
    message = error_of(
        minimal(
            models={"m": {"tokens_per_minute": -5}},
            job_types={"a": {"estimated_tokens": -1}},
        )
    )
    assert "models.m.tokens_per_minute" in message
    assert "job_types.a.estimated_tokens" in message


def test_load_settings_reads_yaml(tmp_path: Path) -> None:
    path = tmp_path / "limits.yaml"
    path.write_text("models:\n  m:\n    requests_per_day: 7\njob_types:\n  a:\n    estimated_tokens: 3\n")
    settings = load_settings(path)
    assert settings.models["m"].requests_per_day == 7


def test_load_settings_names_the_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "limits.yaml"
    path.write_text("models:\n  m: {}\njob_types:\n  a:\n    estimated_tokens: 3\n")
    with pytest.raises(ConfigError, match=r"limits\.yaml: models\.m: a model needs at least one limit"):
        load_settings(path)


def test_load_settings_rejects_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("models: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(path)


def test_load_settings_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_settings(tmp_path / "absent.yaml")


def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        preset_path("nope")
    assert "unknown preset 'nope'" in str(caught.value)
    assert "slotCalc-tpm" in str(caught.value)


# ----- initial ratios -----------------------------------------------------------------------


def ratios_of(types: dict[str, Any]) -> dict[str, float]:
    return parse_settings(minimal(job_types=types), "x").initial_ratios()


def test_unset_types_share_the_rest_equally() -> None:
    ratios = ratios_of(job_types(a=0.4, b=None, c=None))
    assert ratios["a"] == 0.4
    assert ratios["b"] == pytest.approx(0.3)
    assert ratios["c"] == pytest.approx(0.3)


def test_no_ratio_anywhere_splits_evenly() -> None:
    ratios = ratios_of(job_types(a=None, b=None, c=None, d=None))
    assert ratios == {"a": 0.25, "b": 0.25, "c": 0.25, "d": 0.25}


def test_all_set_below_one_scales_flexible_types_up() -> None:
    ratios = ratios_of(job_types(a=0.33, b=0.33, c=0.33))
    for r in ratios.values():
        assert r == pytest.approx(1 / 3, abs=1e-12)


def test_the_rest_goes_to_flexible_types_in_proportion_and_fixed_ones_keep_theirs() -> None:
    types = {
        "fixed": {"estimated_tokens": 1, "ratio": {"initial": 0.4, "flexible": False}},
        "a": {"estimated_tokens": 1, "ratio": {"initial": 0.3}},
        "b": {"estimated_tokens": 1, "ratio": {"initial": 0.2}},
    }
    ratios = ratios_of(types)
    assert ratios["fixed"] == 0.4
    assert ratios["a"] == pytest.approx(0.36)
    assert ratios["b"] == pytest.approx(0.24)


def test_all_fixed_below_one_scales_every_type() -> None:
    types = {
        "a": {"estimated_tokens": 1, "ratio": {"initial": 0.4, "flexible": False}},
        "b": {"estimated_tokens": 1, "ratio": {"initial": 0.1, "flexible": False}},
    }
    ratios = ratios_of(types)
    assert ratios["a"] == pytest.approx(0.8)
    assert ratios["b"] == pytest.approx(0.2)


def test_ratios_summing_to_one_are_kept() -> None:
    assert ratios_of(job_types(a=0.6, b=0.4)) == {"a": 0.6, "b": 0.4}


def test_ratios_at_one_within_float_error_are_accepted() -> None:
    ratios = ratios_of(job_types(a=0.1, b=0.2, c=0.7))
    assert math.isclose(math.fsum(ratios.values()), 1.0, abs_tol=1e-9)


def test_given_ratios_summing_to_one_leave_nothing_for_an_unset_type() -> None:
    # 0.3 + 0.35 + 0.35 is 1 on paper but 0.9999999999999999 in floats: the unset type's share
    # must be recognised as nothing, not a ratio of 1e-16 that starves it silently.
    with pytest.raises(ConfigError, match=r"job_types\.rest\.ratio\.initial"):
        ratios_of(job_types(a=0.3, b=0.35, c=0.35, rest=None))


@st.composite
def job_type_sets(draw: st.DrawFn) -> dict[str, Any]:
    count = draw(st.integers(1, 6))
    types: dict[str, Any] = {}
    for i in range(count):
        ratio = draw(st.one_of(st.none(), st.integers(1, 100).map(lambda k: k / 100)))
        entry: dict[str, Any] = {"estimated_tokens": 1}
        if ratio is not None:
            entry["ratio"] = {"initial": ratio, "flexible": draw(st.booleans())}
        types[f"t{i}"] = entry
    return types


@given(job_type_sets())
def test_accepted_ratios_are_positive_and_sum_to_one(types: dict[str, Any]) -> None:
    try:
        settings: Settings = parse_settings(minimal(job_types=types), "x")
    except ConfigError as e:
        given_sum = sum(t["ratio"]["initial"] for t in types.values() if "ratio" in t)
        any_unset = any("ratio" not in t for t in types.values())
        assert given_sum > 1 + 1e-9 or (any_unset and given_sum >= 1 - 1e-9), str(e)
        return
    ratios = settings.initial_ratios()
    assert set(ratios) == set(types)
    assert all(r > 0 for r in ratios.values())
    assert math.isclose(math.fsum(ratios.values()), 1.0, abs_tol=1e-9)
    unset = [n for n, t in types.items() if "ratio" not in t]
    given_ratios = {n: t["ratio"] for n, t in types.items() if "ratio" in t}
    if unset:
        for name, ratio in given_ratios.items():
            assert ratios[name] == ratio["initial"]
        assert len({ratios[n] for n in unset}) == 1
    elif any(r["flexible"] for r in given_ratios.values()):
        for name, ratio in given_ratios.items():
            if not ratio["flexible"]:
                assert ratios[name] == ratio["initial"]
