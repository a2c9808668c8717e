"""Self-contained end-to-end harness (SPEC §8): a real redis-server, real instance and proxy
processes, driven over loopback gRPC through the generated stubs."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio
import redis
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from rllocal.ledger_view import Ledger, ledger_prefix
from rllocal.processes import RedisServer as RedisServer
from rllocal.processes import poll_until, spawn_module
from rllocal.redis_cluster import LocalCluster
from rlproto import ratelimit_pb2 as pb
from rlproto import ratelimit_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[2]
PRESETS = ROOT / "presets"
LOCAL_PRESETS = Path(__file__).resolve().parent / "presets"
BOOT_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
# Concurrency limits only: any number of quick Acquire/Release pairs fits.
ROOMY = "slotCalc-concurrent"
ROOMY_JOB = "jobTypeA"

T = TypeVar("T")


async def eventually(
    predicate: Callable[[], Awaitable[T]], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> T:
    """Async poll with a deadline: the value once the predicate returns a truthy one."""
    deadline = time.monotonic() + timeout
    while True:
        value: T = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await asyncio.sleep(interval)


async def health(port: int, service: str = "") -> int:
    """The server's health status for `service` ("" for the server as a whole); -1 when it does not
    answer."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
        except grpc.aio.AioRpcError:
            return -1
        return int(reply.status)


@dataclass
class Process:
    kind: str
    proc: subprocess.Popen[str]
    port: int
    log: Path
    instance_id: str = ""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class JobResult:
    """What run_job saw: the Acquire answer or its error, and the Release answer."""

    acquire: pb.AcquireResponse | None = None
    release: pb.ReleaseResponse | None = None
    code: grpc.StatusCode = grpc.StatusCode.OK
    details: str = ""
    started_at: float = 0.0
    elapsed_s: float = 0.0

    @property
    def granted(self) -> bool:
        return self.acquire is not None


@dataclass
class Infrastructure:
    instances: list[Process]
    proxy: Process


def merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def preset_file(name: str) -> Path:
    for folder in (PRESETS, LOCAL_PRESETS):
        path = folder / f"{name}.yaml"
        if path.is_file():
            return path
    raise FileNotFoundError(f"no preset {name!r} in {PRESETS} or {LOCAL_PRESETS}")


