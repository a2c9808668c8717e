"""GetAllocation: what an instance reports of its pools, job types and leases."""

from __future__ import annotations

from dataclasses import replace

from ..results import AllocationReport, TypeOnModel, TypeReport
from .local import LocalState


def allocation(local: LocalState) -> AllocationReport:
    # A pause is reported while it lasts, not until the next state arrives.
    pools = {
        name: replace(local.pool(m), paused_until_ms=local.pauses.paused_until(m)) for name, m in local.models.items()
    }
    per_model: dict[str, dict[str, TypeOnModel]] = {}
    for name, model in local.models.items():
        snap = model.snapshot
        minute = model.limits.tracks_minute or not model.limits.tracks_day
        rows = {}
        for jt in local.job_types.values():
            use = model.usage[jt.name]
            use.roll(snap.minute_window, snap.day_window)
            rows[jt.name] = TypeOnModel(
                allocated_slots=local.allocated(model, jt),
                in_flight=use.in_flight,
                window_used=use.used[0] if minute else use.used[2],
                waiting=len(model.queues[jt.name]),
                overages=use.overages,
            )
        per_model[name] = rows
    job_types = {
        jt.name: TypeReport(
            current_ratio=jt.ratio,
            initial_ratio=jt.initial_ratio,
            flexible=jt.flexible,
            in_flight=jt.in_flight,
            allocated_slots=sum(per_model[m][jt.name].allocated_slots for m in local.models),
            waiting=sum(per_model[m][jt.name].waiting for m in local.models),
        )
        for jt in local.job_types.values()
    }
    count = max((m.snapshot.instances for m in local.models.values()), default=0)
    return AllocationReport(
        instance_id=local.instance_id,
        instance_count=count,
        pools=pools,
        job_types=job_types,
        model_job_types=per_model,
        memory_capacity_kb=local.memory_kb or 0,
        active_leases=len(local.leases),
    )
