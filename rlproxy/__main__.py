"""python -m rlproxy --port P --targets HOST:PORT[,HOST:PORT...] [--weights 26:25] [--policy ...]"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Final

import uvloop
from prometheus_client import CollectorRegistry

from rlproxy.metrics import NO_METRICS, PrometheusProxyMetrics
from rlproxy.metrics import serve as serve_metrics
from rlproxy.policies import POLICY_NAMES, make_policy
from rlproxy.server import ProxyServer

# SIGTERM must end the process within 5 s: in-flight calls get most of that, closing the rest.
_GRACE_S: Final = 3.0


def _address(text: str) -> str:
    host, colon, port = text.strip().rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return f"{host}:{port}"


def _targets(text: str) -> list[str]:
    return [_address(part) for part in text.split(",") if part.strip()]


def _weights(text: str) -> list[int]:
    try:
        weights = [int(part) for part in text.split(":")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not integers separated by ':'") from None
    if any(w <= 0 for w in weights):
        raise argparse.ArgumentTypeError("weights must be positive")
    return weights


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535; 0 picks a free one)")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rlproxy", description="gRPC proxy in front of rlservice instances."
    )
    parser.add_argument("--port", type=int, required=True, help="port to listen on; 0 picks a free one")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--targets", type=_targets, required=True, help="HOST:PORT[,HOST:PORT...]")
    parser.add_argument(
        "--policy",
        choices=POLICY_NAMES,
        help="how Acquire picks a target (default round_robin, or weighted when --weights is given)",
    )
    parser.add_argument("--weights", type=_weights, help="one weight per target, e.g. 26:25")
    parser.add_argument(
        "--metrics-port", type=_port, help="serve Prometheus metrics at http://HOST:PORT/metrics (default: off)"
    )
    return parser


async def _serve(args: argparse.Namespace) -> int:
    policy_name = args.policy or ("weighted" if args.weights is not None else "round_robin")
    policy = make_policy(policy_name, len(args.targets), args.weights)
    prometheus = PrometheusProxyMetrics(CollectorRegistry()) if args.metrics_port is not None else None
    server = ProxyServer(
        args.targets, policy, poll_loads=policy_name == "least_loaded", metrics=prometheus or NO_METRICS
    )
    stop_metrics = None
    if prometheus is not None:
        prometheus.watch(server.pool.targets)
        try:
            stop_metrics = serve_metrics(prometheus.registry, args.host, args.metrics_port)
        except OSError as err:
            print(f"rlproxy: {err}", file=sys.stderr)
            return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Before the port is announced: whoever reads it may signal at once.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        port = await server.start(args.host, args.port)
    except RuntimeError as err:
        print(f"rlproxy: {err}", file=sys.stderr)
        return 1
    print(f"listening on {args.host}:{port}", flush=True)
    await stop.wait()
    await server.stop(_GRACE_S)
    if stop_metrics is not None:
        await asyncio.to_thread(stop_metrics)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.targets:
        parser.error("--targets names no target")
    if args.weights is not None and args.policy not in (None, "weighted"):
        parser.error("--weights only applies to --policy weighted")
    if args.weights is not None and len(args.weights) != len(args.targets):
        parser.error(f"--weights has {len(args.weights)} values for {len(args.targets)} targets")
    return uvloop.run(_serve(args))


if __name__ == "__main__":
    sys.exit(main())
