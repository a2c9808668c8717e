"""What rlproxy adds: Acquire + Release pairs straight to one rlservice instance and through a proxy.

Starts a redis-server, one instance (`--preset default`) and a proxy in front of it, all on
loopback, then drives both paths in one run with the same load: a fixed number of pairs at a fixed
concurrency, bounded in time, in alternating rounds so that drift in the machine's load hits both
alike. Acquires name the concurrency-only model so that no rate window runs out mid-run. Prints
p50/p99 per call and per pair, pairs per second, and the proxy's added p50/p99 per call.

    python bench/proxy_bench.py [--pairs 3000] [--concurrency 32] [--rounds 3] [--max-seconds 120]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from pairs import MODEL, SetUp, add_arguments, measure, report

from rllocal.processes import RedisServer, running

HOST = "127.0.0.1"
BOOT_TIMEOUT_S = 30.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, "path")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="proxy-bench-") as tmp:
        work = Path(tmp)
        redis = RedisServer(work)
        redis.start()
        try:
            service_args = ["--port", "0", "--preset", "default", "--redis-url", redis.url]
            with running("rlservice", service_args, work / "rlservice.log", BOOT_TIMEOUT_S) as instance:
                proxy_args = ["--port", "0", "--targets", f"{HOST}:{instance}"]
                with running("rlproxy", proxy_args, work / "rlproxy.log", BOOT_TIMEOUT_S) as proxy:
                    results = measure([SetUp("direct", f"{HOST}:{instance}"), SetUp("proxy", f"{HOST}:{proxy}")], args)
        finally:
            redis.stop()
    title = f"Acquire + Release pairs on loopback, one rlservice instance (preset default, model {MODEL})"
    return report(results, title, "path")


if __name__ == "__main__":
    sys.exit(main())
