"""The rlprovider configuration derived from a service configuration (rllocal.provider_config)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rllocal.provider_config import DEFAULT_KEY, provider_settings, write_provider_config
from rlprovider.config import load_settings as load_provider_settings
from rlservice.config import Settings, load_settings, parse_settings, preset_path


def test_the_default_preset_becomes_one_key_with_its_models_limits(tmp_path: Path) -> None:
    derived = provider_settings(
        load_settings(preset_path("default")), seed=3, latency_ms=(200, 3000), output_tokens=(50, 4000)
    )
    path = tmp_path / "provider.yaml"
    write_provider_config(path, derived)
    # What rlprovider itself reads back from the file, not only what was built.
    settings = load_provider_settings(path)
    assert list(settings.keys) == [DEFAULT_KEY]
    models = settings.keys[DEFAULT_KEY]
    assert list(models) == ["gpt-5.2", "grok-4.1-fast", "gpt-oss-20b"]
    limits = {
        name: (m.api, m.requests_per_minute, m.tokens_per_minute, m.max_concurrent_requests, m.cached_share)
        for name, m in models.items()
    }
    assert limits == {
        "gpt-5.2": ("openai", 500, 500_000, None, 0.0),
        "grok-4.1-fast": ("openai", 480, 4_000_000, None, 0.0),
        "gpt-oss-20b": ("openai", None, None, 200, 0.0),
    }
    assert all(m.input_tokens_per_minute is None and m.output_tokens_per_minute is None for m in models.values())
    assert all(m.latency_ms is None and m.output_tokens is None for m in models.values())
    assert settings.seed == 3
    assert (settings.latency_ms.min, settings.latency_ms.max) == (200, 3000)
    assert (settings.output_tokens.min, settings.output_tokens.max) == (50, 4000)


def service(models: dict[str, dict[str, int]]) -> Settings:
    return parse_settings({"models": models, "job_types": {"t": {"estimated_tokens": 100}}}, "test")


def test_only_the_first_slash_separates_the_vendor() -> None:
    derived = provider_settings(service({"deepinfra/openai/gpt-oss-120b": {"requests_per_minute": 60}}))
    assert list(derived.keys[DEFAULT_KEY]) == ["openai/gpt-oss-120b"]


def test_two_models_with_one_provider_name_are_refused() -> None:
    models = {"openai/gpt-oss-20b": {"requests_per_minute": 60}, "deepinfra/gpt-oss-20b": {"requests_per_minute": 60}}
    with pytest.raises(ValueError, match="deepinfra/gpt-oss-20b"):
        provider_settings(service(models))


def test_a_model_limited_only_per_day_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one limit"):
        provider_settings(service({"openai/gpt-5.2": {"tokens_per_day": 1_000_000}}))
