"""The Node.js client's own suite (clients/node, ``npm test``) against a real rlservice instance,
with rlprovider standing in for OpenAI behind the real ``openai`` npm package."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from rllocal.processes import spawn_module, stop_process

from .harness import BOOT_TIMEOUT_S, Harness
from .pki import make_pki, with_token

NODE_DIR = Path(__file__).resolve().parents[2] / "clients" / "node"
# The keys and limits test/openai-sdk.test.js expects.
PROVIDER_CONFIG = NODE_DIR / "test" / "rlprovider.yaml"
# The suite's test counts; fewer passing tests means some were skipped or lost. Offline: the ones
# that need neither an instance nor rlprovider (test/openai-headers.test.js).
OFFLINE_TESTS = 18
NODE_TESTS = 10 + OFFLINE_TESTS + 5


def npm() -> str:
    path = shutil.which("npm")
    assert path, "npm is not on PATH: the Node.js client needs Node.js 20 or later"
    if not (NODE_DIR / "node_modules").is_dir():
        subprocess.run([path, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, timeout=300)
    return path


def npm_test(env: dict[str, str]) -> tuple[int, str]:
    # TAP, whatever the terminal: its summary lines are what the assertions read.
    proc = subprocess.run(
        [npm(), "test", "--", "--test-reporter=tap"],
        cwd=NODE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc.returncode, proc.stdout + proc.stderr


def summary(output: str, key: str) -> int:
    found = re.search(rf"^# {key} (\d+)$", output, re.MULTILINE)
    assert found, f"no '# {key}' line in the npm test output:\n{output}"
    return int(found.group(1))


@pytest.fixture
def provider_port(tmp_path: Path) -> Iterator[int]:
    """rlprovider with the suite's keys, for the openai package to call."""
    proc, port = spawn_module(
        "rlprovider", ["--port", "0", "--config", str(PROVIDER_CONFIG)], tmp_path / "rlprovider.log", BOOT_TIMEOUT_S
    )
    try:
        yield port
    finally:
        stop_process(proc)


def test_node_client_suite_passes_against_an_instance(harness: Harness, provider_port: int) -> None:
    instance = harness.boot_instance(0, "default")
    env = {
        **os.environ,
        "RL_TARGET": instance.address,
        "RL_JOB_TYPE": "summary",
        "RL_PROVIDER_PORT": str(provider_port),
    }
    code, output = npm_test(env)
    assert code == 0, output
    assert summary(output, "pass") == NODE_TESTS, output
    assert summary(output, "fail") == 0, output


def test_node_client_suite_passes_over_mutual_tls_with_a_token(
    harness: Harness, tmp_path: Path, provider_port: int
) -> None:
    pki = make_pki(tmp_path / "pki")
    tokens = tmp_path / "tokens"
    tokens.write_text("tok-node\n")
    harness.credentials = with_token("tok-node", pki.credentials(client_cert=True))
    instance = harness.boot_instance(
        0, "default", extra_args=[*pki.server_args(mutual=True), "--auth-token-file", str(tokens)]
    )
    env = {
        **os.environ,
        "RL_TARGET": instance.address,
        "RL_JOB_TYPE": "summary",
        "RL_CA_FILE": str(pki.ca),
        "RL_CERT_FILE": str(pki.client_cert),
        "RL_KEY_FILE": str(pki.client_key),
        "RL_TOKEN": "tok-node",
        "RL_PROVIDER_PORT": str(provider_port),
    }
    code, output = npm_test(env)
    assert code == 0, output
    # The suite's own tests plus the one that only runs with a token.
    assert summary(output, "pass") == NODE_TESTS + 1, output
    assert summary(output, "fail") == 0, output


def test_node_client_suite_fails_without_a_target() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RL_TARGET", "RL_PROVIDER_PORT")}
    code, output = npm_test(env)
    assert code != 0, output
    assert "RL_TARGET is not set" in output
    assert "RL_PROVIDER_PORT is not set" in output
    assert summary(output, "fail") == 2, output
    assert summary(output, "pass") == OFFLINE_TESTS, output
