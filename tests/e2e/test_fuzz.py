"""Random calls, on two instances and through the proxy in front of them, with an unrestricted, a
scoped, an unknown and no token: Acquires with odd job types, models, ttls and deadlines, Releases
with random outcomes, usage and provider feedback, ExtendLease, GetAllocation, WatchAllocation
storms past the cap and bytes that do not parse. Every answer is a documented code with a message;
afterwards nothing is left in flight or waiting, every stream slot is free and all three processes
are SERVING."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from rllocal.processes import free_port
from rlproto import ratelimit_pb2 as pb

from .fuzz_calls import (
    INSTANCES,
    MAX_WATCH_STREAMS,
    MODELS,
    OPS,
    REFUSED,
    SCOPED,
    TOKEN_LINES,
    UNRESTRICTED,
    Answer,
    Cluster,
    Op,
    first_message,
    metadata,
    operations,
)
from .harness import Harness, eventually, health
from .pki import with_token
from .test_auth import assert_not_logged, auth_args
from .test_metrics import scraped, value

T = TypeVar("T")
Code = grpc.StatusCode

# What an answer may be (docs/operations.md); CANCELLED only for a call this test cancelled.
DOCUMENTED = frozenset(
    {
        Code.OK,
        Code.INVALID_ARGUMENT,
        Code.NOT_FOUND,
        Code.RESOURCE_EXHAUSTED,
        Code.UNAVAILABLE,
        Code.DEADLINE_EXCEEDED,
        Code.PERMISSION_DENIED,
        Code.UNAUTHENTICATED,
    }
)
EXAMPLES = 100
# Answers the examples must have met, so that a change of the strategies cannot hollow the test out.
COVERED = frozenset(
    {
        ("Acquire", Code.OK),
        ("Acquire", Code.RESOURCE_EXHAUSTED),
        ("Acquire", Code.PERMISSION_DENIED),
        ("Acquire", Code.UNAUTHENTICATED),
        ("Release", Code.OK),
        ("Release", Code.INVALID_ARGUMENT),
        ("Release", Code.PERMISSION_DENIED),
        ("ExtendLease", Code.OK),
        ("GetAllocation", Code.OK),
        ("WatchAllocation", Code.OK),
        ("WatchAllocation", Code.RESOURCE_EXHAUSTED),
        ("WatchAllocation", Code.CANCELLED),
        ("raw", Code.INVALID_ARGUMENT),
    }
)


# ----- checks ----------------------------------------------------------------------------------------


def check(answer: Answer) -> None:
    allowed = set(DOCUMENTED)
    if answer.caller in REFUSED:
        allowed = {Code.UNAUTHENTICATED} | ({Code.DEADLINE_EXCEEDED} if answer.short_deadline else set())
    elif answer.caller in UNRESTRICTED:
        allowed -= {Code.UNAUTHENTICATED, Code.PERMISSION_DENIED}
    else:
        allowed -= {Code.UNAUTHENTICATED}
    if answer.cancelled_here:
        allowed.add(Code.CANCELLED)
    assert answer.code in allowed, f"{answer.what} by {answer.caller}: {answer.code} {answer.details!r}"
    if answer.code != Code.OK:
        assert answer.details, f"{answer.what} by {answer.caller}: {answer.code} with no message"


async def streams_open(c: Cluster) -> bool:
    on_proxy = await scraped(c.metrics["proxy"])
    counts = [value(await scraped(c.metrics[n]), "rlservice_watch_streams") for n in INSTANCES]
    counts += [value(on_proxy, "rlproxy_watch_streams"), value(on_proxy, "rlproxy_watch_upstreams")]
    return any(counts)


async def release_everything(c: Cluster) -> None:
    """Every lease still held, then any an Acquire that ended unseen may have taken (a retry with its
    job id returns the open lease, once the others have made room), by the unrestricted token."""
    ops = metadata("ops")

    async def release(lease_id: str) -> None:
        request = pb.ReleaseRequest(lease_id=lease_id, outcome=pb.SUCCESS, actual=pb.Usage(request_count=1))
        try:
            await c.stub("proxy").Release(request, timeout=20, metadata=ops)
        except grpc.aio.AioRpcError as e:
            # A lease taken with a ttl of a millisecond or two may have expired by now.
            assert e.code() == Code.NOT_FOUND, (lease_id, e.code(), e.details())

    for lease_id in list(c.held):
        await release(lease_id)
    for job_id, (via, request) in c.unsure.items():
        try:
            grant = await c.stub(via).Acquire(request, timeout=20, metadata=ops)
        except grpc.aio.AioRpcError as e:
            assert e.code() in (Code.RESOURCE_EXHAUSTED, Code.INVALID_ARGUMENT), (job_id, e.code(), e.details())
            continue
        await release(grant.lease_id)


async def nothing_left(harness: Harness, c: Cluster) -> bool:
    for name in INSTANCES:
        report = await c.stub(name).GetAllocation(pb.GetAllocationRequest(), timeout=20, metadata=metadata("ops"))
        if report.active_leases or any(t.in_flight or t.waiting for t in report.job_types.values()):
            return False
    return all(not any(harness.in_flight(m).values()) for m in MODELS)


# The label values docs/operations.md gives for the two counters.
ACQUIRE_RESULTS = {"granted", "exhausted", "deadline", "invalid", "denied", "unavailable", "cancelled", "error"}
RELEASE_OUTCOMES = {"success", "failed_with_usage", "failed_unknown_usage", "rate_limited"} | {
    "not_found",
    "invalid",
    "denied",
    "unavailable",
    "cancelled",
    "error",
}


async def metrics_as_documented(c: Cluster) -> None:
    results: set[str] = set()
    outcomes: set[str] = set()
    for instance in INSTANCES:
        samples = await scraped(c.metrics[instance])
        results |= {dict(labels)["result"] for name, labels in samples if name == "rlservice_acquire_total"}
        outcomes |= {dict(labels)["outcome"] for name, labels in samples if name == "rlservice_release_total"}
    assert results <= ACQUIRE_RESULTS and outcomes <= RELEASE_OUTCOMES, (results, outcomes)
    # What the random calls must have met, so that the check above cannot pass on nothing.
    assert {"granted", "exhausted", "invalid", "denied"} <= results, results
    assert {"rate_limited", "invalid", "denied", "not_found"} <= outcomes, outcomes


async def test_random_calls_answer_documented_codes_and_leave_nothing_behind(harness: Harness, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("".join(f"{line}\n" for line in TOKEN_LINES))
    metrics = {name: free_port() for name in (*INSTANCES, "proxy")}

    def flags(name: str) -> list[str]:
        return [*auth_args(tokens), "--max-watch-streams", str(MAX_WATCH_STREAMS), "--metrics-port", str(metrics[name])]

    harness.credentials = with_token(OPS)
    processes = {name: harness.boot_instance(0, "fuzz", extra_args=flags(name)) for name in INSTANCES}
    ports = [processes[name].port for name in INSTANCES]
    processes["proxy"] = harness.boot_proxy(ports, extra_args=flags("proxy"))
    harness.wait_routes(processes["proxy"].port, ports)
    channels = {name: grpc.aio.insecure_channel(p.address) for name, p in processes.items()}
    cluster = Cluster(processes, channels, metrics)
    loop = asyncio.get_running_loop()

    def on_loop(coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=180)

    async def one_example(ops: list[Op]) -> None:
        for answers in await asyncio.gather(*(op.run(cluster) for op in ops)):
            for answer in answers:
                check(answer)
                cluster.seen.add((answer.method, answer.code))
        # Every stream slot comes back once its streams are gone, on all three.
        await eventually(lambda: _not(streams_open(cluster)), timeout=30, what="no stream left open")

    # Calls made on the test's event loop; examples drawn on a thread, where hypothesis runs them.
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        phases=(Phase.explicit, Phase.generate),
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(st.data())
    def fuzz(data: st.DataObject) -> None:
        on_loop(one_example(data.draw(st.lists(operations, min_size=1, max_size=12), label="calls at once")))

    try:
        await asyncio.to_thread(fuzz)
        missed = COVERED - cluster.seen
        assert not missed, f"the random calls never got these answers: {sorted(missed)}"
        await release_everything(cluster)
        await eventually(lambda: nothing_left(harness, cluster), timeout=30, what="nothing in flight or waiting")
        await metrics_as_documented(cluster)
        for process in processes.values():
            assert process.alive(), process.log.read_text()[-3000:]
            assert await health(process.port) == health_pb2.HealthCheckResponse.SERVING
            assert "Traceback" not in process.log.read_text(), process.log.read_text()[-5000:]
            assert_not_logged(process, OPS, SCOPED)
        await still_serving(cluster)
    finally:
        for channel in channels.values():
            await channel.close(None)


async def still_serving(c: Cluster) -> None:
    """The cap's worth of streams starts on each process, and each instance grants and releases."""
    ops = metadata("ops")
    for name in c.processes:
        stub = c.stub(name)
        calls = [
            stub.WatchAllocation(pb.WatchAllocationRequest(), timeout=30, metadata=ops)
            for _ in range(MAX_WATCH_STREAMS)
        ]
        firsts = await asyncio.gather(*(first_message(f"a stream on {name} after the fuzz", call) for call in calls))
        for call in calls:
            call.cancel()
        assert all(code == Code.OK for code, _ in firsts), (name, firsts)
    for name in INSTANCES:
        request = pb.AcquireRequest(job_id=f"after-{name}", job_type="jobA", models=["model-conc"])
        grant = await c.stub(name).Acquire(request, timeout=20, metadata=ops)
        release = pb.ReleaseRequest(lease_id=grant.lease_id, outcome=pb.SUCCESS, actual=pb.Usage(request_count=1))
        await c.stub(name).Release(release, timeout=20, metadata=ops)


async def _not(predicate: Awaitable[bool]) -> bool:
    return not await predicate
