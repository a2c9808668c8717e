"""What /stats reports of one (key, model): totals and per-minute counts of accepted and refused
requests and their tokens."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .calls import Call, JsonObject, Outcome


@dataclass
class Tally:
    requests: int = 0
    tokens: int = 0
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0

    def add(self, input_tokens: int, cached_tokens: int, output_tokens: int) -> None:
        self.requests += 1
        self.tokens += input_tokens + output_tokens
        self.input_tokens += input_tokens
        self.cached_tokens += cached_tokens
        self.output_tokens += output_tokens


@dataclass
class Minute:
    accepted: Tally = field(default_factory=Tally)
    refused: Tally = field(default_factory=Tally)


def minute_of(unix_ms: int) -> int:
    return unix_ms // 60_000


class ModelStats:
    """Accepted requests count when they end, with the usage they were charged; refused ones when
    they are refused, with what they asked for (the prompt and max_tokens)."""

    def __init__(self) -> None:
        self._accepted = Tally()
        self._refused = Tally()
        self._refused_by: dict[str, int] = {}
        self._minutes: dict[int, Minute] = {}

    def accept(self, outcome: Outcome, unix_ms: int) -> None:
        counts = (outcome.call.prompt_tokens, outcome.cached_tokens, outcome.output_tokens)
        self._accepted.add(*counts)
        self._minute(unix_ms).accepted.add(*counts)

    def refuse(self, call: Call, cached_tokens: int, limit_name: str, unix_ms: int) -> None:
        counts = (call.prompt_tokens, cached_tokens, call.max_tokens)
        self._refused.add(*counts)
        self._minute(unix_ms).refused.add(*counts)
        self._refused_by[limit_name] = self._refused_by.get(limit_name, 0) + 1

    def snapshot(self) -> JsonObject:
        return {
            "accepted": asdict(self._accepted),
            "refused": asdict(self._refused),
            "refused_by": dict(self._refused_by),
            # JSON keys are strings; sorted so that a reader sees the minutes in order.
            "minutes": {str(m): asdict(self._minutes[m]) for m in sorted(self._minutes)},
        }

    def _minute(self, unix_ms: int) -> Minute:
        return self._minutes.setdefault(minute_of(unix_ms), Minute())
