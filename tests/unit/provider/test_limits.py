"""One (key, model)'s limits: all-or-nothing admission on arrival, settling at the end,
concurrency, and what a refusal reports."""

from __future__ import annotations

from typing import Any

import pytest

from rlprovider.config import ModelConfig
from rlprovider.limits import CONCURRENCY, Admitted, Dim, Level, Limiter, Refused


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(clock: FakeClock, **limits: Any) -> Limiter:
    return Limiter(ModelConfig.model_validate(limits), clock)


def test_admits_while_every_bucket_holds_enough_and_charges_them_all() -> None:
    clock = FakeClock()
    lim = limiter(clock, api="openai", requests_per_minute=3, tokens_per_minute=1200)  # 1/20 and 20 a second
    verdict = lim.admit({Dim.REQUESTS: 1, Dim.TOKENS: 200})
    assert verdict == Admitted({Dim.REQUESTS: Level(3, 2, 20.0), Dim.TOKENS: Level(1200, 1000, 10.0)})
    assert lim.in_flight == 1


def test_refuses_without_charging_and_names_the_short_bucket() -> None:
    clock = FakeClock()
    lim = limiter(clock, api="openai", requests_per_minute=3, tokens_per_minute=1200)
    for _ in range(3):
        assert isinstance(lim.admit({Dim.REQUESTS: 1, Dim.TOKENS: 200}), Admitted)
    verdict = lim.admit({Dim.REQUESTS: 1, Dim.TOKENS: 200})
    assert isinstance(verdict, Refused)
    assert (verdict.limit_name, verdict.limit, verdict.used, verdict.requested) == (Dim.REQUESTS, 3, 3, 1)
    assert verdict.wait_s == pytest.approx(20.0)
    assert not verdict.too_large
    # The tokens bucket was not charged for the refused request.
    assert verdict.levels[Dim.TOKENS].remaining == 600
    assert lim.in_flight == 3


def test_the_longest_wait_names_the_refusal() -> None:
    clock = FakeClock()
    lim = limiter(clock, api="openai", requests_per_minute=60, tokens_per_minute=600)  # 1 and 10 a second
    assert isinstance(lim.admit({Dim.REQUESTS: 1, Dim.TOKENS: 500}), Admitted)
    verdict = lim.admit({Dim.REQUESTS: 1, Dim.TOKENS: 300})
    assert isinstance(verdict, Refused)
    assert verdict.limit_name == Dim.TOKENS
    assert (verdict.used, verdict.requested) == (500, 300)
    assert verdict.wait_s == pytest.approx(20.0)  # 100 held, 200 missing at 10 a second


def test_all_or_nothing_across_input_and_output() -> None:
    clock = FakeClock()
    lim = limiter(clock, api="anthropic", input_tokens_per_minute=6000, output_tokens_per_minute=600)
    demand = {Dim.REQUESTS: 1, Dim.INPUT: 1000, Dim.OUTPUT: 700, Dim.TOKENS: 1700}
    verdict = lim.admit(demand)
    assert isinstance(verdict, Refused)
    assert verdict.limit_name == Dim.OUTPUT
    assert verdict.levels[Dim.INPUT].remaining == 6000


def test_a_request_above_capacity_is_too_large() -> None:
    clock = FakeClock()
    lim = limiter(clock, api="openai", tokens_per_minute=600)
    assert isinstance(lim.admit({Dim.REQUESTS: 1, Dim.TOKENS: 300}), Admitted)
    verdict = lim.admit({Dim.REQUESTS: 1, Dim.TOKENS: 601})
    assert isinstance(verdict, Refused)
    assert verdict.too_large
    # No wait makes it fit; the retry-after is the time until the bucket is full.
    assert verdict.wait_s == pytest.approx(30.0)


def test_settle_charges_the_actual_usage_instead_of_the_demand() -> None:
    clock = FakeClock()
    lim = limiter(clock, api="openai", requests_per_minute=60, tokens_per_minute=600)
    demand = {Dim.REQUESTS: 1, Dim.TOKENS: 500}
    assert isinstance(lim.admit(demand), Admitted)
    clock.now += 2.0  # 2 requests' worth and 20 tokens refilled meanwhile
    lim.settle(demand, {Dim.REQUESTS: 1, Dim.TOKENS: 150})
    assert lim.in_flight == 0
    verdict = lim.admit({Dim.REQUESTS: 1, Dim.TOKENS: 0})
    assert isinstance(verdict, Admitted)
    assert verdict.levels[Dim.TOKENS] == Level(600, 470, 13.0)  # 600 - 500 + 20 + 350
    assert verdict.levels[Dim.REQUESTS].remaining == 59  # full again, less this one


def test_concurrency_limit() -> None:
    clock = FakeClock()
    lim = limiter(clock, api="openai", max_concurrent_requests=2)
    demand = {Dim.REQUESTS: 1, Dim.TOKENS: 10}
    assert isinstance(lim.admit(demand), Admitted)
    assert isinstance(lim.admit(demand), Admitted)
    verdict = lim.admit(demand)
    assert isinstance(verdict, Refused)
    assert (verdict.limit_name, verdict.limit, verdict.used, verdict.levels) == (CONCURRENCY, 2, 2, {})
    lim.settle(demand, demand)
    assert isinstance(lim.admit(demand), Admitted)
    assert (lim.in_flight, lim.peak_in_flight) == (2, 2)
