"""Pool slot calculation for every slotCalc-* preset with 1, 2 and 3 instances (SPEC §5, PRESETS.md)."""

from __future__ import annotations

import pytest

from .harness import Harness, eventually

# preset -> model -> [(total_slots, {pool field: value}) for N = 1, 2, 3]
EXPECTED: dict[str, dict[str, list[tuple[int, dict[str, int]]]]] = {
    "slotCalc-tpm": {
        "model-alpha": [
            (13, {"tokens_per_minute": 100_000}),
            (6, {"tokens_per_minute": 50_000}),
            (4, {"tokens_per_minute": 33_333}),
        ]
    },
    "slotCalc-rpm": {
        "model-beta": [
            (166, {"requests_per_minute": 500}),
            (83, {"requests_per_minute": 250}),
            (55, {"requests_per_minute": 166}),
        ]
    },
    "slotCalc-tpd": {
        "model-tpd": [
            (133, {"tokens_per_day": 1_000_000}),
            (66, {"tokens_per_day": 500_000}),
            (44, {"tokens_per_day": 333_333}),
        ]
    },
    "slotCalc-rpd": {
        "model-rpd": [
            (3333, {"requests_per_day": 10_000}),
            (1666, {"requests_per_day": 5000}),
            (1111, {"requests_per_day": 3333}),
        ]
    },
    "slotCalc-concurrent": {
        "model-gamma": [(100, {"max_concurrent": 100}), (50, {"max_concurrent": 50}), (33, {"max_concurrent": 33})]
    },
    "slotCalc-tpm-rpm": {
        "model-delta": [
            (10, {"tokens_per_minute": 100_000, "requests_per_minute": 50}),
            (5, {"tokens_per_minute": 50_000, "requests_per_minute": 25}),
            (3, {"tokens_per_minute": 33_333, "requests_per_minute": 16}),
        ]
    },
    "slotCalc-multi-model": {
        "model-tpm": [(10, {}), (5, {}), (3, {})],
        "model-concurrent": [(50, {}), (25, {}), (16, {})],
    },
    "slotCalc-memory": {"test-model": [(10_000, {}), (5000, {}), (3333, {})]},
    "slotCalculation": {"model-alpha": [(13, {}), (6, {}), (4, {})], "model-beta": [(13, {}), (6, {}), (4, {})]},
    "instanceScaling": {"scale-model": [(10, {}), (5, {}), (3, {})]},
}


@pytest.mark.parametrize("preset", sorted(EXPECTED))
async def test_pool_slots_with_one_two_and_three_instances(harness: Harness, preset: str) -> None:
    ports: list[int] = []
    for n in (1, 2, 3):
        ports.append(harness.boot_instance(0, preset).port)
        for port in ports:

            async def matches(port: int = port, n: int = n) -> bool:
                alloc = (await harness.allocation(port)).allocation
                if alloc.instance_count != n:
                    return False
                for model, rows in EXPECTED[preset].items():
                    slots, fields = rows[n - 1]
                    pool = alloc.pools[model]
                    if pool.total_slots != slots or any(getattr(pool, f) != v for f, v in fields.items()):
                        return False
                return True

            await eventually(matches, what=f"{preset}: pools for N={n} on port {port}")


async def test_unlimited_dimensions_are_left_unset(harness: Harness) -> None:
    port = harness.boot_instance(0, "slotCalc-concurrent").port
    pool = (await harness.allocation(port)).allocation.pools["model-gamma"]
    assert pool.HasField("max_concurrent")
    assert not pool.HasField("tokens_per_minute")
    assert not pool.HasField("requests_per_day")


async def test_memory_decides_the_slots_of_memory_heavy_types(harness: Harness) -> None:
    port = harness.boot_instance(0, "slotCalc-memory").port
    alloc = await harness.allocation(port)
    rows = alloc.model_job_types["test-model"].job_types
    assert alloc.memory_capacity_kb == 102_400
    assert rows["heavyMemoryJob"].allocated_slots == 5
    assert rows["lightMemoryJob"].allocated_slots == 50
