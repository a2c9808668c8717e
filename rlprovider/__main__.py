"""python -m rlprovider: a local stand-in for LLM providers' HTTP APIs."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

import uvloop
from aiohttp import web

from .config import ConfigError, Settings, load_settings
from .server import Provider, build_app

# Calls still waiting out their latency at SIGTERM get this long before they are cancelled.
_GRACE_S = 1.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m rlprovider", description=__doc__)
    p.add_argument("--port", type=int, required=True, help="port to listen on; 0 picks a free one")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--config", type=Path, required=True, help="a YAML configuration file (docs/provider.md)")
    return p.parse_args(argv)


async def serve(host: str, port: int, settings: Settings) -> int:
    runner = web.AppRunner(build_app(Provider(settings)), shutdown_timeout=_GRACE_S, access_log=None)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Before the port is announced: whoever reads it may signal at once.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as e:
        print(f"rlprovider: {e}", file=sys.stderr)
        await runner.cleanup()
        return 1
    print(f"listening on {host}:{runner.addresses[0][1]}", flush=True)
    await stop.wait()
    await runner.cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as e:
        print(f"rlprovider: invalid configuration: {e}", file=sys.stderr)
        return 2
    return uvloop.run(serve(args.host, args.port, settings))


if __name__ == "__main__":
    sys.exit(main())
