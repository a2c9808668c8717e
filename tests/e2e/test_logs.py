"""--log-format json: every stderr line of an instance and of the proxy is one JSON object."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from rlproto import ratelimit_pb2 as pb

from .harness import ROOMY, ROOMY_JOB, Harness, Process, eventually
from .pki import with_token

REQUIRED = {"time", "level", "logger", "message"}


def json_lines(process: Process) -> list[dict[str, Any]]:
    lines = [line for line in process.log.read_text().splitlines() if line]
    parsed = [json.loads(line) for line in lines]
    for line in parsed:
        assert line.keys() >= REQUIRED, line
    return parsed


async def test_json_lines_with_the_ids_of_the_call_they_are_about(harness: Harness, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("tok-logs\n")
    harness.credentials = with_token("tok-logs")
    json_flags = ["--log-format", "json", "--log-level", "DEBUG", "--auth-token-file", str(tokens)]
    instance = harness.boot_instance(0, ROOMY, extra_args=json_flags)
    proxy = harness.boot_proxy([instance.port], extra_args=json_flags)

    # Far above the estimate: the instance logs the overage while serving the Release.
    job = await harness.run_job(proxy.port, ROOMY_JOB, actual=pb.Usage(request_count=1, input_tokens=10**6))
    assert job.acquire is not None and job.release is not None, job.details
    lease_id = job.acquire.lease_id

    async def overage_logged() -> list[dict[str, Any]]:
        return [line for line in json_lines(instance) if line["message"].startswith("overage")]

    (overage,) = await eventually(overage_logged, what="the overage warning")
    assert overage["level"] == "WARNING" and overage["lease_id"] == lease_id, overage
    assert overage["model"] == job.acquire.model_id and overage["job_id"].startswith("job-"), overage

    proxy.proc.send_signal(signal.SIGHUP)

    async def reread() -> bool:
        return any("re-read" in line["message"] for line in json_lines(proxy))

    await eventually(reread, what="the proxy to log the token file re-read")
    assert all("tok-logs" not in p.log.read_text() for p in (instance, proxy))
