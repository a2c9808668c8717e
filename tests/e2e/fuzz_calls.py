"""The calls tests/e2e/test_fuzz.py draws, as hypothesis strategies, and how each is made: Acquire,
Release, ExtendLease and GetAllocation with valid and odd fields, WatchAllocation storms, raw bytes,
each sent to an instance or the proxy with one of several authorization headers."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import grpc.aio
from hypothesis import strategies as st

from rlproto import ratelimit_pb2 as pb
from rlproto import ratelimit_pb2_grpc as pb_grpc

from .harness import Process

T = TypeVar("T")
Code = grpc.StatusCode

MODELS = ("model-tpm", "model-conc")
OPS, SCOPED = "tok-fuzz-ops-41", "tok-fuzz-scoped-52"
TOKEN_LINES = (OPS, f"{SCOPED} job_types=jobA,jobZero models=model-conc")
MAX_WATCH_STREAMS = 4
INSTANCES = ("first", "second")
METHODS = ("Acquire", "Release", "ExtendLease", "GetAllocation", "WatchAllocation")
# The authorization metadata each kind of caller sends: the unrestricted token written three ways
# a server accepts, the scoped token, and seven ways to be refused.
AUTHORIZATION: dict[str, tuple[str, ...]] = {
    "ops": (f"Bearer {OPS}",),
    "ops-lower-case": (f"bearer {OPS}",),
    "ops-padded": (f"Bearer   {OPS}  ",),
    "scoped": (f"Bearer {SCOPED}",),
    "unknown": ("Bearer tok-nobody-knows",),
    "unknown-long": ("Bearer " + "t" * 7000,),
    "unknown-first": ("Bearer tok-nobody-knows", f"Bearer {OPS}"),
    "not-bearer": (f"Basic {OPS}",),
    "bearer-alone": ("Bearer",),
    "empty": ("",),
    "missing": (),
}
UNRESTRICTED = frozenset({"ops", "ops-lower-case", "ops-padded"})
REFUSED = frozenset(AUTHORIZATION) - UNRESTRICTED - {"scoped"}
CALLERS = ("ops",) * 5 + ("ops-lower-case", "ops-padded") + ("scoped",) * 3 + tuple(sorted(REFUSED))
SERVER_DEADLINE = "the deadline ended the wait"


@dataclass
class Answer:
    method: str
    what: str
    caller: str
    code: Code
    details: str
    cancelled_here: bool = False
    # The call's deadline was shorter than the server may take even to refuse it.
    short_deadline: bool = False


@dataclass
class Cluster:
    """The processes under test by name ("first", "second", "proxy"), a channel and a metrics port
    for each, and what the calls left open."""

    processes: dict[str, Process]
    channels: dict[str, grpc.aio.Channel]
    metrics: dict[str, int]
    held: dict[str, str] = field(default_factory=dict)  # lease id -> job id
    released: list[str] = field(default_factory=list)
    # Acquires that ended without an answer the test saw, by job id: the grant may have happened.
    unsure: dict[str, tuple[str, pb.AcquireRequest]] = field(default_factory=dict)
    job_ids: list[str] = field(default_factory=list)
    seen: set[tuple[str, Code]] = field(default_factory=set)

    def channel(self, via: str) -> grpc.aio.Channel:
        return self.channels[via]

    def stub(self, via: str) -> pb_grpc.RateLimiterAsyncStub:
        return pb_grpc.RateLimiterStub(self.channel(via))

    def instance_id(self, name: str) -> str:
        """The id a request names: "any" none, "first" or "second" that instance's, else `name`."""
        if name == "any":
            return ""
        return self.processes[name].instance_id if name in INSTANCES else name

    def serves(self, via: str, instance_id: str) -> bool:
        """Whether `via` answers for `instance_id`: an instance for its own, the proxy for both."""
        if not instance_id:
            return True
        names = INSTANCES if via == "proxy" else (via,)
        return any(self.processes[n].instance_id == instance_id for n in names)

    def lease(self, kind: str, pick: int) -> str:
        if kind == "held" and self.held:
            return list(self.held)[pick % len(self.held)]
        if kind == "released" and self.released:
            return self.released[pick % len(self.released)]
        return {
            "unknown": f"{self.instance_id('first')}/no-such-lease",
            "other-instance": "vm-gone-1234/abc",
            "no-instance": "just-a-token",
            "empty": "",
            "long": "x" * 300,
            "control": "a/b\nc",
        }.get(kind, f"{self.instance_id('second')}/never-issued")


def metadata(caller: str) -> tuple[tuple[str, str], ...] | None:
    return tuple(("authorization", header) for header in AUTHORIZATION[caller]) or None


