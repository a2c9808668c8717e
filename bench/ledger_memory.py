"""What the ledger takes in Redis memory per open lease and per lease closed within the hour.

Runs a redis-server, registers one instance through the ledger script and drives it with plain
EVALSHA calls (no instance, no gRPC): --leases Acquires in batches of 8, then their Releases, reading
`used_memory` before, between and after. The ids are those of bench/script_cost.py (short); real
lease, job and instance ids add their length.

    python bench/ledger_memory.py [--leases 20000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from script_cost import INSTANCE, LIMITS, PREFIX, acquire, release

from rllocal.processes import RedisServer
from rlservice.backend.ledger import Ledger
from rlservice.config import MAX_MODELS

BATCH = 8


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--leases", type=int, default=20_000, help="leases to open, then close (default 20000)")
    leases: int = p.parse_args().leases // BATCH * BATCH
    with tempfile.TemporaryDirectory(prefix="rl-ledger-memory-") as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            client = server.client()
            sha = str(client.script_load(Ledger._script_text()))
            client.evalsha(sha, 1, PREFIX, INSTANCE, "register", 2, LIMITS, MAX_MODELS)

            def used() -> int:
                return int(client.info("memory")["used_memory"])

            def run(op: Callable[[int], list[str | int]]) -> None:
                for first in range(0, leases, BATCH):
                    argv = [a for n in range(first, first + BATCH) for a in op(n)]
                    client.evalsha(sha, 1, PREFIX, INSTANCE, *argv)

            base = used()
            run(acquire)
            opened = used()
            run(release)
            closed = used()
        finally:
            server.stop()
    print(f"{leases} leases: {(opened - base) / leases:.0f} bytes per open lease,", end=" ")
    print(f"{(closed - base) / leases:.0f} bytes per lease closed within the hour")
    return 0


if __name__ == "__main__":
    sys.exit(main())
