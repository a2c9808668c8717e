"""What the limiter answers: grants, releases and the allocation report, free of gRPC types."""

from __future__ import annotations

from dataclasses import dataclass

from .backend.ledger import ClosedLease
from .capacity.pools import Pool


@dataclass(frozen=True, slots=True)
class Grant:
    lease_id: str
    model: str
    models_tried: tuple[str, ...]
    tokens: int
    requests: int
    waited_ms: int
    expires_at_ms: int
    instance_id: str


@dataclass(frozen=True, slots=True)
class ReleaseResult:
    closed: ClosedLease
    cost_usd: float


@dataclass(frozen=True, slots=True)
class TypeOnModel:
    allocated_slots: int
    in_flight: int
    window_used: int
    waiting: int
    overages: int


@dataclass(frozen=True, slots=True)
class TypeReport:
    current_ratio: float
    initial_ratio: float
    flexible: bool
    in_flight: int
    allocated_slots: int
    waiting: int


@dataclass(frozen=True, slots=True)
class AllocationReport:
    instance_id: str
    instance_count: int
    pools: dict[str, Pool]
    job_types: dict[str, TypeReport]
    model_job_types: dict[str, dict[str, TypeOnModel]]
    memory_capacity_kb: int
    active_leases: int