@dataclass
class Harness:
    """Everything one test starts; teardown() stops it all, whatever happened."""

    redis_server: RedisServer
    workdir: Path
    processes: dict[int, Process] = field(default_factory=dict)
    proxy: Process | None = None
    _channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)
    # Every channel the harness opens uses these when set (TLS, a token as call credentials).
    credentials: grpc.ChannelCredentials | None = None
    # Set: the instances run on this Redis Cluster (--redis-cluster) instead of redis_server.
    redis_cluster: LocalCluster | None = None

    # ----- Redis -----------------------------------------------------------------------------

    @property
    def on_cluster(self) -> bool:
        return self.redis_cluster is not None

    def clean_redis(self) -> None:
        if self.redis_cluster is not None:
            self.redis_cluster.flush()
        else:
            self.redis_server.client().flushall()

    def redis(self) -> redis.Redis | RedisCluster:
        if self.redis_cluster is not None:
            return self.redis_cluster.client()
        return self.redis_server.client()

    def ledger_args(self) -> list[str]:
        """The flags that point an instance at the harness's Redis."""
        if self.redis_cluster is not None:
            return ["--redis-url", self.redis_cluster.url, "--redis-cluster"]
        return ["--redis-url", self.redis_server.url]

    def ledger(self) -> Ledger:
        """The ledger as read from outside the instances."""
        return Ledger(self.redis(), cluster=self.on_cluster)

    def ledger_prefix(self, model: str) -> str:
        """What rlservice.backend.ledger.Ledger takes as its prefix for the ledger holding the model."""
        return ledger_prefix("rl", model, self.on_cluster)

    def key(self, model: str, *parts: str) -> str:
        """A key of the ledger that holds the model."""
        return self.ledger().key(model, *parts)

    def async_redis(self) -> AsyncRedis | AsyncRedisCluster:
        """An asyncio client of the harness's Redis, as an instance has."""
        if self.redis_cluster is not None:
            return AsyncRedisCluster.from_url(self.redis_cluster.url)
        return AsyncRedis(host="127.0.0.1", port=self.redis_server.port)

    def in_flight(self, model: str) -> dict[str, int]:
        """In flight on a model from the ledger: in total ('_') and per instance."""
        return self.ledger().in_flight_counts(model)

    async def within_one_window(self, seconds: float = 8.0) -> None:
        """Waits, if need be, for a minute window with `seconds` left in it (on Redis time), so that a
        test counting one window's capacity is not split by a boundary."""
        secs, micros = self.ledger().time()
        left = 60 - (secs % 60) - micros / 1e6
        if left < seconds:
            await asyncio.sleep(left + 0.05)

    # ----- processes -------------------------------------------------------------------------

    def _spawn(self, kind: str, args: list[str]) -> Process:
        log = Path(tempfile.mkstemp(prefix=f"{kind}-", suffix=".log", dir=self.workdir)[1])
        proc, port = spawn_module(kind, args, log, BOOT_TIMEOUT_S)
        return Process(kind, proc, port, log)

    def config_file(self, preset: str, overrides: dict[str, Any] | None = None) -> Path:
        data = yaml.safe_load(preset_file(preset).read_text())
        path = Path(tempfile.mkstemp(prefix=f"{preset}-", suffix=".yaml", dir=self.workdir)[1])
        path.write_text(yaml.safe_dump(merged(data, overrides or {})))
        return path

    def boot_instance(
        self,
        port: int = 0,
        preset: str = "default",
        overrides: dict[str, Any] | None = None,
        instance_id: str | None = None,
        wait_serving: bool = True,
        extra_args: list[str] | None = None,
        redis_url: str | None = None,
    ) -> Process:
        args = ["--port", str(port), "--config", str(self.config_file(preset, overrides))]
        args += ["--redis-url", redis_url] if redis_url else self.ledger_args()
        if instance_id:
            args += ["--instance-id", instance_id]
        args += extra_args or []
        p = self._spawn("rlservice", args)
        self.processes[p.port] = p
        if wait_serving:
            self.wait_serving(p.port)
            p.instance_id = self.fetch_allocation(p.port).instance_id
        return p

    def boot_proxy(
        self,
        target_ports: list[int],
        port: int | None = None,
        weights: list[int] | None = None,
        policy: str | None = None,
        wait_serving: bool = True,
        extra_args: list[str] | None = None,
    ) -> Process:
        """With `wait_serving=False`, returns as soon as the proxy prints its listening line."""
        args = ["--port", str(port or 0), "--targets", ",".join(f"127.0.0.1:{p}" for p in target_ports)]
        if weights:
            args += ["--weights", ":".join(str(w) for w in weights)]
        if policy:
            args += ["--policy", policy]
        args += extra_args or []
        p = self._spawn("rlproxy", args)
        self.proxy = p
        self.processes[p.port] = p
        if wait_serving:
            self.wait_serving(p.port)
        return p

    def wait_serving(self, port: int, timeout: float = BOOT_TIMEOUT_S) -> None:
        with self.sync_channel(port) as ch:
            stub = health_pb2_grpc.HealthStub(ch)

            def serving() -> bool:
                proc = self.processes.get(port)
                if proc is not None and not proc.alive():
                    raise RuntimeError(f"process on {port} exited:\n{proc.log.read_text()[-3000:]}")
                try:
                    status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                except grpc.RpcError:
                    return False
                return bool(status == health_pb2.HealthCheckResponse.SERVING)

            poll_until(serving, timeout=timeout, what=f"port {port} to be SERVING")

    def wait_routes(self, proxy_port: int, target_ports: list[int], timeout: float = BOOT_TIMEOUT_S) -> None:
        """Waits until the proxy reports every one of these targets SERVING (under its address)."""
        with self.sync_channel(proxy_port) as ch:
            stub = health_pb2_grpc.HealthStub(ch)

            def all_serving() -> bool:
                for port in target_ports:
                    request = health_pb2.HealthCheckRequest(service=f"127.0.0.1:{port}")
                    try:
                        status = stub.Check(request, timeout=1).status
                    except grpc.RpcError:
                        return False
                    if status != health_pb2.HealthCheckResponse.SERVING:
                        return False
                return True

            poll_until(all_serving, timeout=timeout, what=f"proxy on {proxy_port} to route to {target_ports}")

    def kill_instance(self, port: int) -> None:
        """SIGKILL: the instance cannot unregister; the others notice when it goes stale."""
        p = self.processes.pop(port)
        p.proc.kill()
        p.proc.wait()

    def stop_instance(self, port: int) -> int:
        """SIGTERM: the instance unregisters; returns its exit code."""
        p = self.processes.pop(port)
        p.proc.send_signal(signal.SIGTERM)
        try:
            return p.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            p.proc.kill()
            raise AssertionError(f"{p.kind} on {port} did not exit within {STOP_TIMEOUT_S}s of SIGTERM") from None

    def kill_proxy(self) -> None:
        if self.proxy is not None:
            self.processes.pop(self.proxy.port, None)
            self.proxy.proc.kill()
            self.proxy.proc.wait()
            self.proxy = None

    def kill_all_instances(self) -> None:
        for port, p in list(self.processes.items()):
            if p.kind == "rlservice":
                self.kill_instance(port)

    def boot_infrastructure(self, preset: str = "default", overrides: dict[str, Any] | None = None) -> Infrastructure:
        """Clean Redis, two instances and a proxy in front of them."""
        self.clean_redis()
        instances = [self.boot_instance(0, preset, overrides) for _ in range(2)]
        proxy = self.boot_proxy([p.port for p in instances])
        return Infrastructure(instances, proxy)

    def teardown_infrastructure(self) -> None:
        for p in list(self.processes.values()):
            if p.alive():
                p.proc.kill()
                p.proc.wait()
            if p.proc.stdout is not None:
                p.proc.stdout.close()
        self.processes.clear()
        self.proxy = None

    # ----- gRPC ------------------------------------------------------------------------------

    def sync_channel(self, port: int) -> grpc.Channel:
        address = f"127.0.0.1:{port}"
        if self.credentials is None:
            return grpc.insecure_channel(address)
        return grpc.secure_channel(address, self.credentials)

    def fetch_allocation(self, port: int, instance_id: str = "") -> pb.GetAllocationResponse:
        with self.sync_channel(port) as ch:
            stub = pb_grpc.RateLimiterStub(ch)
            return stub.GetAllocation(pb.GetAllocationRequest(instance_id=instance_id), timeout=10)

    def stub(self, port: int) -> pb_grpc.RateLimiterAsyncStub:
        """An asyncio stub on the session's loop, one channel per port."""
        address = f"127.0.0.1:{port}"
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = (
                grpc.aio.secure_channel(address, self.credentials)
                if self.credentials is not None
                else grpc.aio.insecure_channel(address)
            )
        return pb_grpc.RateLimiterStub(channel)

    async def allocation(self, port: int) -> pb.GetAllocationResponse:
        return await self.stub(port).GetAllocation(pb.GetAllocationRequest(), timeout=10)

    async def counts_instances(self, port: int, n: int) -> bool:
        """Whether the instance on `port` counts n live instances."""
        return (await self.allocation(port)).allocation.instance_count == n

    async def acquire(
        self,
        port: int,
        job_type: str,
        job_id: str | None = None,
        models: list[str] | None = None,
        timeout: float = 30,
        lease_ttl_ms: int = 0,
    ) -> pb.AcquireResponse:
        request = pb.AcquireRequest(
            job_id=job_id or f"job-{os.urandom(6).hex()}",
            job_type=job_type,
            models=models or [],
            lease_ttl_ms=lease_ttl_ms,
        )
        return await self.stub(port).Acquire(request, timeout=timeout)

    async def release(
        self,
        port: int,
        lease_id: str,
        outcome: int = pb.SUCCESS,
        actual: pb.Usage | None = None,
        provider: pb.ProviderFeedback | None = None,
    ) -> pb.ReleaseResponse:
        request = pb.ReleaseRequest(lease_id=lease_id, outcome=outcome, actual=actual or pb.Usage(), provider=provider)  # type: ignore[arg-type]
        return await self.stub(port).Release(request, timeout=10)

    async def run_job(
        self,
        target: int,
        job_type: str,
        duration_ms: int = 0,
        actual: pb.Usage | None = None,
        outcome: int = pb.SUCCESS,
        models: list[str] | None = None,
        timeout: float = 30,
    ) -> JobResult:
        """Acquire, hold the lease for duration_ms as the job would, then Release."""
        result = JobResult(started_at=time.monotonic())
        try:
            result.acquire = await self.acquire(target, job_type, models=models, timeout=timeout)
        except grpc.aio.AioRpcError as e:
            result.code, result.details = e.code(), e.details() or ""
            result.elapsed_s = time.monotonic() - result.started_at
            return result
        if duration_ms:
            await asyncio.sleep(duration_ms / 1000)
        result.release = await self.release(target, result.acquire.lease_id, outcome, actual)
        result.elapsed_s = time.monotonic() - result.started_at
        return result

    async def close_channels(self) -> None:
        for channel in self._channels.values():
            await channel.close(None)
        self._channels.clear()
