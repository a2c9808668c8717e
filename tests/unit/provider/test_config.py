"""The provider's YAML schema: defaults, and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlprovider.config import ConfigError, load_settings, parse_settings

EXAMPLE = """
seed: 7
latency_ms: {min: 20, max: 80}
output_tokens: {min: 50, max: 400}
default_max_tokens: 1024
keys:
  sk-local-1:
    gpt-5.2:
      api: openai
      requests_per_minute: 500
      tokens_per_minute: 500000
      max_concurrent_requests: 200
      cached_share: 0.0
    claude-sonnet-4-5:
      api: anthropic
      requests_per_minute: 50
      input_tokens_per_minute: 30000
      output_tokens_per_minute: 8000
      latency_ms: {min: 0, max: 0}
"""


def test_the_documented_example_loads(tmp_path: Path) -> None:
    path = tmp_path / "provider.yaml"
    path.write_text(EXAMPLE)
    settings = load_settings(path)
    claude = settings.keys["sk-local-1"]["claude-sonnet-4-5"]
    assert claude.output_tokens_per_minute == 8000
    assert (settings.latency_for(claude).min, settings.latency_for(claude).max) == (0, 0)
    gpt = settings.keys["sk-local-1"]["gpt-5.2"]
    assert (settings.latency_for(gpt).min, settings.output_for(gpt).max) == (20, 400)


def _error(data: object) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_settings(data, "provider.yaml")
    return str(caught.value)


@pytest.mark.parametrize(
    ("model", "field"),
    [
        ({"api": "openai"}, "keys.k.m: a model needs at least one limit"),
        ({"api": "openai", "requests_per_minute": 0}, "keys.k.m.requests_per_minute: Input should be greater than 0"),
        ({"api": "openai", "input_tokens_per_minute": 5}, "input_tokens_per_minute applies to api: anthropic only"),
        ({"api": "gemini", "requests_per_minute": 5}, "keys.k.m.api"),
        ({"api": "openai", "requests_per_minute": 5, "cached_share": 1.5}, "keys.k.m.cached_share"),
        ({"api": "openai", "requests_per_minute": 5, "latency_ms": {"min": 9, "max": 3}}, "keys.k.m.latency_ms"),
        ({"api": "openai", "requests_per_minute": 5, "rpm": 5}, "keys.k.m.rpm: Extra inputs are not permitted"),
    ],
)
def test_errors_name_the_field(model: dict[str, object], field: str) -> None:
    assert field in _error({"keys": {"k": {"m": model}}})


def test_keys_are_required_and_usable_in_a_header() -> None:
    assert "keys: Field required" in _error({"seed": 1})
    assert "keys: the key 'sk bad'" in _error({"keys": {"sk bad": {"m": {"api": "openai", "requests_per_minute": 1}}}})
    assert "output_tokens.min" in _error({"output_tokens": {"min": 0, "max": 3}, "keys": {}})
