"""What one token may use: the job types and models a line of the token file restricts it to.

A line is `TOKEN [job_types=A,B] [models=X,Y]`; a line with no restriction gives the token the
run of the service. The interceptor that accepts a token puts its scope in `CALLER` for the
handler, which checks the decoded request against it with `Scope.refusal`: the one check.
Messages here never quote a token, nor any part of a line that could be one.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Final


class ScopeLineError(ValueError):
    """What is wrong with the restrictions of a token line (the caller adds file and line)."""


@dataclass(frozen=True, slots=True)
class Scope:
    """None in a field: not restricted in it."""

    job_types: frozenset[str] | None = None
    models: frozenset[str] | None = None

    @property
    def restricted(self) -> bool:
        return self.job_types is not None or self.models is not None

    def refusal(self, job_type: str, models: Sequence[str]) -> str | None:
        """Why a call for `job_type` on `models` (as the request names them) is outside this scope,
        or None. A restricted token must name what it is restricted in: defaults are never assumed,
        so that an instance and the proxy (which does not know the configuration) answer alike."""
        jt_ok = self.job_types is None or job_type in self.job_types
        models_ok = self.models is None or (bool(models) and all(m in self.models for m in models))
        if jt_ok and models_ok:
            return None
        asked_jt = (
            repr(job_type)
            if job_type
            else _unnamed(self.job_types, "the configured default", "a token restricted to job types must name one")
        )
        asked_models = (
            ", ".join(models)
            if models
            else _unnamed(self.models, "the configured order", "a token restricted to models must name them")
        )
        return (
            f"this token may use job types {_listed(self.job_types)} and models {_listed(self.models)}; "
            f"the call asks for job type {asked_jt} and models {asked_models}"
        )


UNRESTRICTED: Final = Scope()
# The scope of the token the current call carries; calls with an unrestricted token never set it.
CALLER: ContextVar[Scope] = ContextVar("caller_scope", default=UNRESTRICTED)

_KEYS: Final = ("job_types", "models")


def _unnamed(allowed: frozenset[str] | None, default: str, hint: str) -> str:
    return f"none ({default if allowed is None else hint})"


def _listed(names: frozenset[str] | None) -> str:
    return "any" if names is None else ", ".join(sorted(names))


def parse_scope(fields: Sequence[str]) -> Scope:
    """The scope given by the fields after a token; raises ScopeLineError saying what is wrong."""
    found: dict[str, frozenset[str]] = {}
    for number, field in enumerate(fields, 2):
        key, equals, value = field.partition("=")
        if not equals:
            raise ScopeLineError(
                f"field {number} is not key=value (a token has no spaces; restrictions are "
                "job_types=A,B and models=X,Y)"
            )
        if key not in _KEYS:
            raise ScopeLineError(f"field {number} has an unknown key (known: {', '.join(_KEYS)})")
        if key in found:
            raise ScopeLineError(f"{key} is given twice")
        names = value.split(",")
        if not value or not all(names):
            raise ScopeLineError(f"{key} lists an empty name (give {key}=A,B with no empty entry)")
        found[key] = frozenset(names)
    return Scope(found.get("job_types"), found.get("models"))