async def answer_of(method: str, what: str, caller: str, call: Awaitable[T]) -> tuple[Answer, T | None]:
    try:
        reply = await call
    except grpc.aio.AioRpcError as e:
        return Answer(method, what, caller, e.code(), e.details() or ""), None
    return Answer(method, what, caller, Code.OK, ""), reply


# ----- operations ----------------------------------------------------------------------------------


@dataclass
class AcquireOp:
    via: str
    caller: str
    job_type: str
    models: list[str]
    lease_ttl_ms: int
    job_id: str
    pick: int
    timeout: float

    async def run(self, c: Cluster) -> list[Answer]:
        job_id = self.job_id
        if job_id == "fresh":
            job_id = f"fuzz-{os.urandom(5).hex()}"
        elif job_id == "reused" and c.job_ids:
            job_id = c.job_ids[self.pick % len(c.job_ids)]
        c.job_ids.append(job_id)
        request = pb.AcquireRequest(
            job_id=job_id, job_type=self.job_type, models=self.models, lease_ttl_ms=self.lease_ttl_ms
        )
        call = c.stub(self.via).Acquire(request, timeout=self.timeout, metadata=metadata(self.caller))
        answer, reply = await answer_of("Acquire", f"{self}", self.caller, call)
        answer.short_deadline = self.timeout < 1
        if reply is not None:
            c.held[reply.lease_id] = job_id
        elif answer.code == Code.UNAVAILABLE or (
            answer.code == Code.DEADLINE_EXCEEDED and not answer.details.startswith(SERVER_DEADLINE)
        ):
            # The client's deadline passed first: a cancelled Acquire holds nothing (docs/decisions.md),
            # but a grant whose reply was on its way when the deadline passed stays open. The server's
            # own DEADLINE_EXCEEDED granted nothing, and a lease it left would show below.
            c.unsure[job_id] = (self.via, request)
        return [answer]


@dataclass
class ReleaseOp:
    via: str
    caller: str
    lease: str
    pick: int
    outcome: int
    actual: pb.Usage
    provider: pb.ProviderFeedback | None

    async def run(self, c: Cluster) -> list[Answer]:
        lease_id = c.lease(self.lease, self.pick)
        request = pb.ReleaseRequest(lease_id=lease_id, outcome=self.outcome, actual=self.actual, provider=self.provider)  # type: ignore[arg-type]
        call = c.stub(self.via).Release(request, timeout=20, metadata=metadata(self.caller))
        answer, reply = await answer_of("Release", f"{self} on {lease_id!r}", self.caller, call)
        if reply is not None and c.held.pop(lease_id, None) is not None:
            c.released.append(lease_id)
        return [answer]


@dataclass
class ExtendOp:
    via: str
    caller: str
    lease: str
    pick: int
    ttl_ms: int

    async def run(self, c: Cluster) -> list[Answer]:
        lease_id = c.lease(self.lease, self.pick)
        request = pb.ExtendLeaseRequest(lease_id=lease_id, ttl_ms=self.ttl_ms)
        call = c.stub(self.via).ExtendLease(request, timeout=20, metadata=metadata(self.caller))
        return [(await answer_of("ExtendLease", f"{self} on {lease_id!r}", self.caller, call))[0]]


@dataclass
class AllocationOp:
    via: str
    caller: str
    instance: str

    async def run(self, c: Cluster) -> list[Answer]:
        instance_id = c.instance_id(self.instance)
        request = pb.GetAllocationRequest(instance_id=instance_id)
        call = c.stub(self.via).GetAllocation(request, timeout=20, metadata=metadata(self.caller))
        answer = (await answer_of("GetAllocation", f"{self}", self.caller, call))[0]
        if self.caller not in REFUSED:
            expected = Code.OK if c.serves(self.via, instance_id) else Code.NOT_FOUND
            assert answer.code == expected, answer
        return [answer]


async def first_message(what: str, call: grpc.aio.UnaryStreamCall[Any, Any]) -> tuple[Code, str]:
    """OK once the stream's first message came, else how the stream ended."""
    try:
        async for _ in call:
            return Code.OK, ""
    except grpc.aio.AioRpcError as e:
        return e.code(), e.details() or ""
    raise AssertionError(f"{what} ended with OK before any message")


@dataclass
class Stream:
    caller: str
    min_interval_ms: int
    instance: str
    at_once: bool


