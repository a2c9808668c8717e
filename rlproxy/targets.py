"""The instances behind the proxy: one channel each, their health, their instance ids and load."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

import grpc
from grpc_health.v1 import health_pb2

from rlcommon.server_options import MAX_REPLY_BYTES
from rlproto import ratelimit_pb2
from rlproxy.access import TargetAccess

RATE_LIMITER: Final = ratelimit_pb2.DESCRIPTOR.services_by_name["RateLimiter"].full_name
_ACQUIRE: Final = f"/{RATE_LIMITER}/Acquire"
_RELEASE: Final = f"/{RATE_LIMITER}/Release"
_EXTEND_LEASE: Final = f"/{RATE_LIMITER}/ExtendLease"
_GET_ALLOCATION: Final = f"/{RATE_LIMITER}/GetAllocation"
_WATCH_ALLOCATION: Final = f"/{RATE_LIMITER}/WatchAllocation"
_HEALTH_WATCH: Final = "/grpc.health.v1.Health/Watch"

_SERVING: Final = health_pb2.HealthCheckResponse.SERVING
_SERVICE_UNKNOWN: Final = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN

# How long one connection attempt may take, HTTP/2 handshake included. An instance on a busy
# machine can take well over 100 ms to send its first SETTINGS frame; a shorter timeout fails
# every attempt to reach it, over and over.
CONNECT_TIMEOUT_S: Final = 10.0
CHANNEL_OPTIONS: Final = (
    # gRPC's default reconnect backoff grows to two minutes; an instance restarted after a long
    # outage should get traffic again within about a second.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # Despite its name, gRPC takes this as the least time a connection attempt is given.
    ("grpc.min_reconnect_backoff_ms", int(CONNECT_TIMEOUT_S * 1000)),
    # The proxy passes on what an instance may send, and sends what a client may receive.
    ("grpc.max_receive_message_length", MAX_REPLY_BYTES),
)
PROBE_TIMEOUT_S: Final = 2.0
# A refused connection makes a target known down at once and a connection attempt ends within
# CONNECT_TIMEOUT_S; this also bounds a target that connects and then never answers. Past it, an
# unanswered target counts as down until it does answer, so a call with no deadline does not wait
# for it forever.
FIRST_ANSWER_TIMEOUT_S: Final = CONNECT_TIMEOUT_S
# Only paces a health stream that fails at once (say, a target without a Health service); after a
# disconnect the next Watch waits for the channel to reconnect by itself.
_WATCH_RETRY_S: Final = 0.1

HealthListener = Callable[["Target"], Awaitable[None]]


def never_reached(err: grpc.aio.AioRpcError) -> bool:
    """True when a call failed for want of a connection, so the target cannot have run it.

    Any other UNAVAILABLE (a connection reset mid-call, or the instance's own answer) may come after
    the instance acted on the call, so it is not safe to try elsewhere.
    """
    return err.code() == grpc.StatusCode.UNAVAILABLE and (err.details() or "").startswith(
        ("failed to connect to all addresses", "DNS resolution failed")
    )


class _UnknownService(Exception):
    pass


class Target:
    """One instance. Plain attributes: the event loop is the only writer, so no locks are needed."""

    def __init__(self, address: str, access: TargetAccess) -> None:
        self.address = address
        self.channel = access.channel(address, CHANNEL_OPTIONS)
        self.acquire = self.channel.unary_unary(_ACQUIRE, None, None)
        self.release = self.channel.unary_unary(_RELEASE, None, None)
        self.extend_lease = self.channel.unary_unary(_EXTEND_LEASE, None, None)
        self.get_allocation = self.channel.unary_unary(_GET_ALLOCATION, None, None)
        self.watch_allocation = self.channel.unary_stream(_WATCH_ALLOCATION, None, None)
        self.probe = self.channel.unary_unary(
            _GET_ALLOCATION,
            ratelimit_pb2.GetAllocationRequest.SerializeToString,
            ratelimit_pb2.GetAllocationResponse.FromString,
        )
        self.watch = self.channel.unary_stream(
            _HEALTH_WATCH,
            health_pb2.HealthCheckRequest.SerializeToString,
            health_pb2.HealthCheckResponse.FromString,
        )
        self.serving = False
        # False until the target's first health answer, or until it is known to be down: calls
        # wait for an unanswered target rather than fail for want of it.
        self.answered = False
        self.status = "connecting, no health answer yet"
        self.instance_id: str | None = None
        # Bumped on every disconnect so that a probe answered by an older connection is ignored.
        self.epoch = 0
        self.open_leases = 0
        self.lease_delta = 0
        self.acquiring = 0

    @property
    def load(self) -> int:
        return self.open_leases + self.acquiring

    def lease_granted(self) -> None:
        self.open_leases += 1
        self.lease_delta += 1

    def lease_released(self) -> None:
        if self.open_leases > 0:
            self.open_leases -= 1
        self.lease_delta -= 1

    def describe(self) -> str:
        if not self.serving and self.channel.get_state() == grpc.ChannelConnectivity.TRANSIENT_FAILURE:
            return f"{self.address} (unreachable: cannot connect)"
        return f"{self.address} ({self.status})"


class TargetPool:
    """Keeps every target's health current by a grpc.health.v1 Watch stream per target.

    A target's instance id is learned with GetAllocation when it turns SERVING and forgotten when
    its connection drops, so an instance restarted on the same address is never taken for the old
    one.
    """

    def __init__(
        self,
        addresses: Sequence[str],
        on_health: HealthListener,
        first_answer_timeout_s: float,
        access: TargetAccess,
    ) -> None:
        """`on_health` hears of every target whose serving state flips."""
        if not addresses:
            raise ValueError("at least one target is needed")
        self.targets: tuple[Target, ...] = tuple(Target(a, access) for a in addresses)
        self._access = access
        self._on_health = on_health
        self._first_answer_timeout_s = first_answer_timeout_s
        self._by_instance: dict[str, Target] = {}
        self._lookups: dict[str, asyncio.Task[None]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._overdue: asyncio.TimerHandle | None = None
        # Resolved, then dropped, at the next change of any target's state; created only when a
        # call waits, so the health watchers pay nothing while none does.
        self._changed: asyncio.Future[None] | None = None

    @property
    def healthy(self) -> bool:
        return any(t.serving for t in self.targets)

    @property
    def pending(self) -> bool:
        """True while some target has neither answered its first health check nor failed."""
        return not all(t.answered for t in self.targets)

    def start(self, load_poll_s: float | None = None) -> None:
        self._tasks = [asyncio.create_task(self._watch(t)) for t in self.targets]
        if load_poll_s is not None:
            self._tasks.append(asyncio.create_task(self._poll_loads(load_poll_s)))
        self._overdue = asyncio.get_running_loop().call_later(self._first_answer_timeout_s, self._give_up_waiting)

    async def next_change(self, timeout: float | None) -> None:
        """Returns at the next change of any target's state, or after `timeout` seconds."""
        if self._changed is None:
            self._changed = asyncio.get_running_loop().create_future()
        await asyncio.wait((self._changed,), timeout=timeout)

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set_result(None)
            self._changed = None

    def _give_up_waiting(self) -> None:
        late = [t for t in self.targets if not t.answered]
        for target in late:
            target.answered = True
            target.status = f"no health answer within {self._first_answer_timeout_s:g} s"
        if late:
            self._notify()

    async def close(self) -> None:
        if self._overdue is not None:
            self._overdue.cancel()
        for task in (*self._tasks, *self._lookups.values()):
            task.cancel()
        await asyncio.gather(*self._tasks, *self._lookups.values(), return_exceptions=True)
        await asyncio.gather(*(t.channel.close(None) for t in self.targets))

    def describe(self) -> str:
        return ", ".join(t.describe() for t in self.targets)

    def known(self, instance_id: str) -> Target | None:
        return self._by_instance.get(instance_id)

    async def find(self, instance_id: str) -> Target | None:
        """The target serving `instance_id`, asking every target again once if it is unknown."""
        target = self._by_instance.get(instance_id)
        if target is not None:
            return target
        lookup = self._lookups.get(instance_id)
        if lookup is None:
            lookup = asyncio.create_task(self._probe_all())
            self._lookups[instance_id] = lookup
            lookup.add_done_callback(lambda _: self._lookups.pop(instance_id, None))
        # Shielded: one caller giving up must not cancel the lookup others are waiting for.
        await asyncio.shield(lookup)
        return self._by_instance.get(instance_id)

    async def _probe_all(self) -> None:
        await asyncio.gather(*(self._learn(t) for t in self.targets))

    async def _learn(self, target: Target) -> None:
        epoch = target.epoch
        delta = target.lease_delta
        try:
            reply = await target.probe(
                ratelimit_pb2.GetAllocationRequest(), timeout=PROBE_TIMEOUT_S, metadata=self._access.metadata()
            )
        except grpc.aio.AioRpcError:
            return
        if target.epoch != epoch or not reply.instance_id:
            return
        if target.instance_id != reply.instance_id:
            self._forget(target)
            target.instance_id = reply.instance_id
            self._by_instance[reply.instance_id] = target
        target.open_leases = max(0, reply.active_leases + target.lease_delta - delta)

    def _forget(self, target: Target) -> None:
        if target.instance_id is not None and self._by_instance.get(target.instance_id) is target:
            del self._by_instance[target.instance_id]
        target.instance_id = None

    async def _watch(self, target: Target) -> None:
        while True:
            # Until the first answer, a connection that fails must fail the Watch at once, so that
            # the target is known down; afterwards the Watch waits for the channel to reconnect.
            wait_for_ready = target.answered
            try:
                reason = await self._follow(target, RATE_LIMITER, wait_for_ready)
            except _UnknownService:
                reason = await self._follow(target, "", wait_for_ready)
            target.epoch += 1
            self._forget(target)
            target.status = f"unreachable: {reason}"
            await self._set_serving(target, False)
            await asyncio.sleep(_WATCH_RETRY_S)

    async def _follow(self, target: Target, service: str, wait_for_ready: bool) -> str:
        """Applies one Watch stream's statuses until it breaks, returning why.

        Raises _UnknownService when the target does not know `service` by name, so that the caller
        can fall back to the server's overall status ("").
        """
        call = target.watch(health_pb2.HealthCheckRequest(service=service), wait_for_ready=wait_for_ready)
        try:
            async for reply in call:
                if reply.status == _SERVICE_UNKNOWN and service:
                    raise _UnknownService(service)
                serving = reply.status == _SERVING
                if serving and target.instance_id is None:
                    await self._learn(target)
                # Only now: until the target routes, its description must not claim SERVING.
                target.status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
                await self._set_serving(target, serving)
        except grpc.aio.AioRpcError as err:
            return f"{err.code().name}: {err.details()}"
        finally:
            call.cancel()
        return "health stream ended"

    async def _set_serving(self, target: Target, serving: bool) -> None:
        first = not target.answered
        target.answered = True
        if target.serving != serving:
            target.serving = serving
            self._notify()
            await self._on_health(target)
        elif first:
            self._notify()

    async def _poll_loads(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            await asyncio.gather(*(self._learn(t) for t in self.targets if t.serving))
