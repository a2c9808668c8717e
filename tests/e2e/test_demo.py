"""The main job (`python -m rllocal.demo`) end to end: it runs, reports, and leaves nothing behind."""

from __future__ import annotations

import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STARTED = re.compile(r"^started (\S+) pid (\d+) on 127\.0\.0\.1:(\d+)$", re.MULTILINE)
PROGRESS = re.compile(r"^\s*\d+s\s+\d+", re.MULTILINE)
TOTAL_ROW = re.compile(r"^all models\s+\(all\)\s+(\d+)", re.MULTILINE)


def demo(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "rllocal.demo", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def ensure_ended(proc: subprocess.Popen[str]) -> None:
    """On a failed test: SIGTERM lets the demo stop what it started; SIGKILL if it does not."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def children(output: str) -> list[tuple[str, int, int]]:
    return [(name, int(pid), int(port)) for name, pid, port in STARTED.findall(output)]


def assert_all_gone(output: str) -> None:
    started = children(output)
    assert {name for name, _, _ in started} == {"redis-server", "rlservice", "rlproxy"}, output
    for name, pid, port in started:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            pass
        else:
            raise AssertionError(f"{name} (pid {pid}) still runs after the demo exited")
        with socket.socket() as s:
            s.settimeout(1)
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"{name} port {port} still accepts connections"


def test_demo_runs_reports_and_cleans_up() -> None:
    proc = demo("--seconds", "3", "--seed", "7")
    try:
        output, _ = proc.communicate(timeout=120)
    finally:
        ensure_ended(proc)
    assert proc.returncode == 0, output
    assert "Granted jobs by model and job type" in output
    assert "Acquire outcomes by job type" in output
    total = TOTAL_ROW.search(output)
    assert total is not None and int(total.group(1)) >= 1, output
    assert PROGRESS.search(output), output
    assert_all_gone(output)


def test_sigint_stops_every_process() -> None:
    proc = demo("--seconds", "60")
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            deadline = time.monotonic() + 60
            while not (lines and PROGRESS.match(lines[-1])):
                assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
                if sel.select(timeout=1):
                    lines.append(proc.stdout.readline())
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    finally:
        ensure_ended(proc)
    output = "".join(lines) + rest
    assert proc.returncode == 128 + signal.SIGINT, output
    assert "stopped early by SIGINT" in output
    assert_all_gone(output)