@dataclass
class WatchStormOp:
    """Streams opened together, more than the cap at times; each read until its first message or
    its end, or cancelled at once, then all cancelled."""

    via: str
    streams: list[Stream]

    async def run(self, c: Cluster) -> list[Answer]:
        stub = c.stub(self.via)
        calls = []
        for s in self.streams:
            instance_id = c.instance_id(s.instance)
            request = pb.WatchAllocationRequest(instance_id=instance_id, min_interval_ms=s.min_interval_ms)
            calls.append(stub.WatchAllocation(request, timeout=30, metadata=metadata(s.caller)))
        answers = await asyncio.gather(*(self._first(s, call) for s, call in zip(self.streams, calls, strict=True)))
        for call in calls:
            call.cancel()
        return list(answers)

    async def _first(self, s: Stream, call: grpc.aio.UnaryStreamCall[Any, Any]) -> Answer:
        what = f"WatchAllocation via {self.via} {s}"
        if s.at_once:
            call.cancel()
            code, details = await call.code(), await call.details()
            return Answer("WatchAllocation", what, s.caller, code, details or "", cancelled_here=True)
        return Answer("WatchAllocation", what, s.caller, *await first_message(what, call))


@dataclass
class RawOp:
    """Bytes sent as they are, as a client with another (or no) schema would."""

    via: str
    caller: str
    method: str
    body: bytes

    async def run(self, c: Cluster) -> list[Answer]:
        path = f"/ratelimit.v1.RateLimiter/{self.method}"
        channel = c.channel(self.via)
        what, raw = f"{self}", "raw"
        if self.method == "WatchAllocation":
            stream = channel.unary_stream(path, None, None)(self.body, timeout=20, metadata=metadata(self.caller))
            answer = Answer(raw, what, self.caller, *await first_message(what, stream))
            stream.cancel()
            return [answer]
        call = channel.unary_unary(path, None, None)(self.body, timeout=20, metadata=metadata(self.caller))
        answer, reply = await answer_of(raw, what, self.caller, call)
        if reply is not None and self.method == "Acquire":
            granted = pb.AcquireResponse.FromString(reply)
            c.held[granted.lease_id] = ""
        return [answer]


# ----- strategies ----------------------------------------------------------------------------------


def mostly(usual: st.SearchStrategy[T], odd: st.SearchStrategy[T], one_in: int = 10) -> st.SearchStrategy[T]:
    """The usual values but one time in `one_in`, so that most calls get past validation."""
    return st.integers(1, one_in).flatmap(lambda n: odd if n == one_in else usual)


VIA = st.sampled_from(("first", "second", "proxy", "proxy"))
CALLER = st.sampled_from(CALLERS)
# An odd Acquire is odd in each of these fields one time in three, other values one time in ten;
# grants, fair_releases and fair_streams keep the valid traffic going.
JOB_TYPES = mostly(
    st.sampled_from(("jobA", "jobB", "jobZero", "jobHuge")),
    st.sampled_from(("", "no-such-type", "x" * 300, "a\nb")),
    one_in=3,
)
MODEL_LISTS = mostly(
    st.sampled_from(([], ["model-conc"], ["model-tpm"], ["model-tpm", "model-conc"], ["model-conc", "model-tpm"])),
    st.lists(st.sampled_from(("model-tpm", "model-conc", "no-such-model", "")), max_size=4),
    one_in=3,
)
ODD_INTS = st.sampled_from((1, -1, 2**31, 2**62, -(2**63)))
TTLS = mostly(st.sampled_from((0, 60_000)), st.one_of(st.sampled_from((1, 86_400_000, 86_400_001)), ODD_INTS), one_in=3)
USAGE_VALUES = mostly(st.integers(0, 20_000), st.one_of(st.sampled_from((100_000_000, 100_000_001)), ODD_INTS))
FEEDBACK_VALUES = mostly(st.integers(0, 200_000), st.one_of(st.sampled_from((10**12, 10**12 + 1)), ODD_INTS))
LEASES = mostly(
    st.just("held"),
    st.sampled_from(("released", "unknown", "other-instance", "no-instance", "empty", "long", "control")),
)

acquires = st.builds(
    AcquireOp,
    via=VIA,
    caller=CALLER,
    job_type=JOB_TYPES,
    models=MODEL_LISTS,
    lease_ttl_ms=TTLS,
    job_id=mostly(st.just("fresh"), st.sampled_from(("reused", "", "y" * 300, "c\td")), one_in=3),
    pick=st.integers(0, 50),
    # Sometimes shorter than the waits, so that the caller leaves while its Acquire waits.
    timeout=mostly(st.just(20.0), st.sampled_from((0.05, 0.12))),
)
# Calls that should succeed when there is room: what keeps capacity taken and streams open.
grants = st.builds(
    AcquireOp,
    via=VIA,
    caller=st.sampled_from(("ops", "ops", "scoped")),
    job_type=st.sampled_from(("jobA", "jobA", "jobB", "jobZero", "jobHuge")),
    models=st.sampled_from(([], ["model-conc"], ["model-conc"], ["model-tpm", "model-conc"])),
    lease_ttl_ms=st.sampled_from((0, 60_000)),
    job_id=st.just("fresh"),
    pick=st.just(0),
    # Now and then the caller leaves while its Acquire waits for a full model.
    timeout=st.sampled_from((20.0, 20.0, 20.0, 20.0, 0.05, 0.15)),
)
usages = st.builds(
    pb.Usage,
    request_count=USAGE_VALUES,
    input_tokens=USAGE_VALUES,
    output_tokens=USAGE_VALUES,
    cached_tokens=USAGE_VALUES,
)


