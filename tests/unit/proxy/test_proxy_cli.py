"""`python -m rlproxy` as a process: first line, signals, argument errors."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
TWO = "127.0.0.1:1,127.0.0.1:2"


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "rlproxy", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_prints_the_bound_port_first_and_stops_on_signal(sig: signal.Signals) -> None:
    proc = _spawn("--port", "0", "--targets", TWO, "--weights", "2:1")
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        host, _, port = line.removeprefix("listening on ").rpartition(":")
        assert line.startswith("listening on ") and host == "127.0.0.1" and int(port) > 0, line
        started = time.monotonic()
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - started < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(
    "args",
    [
        ["--targets", "127.0.0.1"],
        ["--targets", "127.0.0.1:1", "--weights", "1:2"],
        ["--targets", TWO, "--weights", "1:x"],
        ["--targets", TWO, "--weights", "1:0"],
        ["--targets", "127.0.0.1:1", "--policy", "random"],
        ["--targets", TWO, "--policy", "round_robin", "--weights", "1:1"],
    ],
)
def test_bad_arguments_exit_with_usage_error(args: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "rlproxy", "--port", "0", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
