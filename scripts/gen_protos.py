"""Generate the Python stubs (with type stubs) from protos/ into every package that ships them.

protoc writes absolute imports (`from ratelimit.v1 import ratelimit_pb2`); they are rewritten to
relative ones so each package can carry its own copy without a top-level `ratelimit` package.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO = "ratelimit/v1/ratelimit.proto"
TARGETS = [ROOT / "rlproto", ROOT / "clients" / "python" / "src" / "rlclient" / "_proto"]
IMPORT = re.compile(r"^from ratelimit\.v1 import (\w+)", re.MULTILINE)


def generate(out: Path) -> None:
    # The mypy plugins are console scripts installed beside this interpreter.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{ROOT / 'protos'}",
            f"--python_out={tmp}",
            f"--mypy_out={tmp}",
            f"--grpc_python_out={tmp}",
            f"--mypy_grpc_out={tmp}",
            str(ROOT / "protos" / PROTO),
        ]
        if protoc.main(args) != 0:
            sys.exit(f"protoc failed for {PROTO}")
        out.mkdir(parents=True, exist_ok=True)
        for src in sorted((Path(tmp) / "ratelimit" / "v1").glob("ratelimit_pb2*")):
            text = IMPORT.sub(r"from . import \1", src.read_text())
            (out / src.name).write_text(text)
    init = out / "__init__.py"
    if not init.exists():
        init.write_text('"""Generated from protos/ratelimit/v1/ratelimit.proto by scripts/gen_protos.py."""\n')


if __name__ == "__main__":
    for target in TARGETS:
        generate(target)
