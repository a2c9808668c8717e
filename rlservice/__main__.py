"""python -m rlservice: one rate-limiter instance."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import uvloop

from rlcommon import logs, server, watch_cap
from rlcommon.errors import SetupError

from .app import Options, serve
from .config import ConfigError, load_settings, preset_path


def instance_id(value: str) -> str:
    # Lease ids embed it before a slash and events before a space.
    if not re.fullmatch(r"[A-Za-z0-9._:@-]{1,128}", value):
        raise argparse.ArgumentTypeError("use 1-128 letters, digits or . _ : @ -")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m rlservice", description=__doc__)
    p.add_argument("--port", type=int, required=True, help="port to listen on; 0 picks a free one")
    p.add_argument("--host", default="127.0.0.1")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", help="a configuration from presets/NAME.yaml")
    source.add_argument("--config", type=Path, help="a YAML configuration file")
    p.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        help="default: $REDIS_URL, else redis://127.0.0.1:6379/0",
    )
    p.add_argument(
        "--redis-cluster",
        action="store_true",
        default=os.environ.get("REDIS_CLUSTER", "") == "1",
        help="--redis-url names one node of a Redis Cluster; each model's keys get a hash tag of their own"
        " (default: $REDIS_CLUSTER=1)",
    )
    p.add_argument("--instance-id", type=instance_id, help="default: HOST-PORT-RANDOM")
    p.add_argument("--key-prefix", default="rl", help="Redis keys live under {PREFIX}")
    p.add_argument("--log-level", default=os.environ.get("RL_LOG_LEVEL", "INFO"))
    watch_cap.add_flag(p, "this instance")
    server.add_flags(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logs.configure(args.log_level, args.log_format)
    try:
        settings = load_settings(args.config if args.config else preset_path(args.preset))
    except ConfigError as e:
        print(f"rlservice: invalid configuration: {e}", file=sys.stderr)
        return 2
    try:
        setup = server.ServerSetup.from_args(args, decoded_requests=True)
    except SetupError as e:
        print(f"rlservice: {e}", file=sys.stderr)
        return 2
    opts = Options(
        args.host,
        args.port,
        settings,
        args.redis_url,
        args.instance_id,
        args.key_prefix,
        setup,
        args.metrics_port,
        args.max_watch_streams,
        args.redis_cluster,
    )
    try:
        uvloop.run(serve(opts))
    except OSError as e:
        print(f"rlservice: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
