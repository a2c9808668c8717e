"""rlprovider as a process, called through the official OpenAI and Anthropic SDKs."""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from rllocal.processes import poll_until, spawn_module, stop_process

GPT = "gpt-5.2"
CLAUDE = "claude-sonnet-4-5"
CONFIG = f"""
seed: 11
latency_ms: {{min: 0, max: 0}}
output_tokens: {{min: 5, max: 40}}
default_max_tokens: 64
keys:
  sk-roomy:
    {GPT}: {{api: openai, requests_per_minute: 1000, tokens_per_minute: 100000, cached_share: 0.5}}
    {CLAUDE}:
      api: anthropic
      requests_per_minute: 1000
      input_tokens_per_minute: 100000
      output_tokens_per_minute: 100000
      cached_share: 0.5
  sk-burst:
    {GPT}: {{api: openai, requests_per_minute: 3, tokens_per_minute: 100000}}
    {CLAUDE}: {{api: anthropic, requests_per_minute: 1000, input_tokens_per_minute: 50, output_tokens_per_minute: 1000}}
  sk-single:
    {GPT}:
      api: openai
      max_concurrent_requests: 1
      latency_ms: {{min: 3000, max: 3000}}
"""
# With ask_claude's system prompt, 40 input tokens: 29 + 3 for the message, 2 + 3 for the system
# prompt and 3 for the request.
FORTY_TOKENS = "x" * 116
TIMEOUT = 30.0


def start(tmp_path: Path, config: str) -> tuple[subprocess.Popen[str], int]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "provider.yaml"
    path.write_text(config)
    return spawn_module("rlprovider", ["--port", "0", "--config", str(path)], tmp_path / "provider.log", TIMEOUT)


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    proc, port = start(tmp_path_factory.mktemp("provider"), CONFIG)
    try:
        yield port
    finally:
        stop_process(proc)


def gpt(port: int, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0, timeout=TIMEOUT)


def claude(port: int, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=f"http://127.0.0.1:{port}", api_key=key, max_retries=0, timeout=TIMEOUT)


def stats(port: int) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=TIMEOUT) as answer:
        return json.load(answer)


def ask_gpt(client: openai.OpenAI, text: str = "hello there", max_tokens: int | None = None) -> Any:
    return client.chat.completions.with_raw_response.create(
        model=GPT,
        messages=[{"role": "user", "content": text}],
        max_tokens=openai.omit if max_tokens is None else max_tokens,
    )


def ask_claude(client: anthropic.Anthropic, text: str = "hello there", max_tokens: int = 30) -> Any:
    return client.messages.with_raw_response.create(
        model=CLAUDE, max_tokens=max_tokens, system="be brief", messages=[{"role": "user", "content": text}]
    )


def test_openai_answer_parses_with_usage_and_headers(port: int) -> None:
    raw = ask_gpt(gpt(port, "sk-roomy"), text="hello there", max_tokens=30)
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.model == GPT
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert completion.usage is not None
    usage = completion.usage
    assert usage.prompt_tokens == 3 + 3 + 3  # 11 characters: 3 tokens, plus the overheads
    assert 5 <= usage.completion_tokens <= 30
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 4  # half the prompt, rounded down
    assert choice.finish_reason == ("length" if usage.completion_tokens == 30 else "stop")
    headers = raw.headers
    assert headers["x-ratelimit-limit-requests"] == "1000"
    assert headers["x-ratelimit-limit-tokens"] == "100000"
    # Charged on arrival: the prompt plus max_tokens, before the refill of a few milliseconds.
    assert 100000 - 9 - 30 <= int(headers["x-ratelimit-remaining-tokens"]) < 100000
    assert int(headers["x-ratelimit-remaining-requests"]) == 999
    assert headers["x-ratelimit-reset-requests"].endswith("ms")
    assert headers["x-request-id"].startswith("req_")


def test_openai_checks_default_max_tokens_when_none_is_given(port: int) -> None:
    raw = ask_gpt(gpt(port, "sk-roomy"))
    assert raw.parse().usage.completion_tokens <= 64
    assert 100000 - 9 - 64 <= int(raw.headers["x-ratelimit-remaining-tokens"]) < 100000 - 9 - 30


def test_anthropic_answer_parses_with_usage_and_headers(port: int) -> None:
    raw = ask_claude(claude(port, "sk-roomy"), max_tokens=30)
    message = raw.parse()
    assert (message.type, message.role, message.model) == ("message", "assistant", CLAUDE)
    assert message.content[0].type == "text"
    assert message.stop_sequence is None
    usage = message.usage
    # System and message, 3 + 2 and 3 + 3 tokens, and 3 for the request; half of it read from cache.
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (7, 7, 0)
    assert 5 <= usage.output_tokens <= 30
    assert message.stop_reason == ("max_tokens" if usage.output_tokens == 30 else "end_turn")
    headers = raw.headers
    assert headers["anthropic-ratelimit-requests-limit"] == "1000"
    assert headers["anthropic-ratelimit-input-tokens-limit"] == "100000"
    assert 100000 - 7 <= int(headers["anthropic-ratelimit-input-tokens-remaining"]) < 100000
    assert 100000 - 30 <= int(headers["anthropic-ratelimit-output-tokens-remaining"]) < 100000
    assert headers["anthropic-ratelimit-tokens-remaining"] == headers["anthropic-ratelimit-output-tokens-remaining"]
    assert headers["anthropic-ratelimit-output-tokens-reset"].endswith("Z")
    assert headers["request-id"].startswith("req_")