@st.composite
def feedback(draw: st.DrawFn) -> pb.ProviderFeedback | None:
    """What a provider's headers said: nothing, some remaining counts, a retry-after."""
    if draw(st.booleans()):
        return None
    remaining = ("remaining_tokens", "remaining_requests", "remaining_input_tokens", "remaining_output_tokens")
    given_ones = {name: draw(FEEDBACK_VALUES) for name in remaining if draw(st.booleans())}
    retry_after = draw(mostly(st.sampled_from((0, 50, 400)), FEEDBACK_VALUES))
    return pb.ProviderFeedback(retry_after_ms=retry_after, **given_ones)


OUTCOMES = mostly(
    st.sampled_from((pb.SUCCESS, pb.FAILED_WITH_USAGE, pb.FAILED_UNKNOWN_USAGE, pb.RATE_LIMITED)),
    st.sampled_from((0, 9)),
)
releases = st.builds(
    ReleaseOp,
    via=VIA,
    caller=CALLER,
    lease=LEASES,
    pick=st.integers(0, 50),
    outcome=OUTCOMES,
    actual=usages,
    provider=feedback(),
)
fair_releases = st.builds(
    ReleaseOp,
    via=VIA,
    caller=st.sampled_from(("ops", "ops", "scoped")),
    lease=st.just("held"),
    pick=st.integers(0, 50),
    outcome=OUTCOMES,
    actual=st.builds(pb.Usage, request_count=st.integers(0, 2), input_tokens=st.integers(0, 20_000)),
    provider=feedback(),
)
extends = st.builds(ExtendOp, via=VIA, caller=CALLER, lease=LEASES, pick=st.integers(0, 50), ttl_ms=TTLS)
NAMED = st.sampled_from(("any", "any", "first", "second"))
allocations = st.builds(AllocationOp, via=VIA, caller=CALLER, instance=mostly(NAMED, st.just("vm-nope-1"), one_in=4))
streams = st.builds(
    Stream,
    caller=CALLER,
    min_interval_ms=mostly(st.sampled_from((0, 50)), st.sampled_from((10, 60_001))),
    instance=mostly(NAMED, st.just("vm-nope-1")),
    at_once=st.booleans(),
)
# Streams that start when there is room under the cap.
fair_streams = st.builds(
    Stream,
    caller=st.sampled_from(("ops", "ops", "scoped")),
    min_interval_ms=st.sampled_from((0, 50)),
    instance=NAMED,
    at_once=st.integers(0, 3).map(lambda n: n == 3),
)
# Up to three times the cap at once.
storms = st.builds(
    WatchStormOp,
    via=VIA,
    streams=st.lists(st.one_of(fair_streams, fair_streams, streams), min_size=1, max_size=MAX_WATCH_STREAMS * 3),
)
# Bytes that do not parse, or parse into something odd: a truncated varint, invalid UTF-8 in the
# first string field, nothing at all (every field at its default), an unknown field after a
# valid request, and a valid Acquire.
BODIES = (
    b"\xff\xff\xff",
    b"\x0a\x02\xff\xfe",
    b"\x12\x03\xc3\x28\x41",
    b"",
    pb.AcquireRequest(job_id="raw-job", job_type="jobZero", models=["model-conc"]).SerializeToString()
    + b"\xf8\x07\x01",
    pb.AcquireRequest(job_id="raw-job-2", job_type="jobA").SerializeToString(),
)
raws = st.builds(
    RawOp,
    via=VIA,
    caller=CALLER,
    method=st.sampled_from(METHODS),
    body=st.one_of(st.sampled_from(BODIES), st.binary(max_size=24)),
)
Op = AcquireOp | ReleaseOp | ExtendOp | AllocationOp | WatchStormOp | RawOp
operations: st.SearchStrategy[Op] = st.one_of(
    grants, grants, grants, acquires, fair_releases, fair_releases, releases, extends, allocations, storms, storms, raws
)
