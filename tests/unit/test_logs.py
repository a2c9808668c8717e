"""The JSON log line: its keys, the per-record and per-call ids, exceptions."""

from __future__ import annotations

import json
import logging
import sys

from rlcommon.logs import JsonFormatter, _call_fields


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("rlservice.limiter", logging.WARNING, __file__, 1, message, args, None)
    rec.__dict__.update(extra)
    return rec


def test_a_line_is_one_json_object_with_the_required_keys() -> None:
    line = JsonFormatter().format(record("overage on %s: %d tokens", "m1", 12))
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["level"] == "WARNING" and parsed["logger"] == "rlservice.limiter"
    assert parsed["message"] == "overage on m1: 12 tokens"
    assert parsed["time"].endswith("+00:00") and "T" in parsed["time"]
    assert not {"lease_id", "job_id", "model"} & parsed.keys()


def test_ids_come_from_the_record_else_from_the_call_being_served() -> None:
    reset = _call_fields.set({"job_id": "job-7", "lease_id": "i/from-call"})
    try:
        parsed = json.loads(JsonFormatter().format(record("x", lease_id="i/own", model="openai/gpt-5.2")))
    finally:
        _call_fields.reset(reset)
    assert (parsed["lease_id"], parsed["job_id"], parsed["model"]) == ("i/own", "job-7", "openai/gpt-5.2")


def test_an_exception_stays_inside_the_line() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        rec = record("failed")
        rec.exc_info = sys.exc_info()
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    assert "ValueError: boom\nsecond line" in json.loads(line)["exception"]
