"""What one server interceptor costs a grpc.aio server per RPC.

The reason rlservice wraps its handlers once at registration (the check of requests that do not
parse, the ids on JSON log lines) and keeps interceptors for what needs a call's metadata: grpc.aio
runs its interceptor chain, coroutines and all, on every call of a server that has one, and skips
it on a server that has none.

Starts, in alternating rounds, a uvloop grpc.aio server with an empty unary method and no
interceptor, and the same server with one interceptor that passes every call on; loads each from
this process and reads the server process's CPU time from /proc. Prints the server's CPU per RPC
for both per round, and the medians.

    python bench/interceptor_cost.py [--calls 20000] [--concurrency 20] [--rounds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from typing import Any

import grpc
import grpc.aio
import uvloop
from google.protobuf import empty_pb2
from service_bench import cpu_seconds

from rllocal.processes import free_port

SERVICE = "bench.Empty"
METHOD = f"/{SERVICE}/Call"
WARMUP_CALLS = 2000


class PassOn(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        return await continuation(details)


async def _echo(request: empty_pb2.Empty, context: object) -> empty_pb2.Empty:
    return request


async def serve(port: int, intercepted: bool) -> None:
    handler = grpc.unary_unary_rpc_method_handler(
        _echo,
        request_deserializer=empty_pb2.Empty.FromString,
        response_serializer=empty_pb2.Empty.SerializeToString,
    )
    server = grpc.aio.server(interceptors=[PassOn()] if intercepted else None)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"Call": handler}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


async def load(port: int, calls: int, concurrency: int) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(
            METHOD,
            request_serializer=empty_pb2.Empty.SerializeToString,
            response_deserializer=empty_pb2.Empty.FromString,
        )
        each = calls // concurrency

        async def worker() -> None:
            for _ in range(each):
                await call(empty_pb2.Empty(), timeout=30)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return each * concurrency


def measure(intercepted: bool, calls: int, concurrency: int) -> tuple[float, float]:
    """Server CPU µs per RPC and RPC/s of one loaded run."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), *(["--intercepted"] if intercepted else [])],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            raise RuntimeError("the bench server did not start")
        uvloop.run(load(port, WARMUP_CALLS, concurrency))
        cpu_before, started = cpu_seconds(server.pid), time.monotonic()
        done = uvloop.run(load(port, calls, concurrency))
        cpu_after, seconds = cpu_seconds(server.pid), time.monotonic() - started
    finally:
        server.kill()
        server.wait()
    return (cpu_after - cpu_before) / done * 1e6, done / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000, help="RPCs per measured run (default 20000)")
    parser.add_argument("--concurrency", type=int, default=20, help="concurrent calls (default 20)")
    parser.add_argument("--rounds", type=int, default=6, help="alternating rounds (default 6)")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--intercepted", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        uvloop.run(serve(args.serve, args.intercepted))
        return
    plain: list[float] = []
    intercepted: list[float] = []
    print(f"{'round':>5} {'none µs/RPC':>12} {'RPC/s':>7} {'one µs/RPC':>11} {'RPC/s':>7}")
    for n in range(args.rounds):
        cost, rate = measure(False, args.calls, args.concurrency)
        cost_with, rate_with = measure(True, args.calls, args.concurrency)
        plain.append(cost)
        intercepted.append(cost_with)
        print(f"{n + 1:>5} {cost:12.1f} {rate:7.0f} {cost_with:11.1f} {rate_with:7.0f}")
    none, one = statistics.median(plain), statistics.median(intercepted)
    print(f"server CPU per RPC, medians: {none:.1f} µs without an interceptor, {one:.1f} µs with one")
    print(f"one pass-on interceptor adds {one - none:.1f} µs a call, {one / none - 1:+.1%}")


if __name__ == "__main__":
    main()
