"""The rlprovider configuration that stands in for the providers behind a service configuration:
one API key whose models carry the service's per-minute and concurrency limits, so that the
simulator refuses what the real providers would. Shared by the main job and the benchmarks."""

from __future__ import annotations

from pathlib import Path

import yaml
from rlclient.types import provider_model

from rlprovider import config as provider
from rlservice import config as service

DEFAULT_KEY = "sk-local-demo"


def provider_settings(
    settings: service.Settings,
    *,
    key: str = DEFAULT_KEY,
    seed: int = 0,
    latency_ms: tuple[int, int] = (20, 80),
    output_tokens: tuple[int, int] = (50, 400),
) -> provider.Settings:
    """Every service model `vendor/name` as the model `name` of `key` on the OpenAI-compatible API,
    with the same requests_per_minute, tokens_per_minute and max_concurrent_requests.

    Daily limits are left out: rlprovider has none, so a model limited only per day is refused
    (its provider model would have no limit). Two service models with one provider name are refused
    too: one bucket would count both."""
    models: dict[str, provider.ModelConfig] = {}
    for model_id, limits in settings.models.items():
        name = provider_model(model_id)
        if name in models:
            raise ValueError(f"models: {model_id!r} is the provider model {name!r} of another model too")
        models[name] = provider.ModelConfig(
            api="openai",
            requests_per_minute=limits.requests_per_minute,
            tokens_per_minute=limits.tokens_per_minute,
            max_concurrent_requests=limits.max_concurrent_requests,
        )
    return provider.Settings(
        seed=seed,
        latency_ms=provider.LatencyRange(min=latency_ms[0], max=latency_ms[1]),
        output_tokens=provider.OutputRange(min=output_tokens[0], max=output_tokens[1]),
        keys={key: models},
    )


def write_provider_config(path: Path, settings: provider.Settings) -> None:
    """The YAML `python -m rlprovider --config` reads; unset limits are left out, as it wants."""
    path.write_text(yaml.safe_dump(settings.model_dump(mode="json", exclude_none=True), sort_keys=False))
