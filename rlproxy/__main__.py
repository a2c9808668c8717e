"""python -m rlproxy --port P --targets HOST:PORT[,HOST:PORT...] [--weights 26:25] [--policy ...]"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Final

import uvloop
from prometheus_client import CollectorRegistry

from rlcommon import logs, server, watch_cap
from rlcommon.auth import Tokens
from rlcommon.errors import SetupError
from rlcommon.metrics_http import serve as serve_metrics
from rlcommon.tls import channel_credentials
from rlproxy.access import TargetAccess
from rlproxy.metrics import NO_METRICS, PrometheusProxyMetrics
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
    parser.add_argument("--log-level", default=os.environ.get("RL_LOG_LEVEL", "INFO"))
    watch_cap.add_flag(parser, "this proxy")
    server.add_flags(parser)
    targets = parser.add_argument_group("TLS and tokens towards the targets")
    targets.add_argument("--target-ca", type=Path, help="PEM CA the targets' certificates are signed by: TLS to them")
    targets.add_argument("--target-cert", type=Path, help="PEM client certificate for targets that require mTLS")
    targets.add_argument("--target-key", type=Path, help="PEM private key of --target-cert")
    targets.add_argument(
        "--target-token-file",
        type=Path,
        help="its first token goes on the proxy's own calls to the targets (default: --auth-token-file's)",
    )
    return parser


def _access(args: argparse.Namespace, setup: server.ServerSetup) -> TargetAccess:
    """Raises SetupError naming the flag or file at fault."""
    if args.target_ca is None and (args.target_cert or args.target_key):
        raise SetupError("--target-cert and --target-key need --target-ca: they are for TLS to the targets")
    credentials = (
        channel_credentials(args.target_ca, args.target_cert, args.target_key) if args.target_ca is not None else None
    )
    tokens = Tokens(args.target_token_file) if args.target_token_file is not None else setup.tokens
    return TargetAccess(credentials, tokens)


async def _serve(args: argparse.Namespace, setup: server.ServerSetup, access: TargetAccess) -> int:
    policy_name = args.policy or ("weighted" if args.weights is not None else "round_robin")
    policy = make_policy(policy_name, len(args.targets), args.weights)
    prometheus = PrometheusProxyMetrics(CollectorRegistry()) if args.metrics_port is not None else None
    proxy = ProxyServer(
        args.targets,
        policy,
        poll_loads=policy_name == "least_loaded",
        setup=setup,
        access=access,
        metrics=prometheus or NO_METRICS,
        max_watch_streams=args.max_watch_streams,
    )
    stop_metrics = None
    if prometheus is not None:
        prometheus.watch(proxy.pool.targets, proxy.forwarder)
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
    setup.reload_on_sighup(access.tokens)
    try:
        port = await proxy.start(args.host, args.port)
    except RuntimeError as err:
        print(f"rlproxy: {err}", file=sys.stderr)
        return 1
    print(f"listening on {args.host}:{port}", flush=True)
    await stop.wait()
    await proxy.stop(_GRACE_S)
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
    logs.configure(args.log_level, args.log_format)
    try:
        setup = server.ServerSetup.from_args(args, decoded_requests=False)
        access = _access(args, setup)
    except SetupError as err:
        print(f"rlproxy: {err}", file=sys.stderr)
        return 2
    return uvloop.run(_serve(args, setup, access))


if __name__ == "__main__":
    sys.exit(main())
