"""Routing policies, without a network."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from rlproxy.leases import issuing_instance
from rlproxy.policies import LeastLoaded, Policy, RoundRobin, Weighted, make_policy


@dataclass
class Node:
    serving: bool = True
    load: int = 0


def _picks(policy: Policy, nodes: list[Node], n: int) -> list[int]:
    return [policy.pick(nodes) for _ in range(n)]


def test_round_robin_cycles_and_skips_unhealthy() -> None:
    nodes = [Node(), Node(), Node()]
    policy = RoundRobin()
    assert _picks(policy, nodes, 6) == [0, 1, 2, 0, 1, 2]
    nodes[1].serving = False
    assert _picks(policy, nodes, 4) == [0, 2, 0, 2]
    nodes[1].serving = True
    assert sorted(_picks(policy, nodes, 3)) == [0, 1, 2]


def test_round_robin_honours_exclusions_and_reports_none() -> None:
    nodes = [Node(), Node()]
    policy = RoundRobin()
    assert policy.pick(nodes, excluded=0b01) == 1
    assert policy.pick(nodes, excluded=0b11) == -1
    assert policy.pick([Node(serving=False), Node(serving=False)]) == -1


@pytest.mark.parametrize("weights", [[26, 25], [3, 1], [1, 1], [5, 3, 2], [7, 1, 1, 13]])
def test_weighted_split_stays_within_one_call_of_the_weights(weights: list[int]) -> None:
    nodes = [Node() for _ in weights]
    policy = Weighted(weights)
    counts = [0] * len(weights)
    total = sum(weights)
    for n in range(1, 1001):
        counts[policy.pick(nodes)] += 1
        for i, w in enumerate(weights):
            assert abs(counts[i] - n * w / total) < 1, (n, counts)
    assert list(policy.counts) == counts


def test_weighted_26_25_over_1000_acquires() -> None:
    nodes = [Node(), Node()]
    policy = Weighted([26, 25])
    picks = _picks(policy, nodes, 1000)
    assert (picks.count(0), picks.count(1)) in ((510, 490), (509, 491))


def test_weighted_random_weights_stay_within_one_call() -> None:
    rng = random.Random(7)
    for _ in range(50):
        weights = [rng.randint(1, 40) for _ in range(rng.randint(2, 6))]
        nodes = [Node() for _ in weights]
        policy = Weighted(weights)
        picks = _picks(policy, nodes, 1000)
        for i, w in enumerate(weights):
            assert abs(picks.count(i) - 1000 * w / sum(weights)) < 1, weights


def test_weighted_is_deterministic_on_ties() -> None:
    assert _picks(Weighted([1, 1, 1]), [Node(), Node(), Node()], 6) == [0, 1, 2, 0, 1, 2]


def test_weighted_skips_unhealthy_and_does_not_flood_a_returning_target() -> None:
    nodes = [Node(), Node()]
    policy = Weighted([1, 1])
    _picks(policy, nodes, 10)
    nodes[0].serving = False
    assert set(_picks(policy, nodes, 100)) == {1}
    nodes[0].serving = True
    picks = _picks(policy, nodes, 20)
    assert abs(picks.count(0) - picks.count(1)) <= 2


def test_weighted_unpick_returns_the_share() -> None:
    nodes = [Node(), Node()]
    policy = Weighted([1, 1])
    first = policy.pick(nodes)
    policy.unpick(first)
    second = policy.pick(nodes, excluded=1 << first)
    assert second != first
    assert policy.pick(nodes) == first


def test_least_loaded_picks_fewest_and_rotates_ties() -> None:
    nodes = [Node(load=3), Node(load=1), Node(load=2)]
    policy = LeastLoaded()
    assert policy.pick(nodes) == 1
    nodes[1].load = 5
    assert policy.pick(nodes) == 2
    idle = [Node(), Node(), Node()]
    assert sorted(_picks(LeastLoaded(), idle, 3)) == [0, 1, 2]


def test_least_loaded_skips_unhealthy_and_excluded() -> None:
    nodes = [Node(load=0, serving=False), Node(load=4), Node(load=9)]
    policy = LeastLoaded()
    assert policy.pick(nodes) == 1
    assert policy.pick(nodes, excluded=0b010) == 2
    assert policy.pick(nodes, excluded=0b110) == -1


def test_make_policy_validates() -> None:
    assert isinstance(make_policy("round_robin", 2, None), RoundRobin)
    assert isinstance(make_policy("least_loaded", 2, None), LeastLoaded)
    assert isinstance(make_policy("weighted", 2, [2, 1]), Weighted)
    with pytest.raises(ValueError):
        make_policy("weighted", 3, [2, 1])
    with pytest.raises(ValueError):
        make_policy("random", 2, None)
    with pytest.raises(ValueError):
        Weighted([1, 0])


@pytest.mark.parametrize(
    ("lease_id", "instance"),
    [
        ("inst-a/tok", "inst-a"),
        ("host/1234/tok", "host/1234"),
        ("a/b/", None),
        ("", None),
        ("nosep", None),
        ("/tok", None),
    ],
)
def test_issuing_instance_splits_on_the_last_slash(lease_id: str, instance: str | None) -> None:
    assert issuing_instance(lease_id) == instance
