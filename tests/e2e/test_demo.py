"""The main job (`python -m rllocal.demo`) end to end: it runs, reports the service's side and the
provider's, and leaves nothing behind."""

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

import pytest

from rlservice.config import load_settings, preset_path

ROOT = Path(__file__).resolve().parents[2]
STARTED = re.compile(r"^started (\S+) pid (\d+) on 127\.0\.0\.1:(\d+)$", re.MULTILINE)
PROGRESS = re.compile(r"^\s*\d+s\s+\d+", re.MULTILINE)
TOTAL_ROW = re.compile(r"^all models\s+\(all\)\s+(\d+)", re.MULTILINE)
PROVIDER_SECTION = "What the provider said"
MODELS = load_settings(preset_path("default")).model_order()


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
    assert {name for name, _, _ in started} == {"redis-server", "rlservice", "rlproxy", "rlprovider"}, output
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


def granted_on(output: str, model: str) -> int:
    row = re.search(rf"^{re.escape(model)}\s+\(all\)\s+(\d+)", output, re.MULTILINE)
    return int(row.group(1)) if row else 0


def provider_row(section: str, model: str) -> dict[str, int]:
    """A model's row of the provider's table: its counts and the workers' own."""
    names = [
        "accepted",
        "accepted_tokens",
        "refused",
        "refused_tokens",
        "answered",
        "refused_seen",
        "paused",
        "external_tokens",
    ]
    cells = r"\s+".join(r"([\d,]+)" for _ in names)
    row = re.search(rf"^{re.escape(model)}\s+{cells}$", section, re.MULTILINE)
    assert row is not None, f"no row for {model}:\n{section}"
    return {name: int(value.replace(",", "")) for name, value in zip(names, row.groups(), strict=True)}


def assert_provider_side(output: str) -> None:
    """Every granted lease called the provider once: the provider accepted what the workers saw
    answered, and refused (429) what they saw refused, model by model."""
    assert PROVIDER_SECTION in output, output
    section = output[output.index(PROVIDER_SECTION) :]
    accepted = 0
    for model in MODELS:
        row = provider_row(section, model)
        assert row["accepted"] == row["answered"], (model, section)
        assert row["refused"] == row["refused_seen"], (model, section)
        assert row["accepted"] + row["refused"] == granted_on(output, model), (model, output)
        assert (row["accepted"] == 0) == (row["accepted_tokens"] == 0), (model, section)
        assert (row["refused"] == 0) == (row["refused_tokens"] == 0), (model, section)
        assert re.search(rf"^{re.escape(model)}\s+window (fixed|rolling)\s+limit used: \S", section, re.MULTILINE)
        accepted += row["accepted"]
    assert accepted >= 1, section


@pytest.mark.parametrize("redis", [[], ["--redis-cluster"]], ids=["redis", "cluster"])
def test_demo_runs_reports_and_cleans_up(redis: list[str]) -> None:
    proc = demo("--seconds", "3", "--seed", "7", *redis)
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
    assert "error:" not in output, output
    assert_provider_side(output)
    # One Redis, or the cluster's three masters.
    assert sum(name == "redis-server" for name, _, _ in children(output)) == (3 if redis else 1), output
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
