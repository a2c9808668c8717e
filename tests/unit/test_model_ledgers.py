"""How a cluster's per-model ledgers are routed to (rlservice.backend.ledgers.ModelLedgers), with
stand-ins that record what they are asked: a lease goes to its model's ledger by its tag, a shard
that fails fails its models only, and membership asks again only the ledgers that need it."""

from __future__ import annotations

from typing import cast

import pytest

from rlservice.backend.ledger import AcquireCall, Ledger, LedgerUnavailable, ReleaseReply
from rlservice.backend.ledgers import ModelLedgers, model_tag
from rlservice.types import Estimate, ModelLimits, Outcome, Snapshot, Usage

INSTANCE = "inst-1"


def snapshot() -> Snapshot:
    zero = (0,) * 8
    return Snapshot(1, 1000, 0, 0, 1, zero, zero, zero, 0, 0)


class Recording:
    """Answers like a model's ledger and records the calls it got."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.instance_id = INSTANCE
        self.calls: list[str] = []
        self.fail: BaseException | None = None
        self.busy = 0  # register answers None (still closing an earlier one) this many times
        self.more = False  # heartbeat says maintenance waits
        self.leaves = True

    async def register(self, models: dict[str, ModelLimits]) -> dict[str, Snapshot] | None:
        self.calls.append("register")
        assert list(models) == [self.model]
        if self.busy:
            self.busy -= 1
            return None
        return {self.model: snapshot()}

    async def heartbeat(self) -> tuple[dict[str, Snapshot], bool]:
        self.calls.append("heartbeat")
        if self.fail is not None:
            raise self.fail
        return {self.model: snapshot()}, self.more

    async def reap(self) -> bool:
        self.calls.append("reap")
        return False

    async def unregister(self) -> bool:
        self.calls.append("unregister")
        return self.leaves

    async def acquire(self, request: AcquireCall) -> str:
        self.calls.append(f"acquire {request.model}")
        return "granted"

    async def release(self, lease_id: str, outcome: Outcome, usage: Usage, provider: object = None) -> ReleaseReply:
        self.calls.append(f"release {lease_id}")
        return ReleaseReply("released")

    async def expire(self, lease_id: str) -> ReleaseReply:
        self.calls.append(f"expire {lease_id}")
        return ReleaseReply("expired")

    async def extend(self, lease_id: str, ttl_ms: int) -> tuple[str, int]:
        self.calls.append(f"extend {lease_id}")
        return "extended", ttl_ms


def ledgers(*models: str) -> tuple[ModelLedgers, dict[str, Recording]]:
    fakes = {m: Recording(m) for m in models}
    return ModelLedgers(cast(dict[str, Ledger], fakes)), fakes


def lease_id(router: ModelLedgers, model: str) -> str:
    return f"{INSTANCE}/token{router.lease_suffix(model)}"


async def test_a_lease_goes_to_its_models_ledger_by_its_tag() -> None:
    router, fakes = ledgers("a/one", "b/two")
    lease = lease_id(router, "b/two")
    assert lease.endswith("." + model_tag("b/two"))
    assert (await router.release(lease, Outcome.SUCCESS, Usage(1, 1))).status == "released"
    assert (await router.expire(lease)).status == "expired"
    assert await router.extend(lease, 500) == ("extended", 500)
    assert fakes["b/two"].calls == [f"release {lease}", f"expire {lease}", f"extend {lease}"]
    assert fakes["a/one"].calls == []


async def test_an_acquire_goes_to_its_models_ledger() -> None:
    router, fakes = ledgers("a/one", "b/two")
    call = AcquireCall("a/one", "job", "work", lease_id(router, "a/one"), Estimate(10, 1), 1000, False, False)
    assert cast(str, await router.acquire(call)) == "granted"
    assert fakes["a/one"].calls == ["acquire a/one"]
    assert fakes["b/two"].calls == []


@pytest.mark.parametrize("lease", [f"{INSTANCE}/token", f"{INSTANCE}/token.00000000", f"{INSTANCE}/token."])
async def test_a_lease_whose_tag_names_no_model_is_unknown_and_asks_no_ledger(lease: str) -> None:
    router, fakes = ledgers("a/one", "b/two")
    assert (await router.release(lease, Outcome.SUCCESS, Usage(1, 1))).status == "unknown"
    assert (await router.expire(lease)).status == "unknown"
    assert await router.extend(lease, 500) == ("unknown", 0)
    assert await router.lease_use(lease) is None
    assert all(f.calls == [] for f in fakes.values())


async def test_a_shard_down_fails_the_heartbeat_of_its_models_only() -> None:
    router, fakes = ledgers("a/one", "b/two", "c/three")
    fakes["b/two"].fail = LedgerUnavailable("connection refused")
    states, more = await router.heartbeat()
    assert set(states) == {"a/one", "c/three"}
    assert not more
    assert router.unreachable() == ["b/two"]
    fakes["b/two"].fail = None
    await router.heartbeat()
    assert router.unreachable() == []


async def test_the_heartbeat_fails_when_no_models_ledger_answers() -> None:
    router, fakes = ledgers("a/one", "b/two")
    for fake in fakes.values():
        fake.fail = LedgerUnavailable("connection refused")
    with pytest.raises(LedgerUnavailable, match="no model's ledger answers"):
        await router.heartbeat()
    assert router.unreachable() == ["a/one", "b/two"]


async def test_an_error_other_than_redis_failing_is_raised_as_is() -> None:
    router, fakes = ledgers("a/one", "b/two")
    fakes["a/one"].fail = RuntimeError("a bug")
    with pytest.raises(RuntimeError, match="a bug"):
        await router.heartbeat()


async def test_maintenance_asks_only_the_ledgers_whose_heartbeat_said_so() -> None:
    router, fakes = ledgers("a/one", "b/two")
    fakes["b/two"].more = True
    _, more = await router.heartbeat()
    assert more
    assert await router.reap() is False
    assert "reap" not in fakes["a/one"].calls
    assert fakes["b/two"].calls.count("reap") == 1
    fakes["b/two"].more = False
    _, more = await router.heartbeat()
    assert not more
    await router.reap()
    assert fakes["b/two"].calls.count("reap") == 1


async def test_register_asks_again_only_a_ledger_still_closing_an_earlier_registration() -> None:
    router, fakes = ledgers("a/one", "b/two")
    fakes["b/two"].busy = 2
    limits = {m: ModelLimits((100, 10), None) for m in fakes}
    states = await router.register(limits)
    assert states is not None and set(states) == {"a/one", "b/two"}
    assert fakes["a/one"].calls == ["register"]
    assert fakes["b/two"].calls == ["register"] * 3


async def test_unregister_asks_again_only_the_ledgers_not_yet_left() -> None:
    router, fakes = ledgers("a/one", "b/two")
    fakes["b/two"].leaves = False
    assert await router.unregister() is False
    fakes["b/two"].leaves = True
    assert await router.unregister() is True
    assert fakes["a/one"].calls == ["unregister"]
    assert fakes["b/two"].calls == ["unregister", "unregister"]
