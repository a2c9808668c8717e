"""Input and output tokens limited apart (SPEC §12): the worked example of docs/capacity.md ("Token
kinds"), on the model and job types of tests/e2e/presets/token-kinds.yaml."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import pytest

from rlservice.capacity.pools import Pool, compute_pool
from rlservice.capacity.rolling import first_fit_ms, refilled
from rlservice.capacity.shares import TypeUse, may_take
from rlservice.config import Settings, load_settings
from rlservice.types import NO_AMOUNTS, Amounts, Estimate, Snapshot, Usage

from .helpers import model_limits, snapshot

PRESET = Path(__file__).resolve().parents[1] / "e2e" / "presets" / "token-kinds.yaml"
MODEL = "model-kinds"
# What a pool's rate dimensions read: tokens, input and output tokens per minute.
TPM, ITPM, OTPM = 0, 4, 5


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings(PRESET)


def held(settings: Settings, *jobs: str) -> Amounts:
    """What these open jobs hold, in RATE_DIMS order."""
    total = list(NO_AMOUNTS)
    for name in jobs:
        for d, amount in enumerate(settings.job_types[name].estimate().per_dim()):
            total[d] += amount
    return tuple(total)


def pool_of(settings: Settings, settled: Amounts = NO_AMOUNTS, own: Amounts = NO_AMOUNTS) -> Pool:
    snap = snapshot(2, settled=settled, open=own, own_open=own)
    return compute_pool(model_limits(settings, MODEL), snap, settings.average_estimates())


def rates(pool: Pool) -> tuple[int | None, ...]:
    return pool.rates[TPM], pool.rates[ITPM], pool.rates[OTPM]


def fits(settings: Settings, pool: Pool, job: str) -> bool:
    # The job-type shares are out of the way (min_job_type_capacity 100): the instance's room decides.
    return may_take(pool, 0.5, TypeUse(NO_AMOUNTS, 0, 0), settings.job_types[job].estimate(), 100, None)


def test_estimates_and_averages(settings: Settings) -> None:
    assert settings.job_types["reading"].estimate() == Estimate(21_000, 1, 20_000, 1_000)
    assert settings.job_types["writing"].estimate() == Estimate(5_000, 1, 1_000, 4_000)
    assert settings.average_estimates() == (Fraction(13_000), Fraction(1), Fraction(10_500), Fraction(2_500))


def test_a_fresh_minute(settings: Settings) -> None:
    pool = pool_of(settings)
    assert rates(pool) == (500_000, 50_000, 10_000)
    # min(500 000 / 13 000 = 38, 50 000 / 10 500 = 4, 10 000 / 2 500 = 4)
    assert pool.total_slots == 4


def test_reading_binds_on_input_and_writing_on_output(settings: Settings) -> None:
    two_reading = pool_of(settings, own=held(settings, "reading", "reading"))
    assert rates(two_reading) == (500_000, 50_000, 10_000)
    assert (two_reading.room[ITPM], two_reading.room[OTPM]) == (10_000, 8_000)
    assert not fits(settings, two_reading, "reading")
    assert fits(settings, two_reading, "writing")
    all_four = pool_of(settings, own=held(settings, "reading", "reading", "writing", "writing"))
    assert (all_four.room[ITPM], all_four.room[OTPM]) == (8_000, 0)
    assert not fits(settings, all_four, "writing")
    assert not fits(settings, all_four, "reading")


def test_releases_settle_each_kind(settings: Settings) -> None:
    # The two reading jobs used 5 000 / 500 and 18 000 / 3 000 (input / output): the second as many
    # tokens as estimated, but 2 000 output tokens over its estimate.
    used = [Usage(1, 5_000, 500).spent(True), Usage(1, 18_000, 3_000).spent(True)]
    settled = tuple(sum(u.per_dim()[d] for u in used) for d in range(len(NO_AMOUNTS)))
    assert (settled[TPM], settled[ITPM], settled[OTPM]) == (26_500, 23_000, 3_500)
    pool = pool_of(settings, settled, own=held(settings, "writing", "writing"))
    assert rates(pool) == (486_750, 38_500, 8_250)
    # min(486 750 / 13 000 = 37, 38 500 / 10 500 = 3, 8 250 / 2 500 = 3)
    assert pool.total_slots == 3
    assert (pool.room[ITPM], pool.room[OTPM]) == (36_500, 250)


def test_cached_tokens_count_as_input_unless_the_model_says_not(settings: Settings) -> None:
    usage = Usage(request_count=1, input_tokens=2_000, output_tokens=500, cached_tokens=10_000)
    assert usage.spent(settings.models[MODEL].cached_tokens_count_as_input) == Estimate(12_500, 1, 12_000, 500)
    assert usage.spent(settings.models["model-kinds-nocache"].cached_tokens_count_as_input) == Estimate(
        12_500, 1, 2_000, 500
    )
    counted = pool_of(settings, Estimate(12_500, 1, 12_000, 500).per_dim())
    left_out = pool_of(settings, Estimate(12_500, 1, 2_000, 500).per_dim())
    assert (counted.rates[ITPM], left_out.rates[ITPM]) == (44_000, 49_000)


def test_rolling_buckets_refill_each_kind_at_its_own_rate(settings: Settings) -> None:
    # ITPM 100 000 and OTPM 20 000 refill 1 666.7 and 333.3 tokens a second. Both buckets empty
    # (settled is limit - level - open), one instance.
    lim = replace(model_limits(settings, MODEL), rolling=True)
    empty = replace(snapshot(1, settled=(0, 0, 0, 0, 100_000, 20_000)), now_ms=0)
    later = refilled(lim, empty, 6_000)
    assert (later.settled[ITPM], later.settled[OTPM]) == (90_000, 18_000)
    # A writing job (4 000 output) fits once the output bucket holds 4 000: after 12 s.
    writing = settings.job_types["writing"].estimate()

    def fits(snap: Snapshot) -> bool:
        pool = compute_pool(lim, snap, settings.average_estimates())
        return may_take(pool, 0.5, TypeUse(NO_AMOUNTS, 0, 0), writing, 100, None)

    assert first_fit_ms(lim, empty, fits) == 12_000