def test_a_burst_past_the_limits_is_refused_and_counted(port: int) -> None:
    openai_client = gpt(port, "sk-burst")
    for _ in range(3):
        ask_gpt(openai_client)
    with pytest.raises(openai.RateLimitError) as openai_refusal:
        ask_gpt(openai_client)
    headers = openai_refusal.value.response.headers
    # One request missing from a bucket of 3 a minute: about 20 s.
    assert 1 <= int(headers["retry-after"]) <= 20
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-limit-requests"] == "3"
    error = openai_refusal.value.body
    assert isinstance(error, dict)
    assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
    assert "on requests per min (RPM): Limit 3, Used 3, Requested 1" in error["message"]

    anthropic_client = claude(port, "sk-burst")
    # Each call asks for 40 of the 50 input tokens a minute.
    ask_claude(anthropic_client, text=FORTY_TOKENS)
    with pytest.raises(anthropic.RateLimitError) as anthropic_refusal:
        ask_claude(anthropic_client, text=FORTY_TOKENS)
    headers = anthropic_refusal.value.response.headers
    assert 10 <= int(headers["anthropic-ratelimit-input-tokens-remaining"]) < 40
    # 30 tokens missing at 50 a minute: 36 s, less what refilled since the first call.
    assert 30 <= int(headers["retry-after"]) <= 36
    body = anthropic_refusal.value.body
    assert isinstance(body, dict)
    assert (body["type"], body["error"]["type"], body["request_id"]) == (
        "error",
        "rate_limit_error",
        headers["request-id"],
    )
    assert "50 input tokens per minute" in body["error"]["message"]

    burst = stats(port)["keys"]["sk-burst"]
    assert burst[GPT]["accepted"]["requests"] == 3
    assert burst[GPT]["refused"]["requests"] == 1
    assert burst[GPT]["refused_by"] == {"requests_per_minute": 1}
    assert burst[CLAUDE]["accepted"]["requests"] == 1
    assert burst[CLAUDE]["refused"] == {
        "requests": 1,
        "tokens": 40 + 30,
        "input_tokens": 40,
        "cached_tokens": 0,
        "output_tokens": 30,
    }
    assert burst[CLAUDE]["refused_by"] == {"input_tokens_per_minute": 1}
    (minute,) = burst[GPT]["minutes"].values()
    assert (minute["accepted"]["requests"], minute["refused"]["requests"]) == (3, 1)
    assert minute["accepted"]["tokens"] == burst[GPT]["accepted"]["tokens"]


def test_unknown_key_is_401_and_unknown_model_404(port: int) -> None:
    with pytest.raises(openai.AuthenticationError) as openai_401:
        ask_gpt(gpt(port, "sk-nobody"))
    assert isinstance(openai_401.value.body, dict)
    assert openai_401.value.body["code"] == "invalid_api_key"
    with pytest.raises(anthropic.AuthenticationError) as anthropic_401:
        ask_claude(claude(port, "sk-nobody"))
    assert anthropic_401.value.status_code == 401
    with pytest.raises(openai.NotFoundError):
        gpt(port, "sk-roomy").chat.completions.create(model=CLAUDE, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="streaming is not simulated"):
        gpt(port, "sk-roomy").chat.completions.create(
            model=GPT, messages=[{"role": "user", "content": "hi"}], stream=True
        )
    errors = stats(port)["errors"]
    assert errors["401"] >= 2
    assert errors["404"] >= 1


def test_concurrency_limit_refuses_while_a_call_is_in_flight(port: int) -> None:
    client = gpt(port, "sk-single")
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(ask_gpt, client)
        poll_until(lambda: stats(port)["keys"]["sk-single"][GPT]["in_flight"] == 1, timeout=TIMEOUT, what="in flight")
        with pytest.raises(openai.RateLimitError, match="Too many concurrent requests") as refusal:
            ask_gpt(client)
        assert refusal.value.response.headers["retry-after"] == "1"
        assert first.result(TIMEOUT).parse().choices[0].message.content
    single = stats(port)["keys"]["sk-single"][GPT]
    assert (single["peak_in_flight"], single["in_flight"]) == (1, 0)
    assert single["refused_by"] == {"max_concurrent_requests": 1}


def test_same_seed_same_answers_and_sigterm_exits_0(tmp_path: Path) -> None:
    runs = []
    for run in range(2):
        proc, port = start(tmp_path / str(run), CONFIG)
        try:
            client = gpt(port, "sk-roomy")
            runs.append([ask_gpt(client, max_tokens=40).parse().usage.completion_tokens for _ in range(6)])
        finally:
            proc.send_signal(signal.SIGTERM)
            returncode = proc.wait(TIMEOUT)
            stop_process(proc)
        assert returncode == 0
    assert runs[0] == runs[1]
    assert len(set(runs[0])) > 1


def test_a_bad_config_exits_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"keys\.k\.m\.requests_per_minute: Input should be greater than 0"):
        start(tmp_path, "keys: {k: {m: {api: openai, requests_per_minute: 0}}}")
