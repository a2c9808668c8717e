"""Validated settings: the YAML schema of docs/provider.md, loaded once at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rlcommon.config_files import ConfigError as ConfigError
from rlcommon.config_files import load_model, parse_model

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]

ApiName = Literal["openai", "anthropic"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LatencyRange(_Strict):
    """Milliseconds, drawn uniformly."""

    min: NonNegativeInt
    max: NonNegativeInt

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min > self.max:
            raise ValueError("min must not exceed max")
        return self


class OutputRange(_Strict):
    """Completion tokens, drawn uniformly; a real answer holds at least one token."""

    min: PositiveInt
    max: PositiveInt

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min > self.max:
            raise ValueError("min must not exceed max")
        return self


# Limits an api's providers do not state would never be enforced the way callers expect.
_ANTHROPIC_ONLY = ("input_tokens_per_minute", "output_tokens_per_minute")


class ModelConfig(_Strict):
    api: ApiName
    requests_per_minute: PositiveInt | None = None
    tokens_per_minute: PositiveInt | None = None
    input_tokens_per_minute: PositiveInt | None = None
    output_tokens_per_minute: PositiveInt | None = None
    max_concurrent_requests: PositiveInt | None = None
    cached_share: Annotated[float, Field(ge=0, le=1)] = 0.0
    latency_ms: LatencyRange | None = None
    output_tokens: OutputRange | None = None

    @model_validator(mode="after")
    def _limits(self) -> Self:
        if self.api == "openai":
            for name in _ANTHROPIC_ONLY:
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} applies to api: anthropic only; OpenAI states tokens_per_minute")
        if not any(
            (
                self.requests_per_minute,
                self.tokens_per_minute,
                self.input_tokens_per_minute,
                self.output_tokens_per_minute,
                self.max_concurrent_requests,
            )
        ):
            raise ValueError(
                "a model needs at least one limit: requests_per_minute, tokens_per_minute, "
                "input_tokens_per_minute, output_tokens_per_minute or max_concurrent_requests"
            )
        return self


class Settings(_Strict):
    seed: int = 0
    latency_ms: LatencyRange = LatencyRange(min=20, max=80)
    output_tokens: OutputRange = OutputRange(min=50, max=400)
    default_max_tokens: PositiveInt = 1024
    keys: Annotated[dict[str, Annotated[dict[str, ModelConfig], Field(min_length=1)]], Field(min_length=1)]

    @model_validator(mode="after")
    def _names(self) -> Self:
        for key, models in self.keys.items():
            # The key travels in a header: no spaces or control characters survive that.
            if not key or not key.isprintable() or any(c.isspace() for c in key):
                raise ValueError(f"keys: the key {key!r} is empty or holds a space or a control character")
            for model in models:
                if not model or not model.isprintable():
                    raise ValueError(f"keys.{key}: the model name {model!r} is empty or holds a control character")
        return self

    def latency_for(self, model: ModelConfig) -> LatencyRange:
        return model.latency_ms or self.latency_ms

    def output_for(self, model: ModelConfig) -> OutputRange:
        return model.output_tokens or self.output_tokens


def parse_settings(data: object, source: str) -> Settings:
    return parse_model(Settings, data, source)


def load_settings(path: Path) -> Settings:
    return load_model(Settings, path)
