"""The Node.js client's own suite (clients/node, ``npm test``) against a real rlservice instance."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from .harness import Harness
from .pki import make_pki, with_token

NODE_DIR = Path(__file__).resolve().parents[2] / "clients" / "node"
# The suite's test count; fewer passing tests means some were skipped or lost.
NODE_TESTS = 10


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


def test_node_client_suite_passes_against_an_instance(harness: Harness) -> None:
    instance = harness.boot_instance(0, "default")
    env = {**os.environ, "RL_TARGET": instance.address, "RL_JOB_TYPE": "summary"}
    code, output = npm_test(env)
    assert code == 0, output
    assert summary(output, "pass") == NODE_TESTS, output
    assert summary(output, "fail") == 0, output


def test_node_client_suite_passes_over_mutual_tls_with_a_token(harness: Harness, tmp_path: Path) -> None:
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
    }
    code, output = npm_test(env)
    assert code == 0, output
    # The suite's own tests plus the one that only runs with a token.
    assert summary(output, "pass") == NODE_TESTS + 1, output
    assert summary(output, "fail") == 0, output


def test_node_client_suite_fails_without_a_target() -> None:
    env = {k: v for k, v in os.environ.items() if k != "RL_TARGET"}
    code, output = npm_test(env)
    assert code != 0, output
    assert "RL_TARGET is not set" in output
    assert summary(output, "fail") == 1
