"""Each API's parsing, demand and headers, without a server."""

from __future__ import annotations

import pytest

from rlprovider.anthropic_api import AnthropicApi
from rlprovider.calls import ApiError, Call, ErrorKind, Outcome
from rlprovider.limits import Dim, Level
from rlprovider.openai_api import OpenAiApi, param_name

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def test_openai_headers_only_for_limited_dimensions() -> None:
    levels = {Dim.REQUESTS: Level(3, 0, 59.941), Dim.TOKENS: Level(500_000, 499_984, 0.0019)}
    assert OpenAiApi().limit_headers(levels, NOW) == {
        "x-ratelimit-limit-requests": "3",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "59.941s",
        "x-ratelimit-limit-tokens": "500000",
        "x-ratelimit-remaining-tokens": "499984",
        "x-ratelimit-reset-tokens": "2ms",
    }
    assert OpenAiApi().limit_headers({Dim.TOKENS: Level(10, 10, 0.0)}, NOW) == {
        "x-ratelimit-limit-tokens": "10",
        "x-ratelimit-remaining-tokens": "10",
        "x-ratelimit-reset-tokens": "0s",
    }


def test_anthropic_tokens_headers_show_the_most_restrictive_token_limit() -> None:
    levels = {Dim.INPUT: Level(30_000, 29_000, 2.0), Dim.OUTPUT: Level(8000, 100, 59.2)}
    headers = AnthropicApi().limit_headers(levels, NOW)
    assert headers == {
        "anthropic-ratelimit-input-tokens-limit": "30000",
        "anthropic-ratelimit-input-tokens-remaining": "29000",
        "anthropic-ratelimit-input-tokens-reset": "2023-11-14T22:13:22Z",
        "anthropic-ratelimit-output-tokens-limit": "8000",
        "anthropic-ratelimit-output-tokens-remaining": "100",
        "anthropic-ratelimit-output-tokens-reset": "2023-11-14T22:14:20Z",
        "anthropic-ratelimit-tokens-limit": "8000",
        "anthropic-ratelimit-tokens-remaining": "100",
        "anthropic-ratelimit-tokens-reset": "2023-11-14T22:14:20Z",
    }
    assert AnthropicApi().limit_headers({Dim.REQUESTS: Level(50, 49, 1.2)}, NOW) == {
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "49",
        "anthropic-ratelimit-requests-reset": "2023-11-14T22:13:22Z",
    }


def test_openai_checks_the_prompt_plus_the_completion_cap() -> None:
    api = OpenAiApi()
    body = {"model": "m", "messages": [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi"}]}
    assert api.parse(body, "m", default_max_tokens=1024) == Call("m", 3 + 5 + 4, 1024)
    assert api.parse({**body, "max_tokens": 50}, "m", 1024).max_tokens == 50
    assert api.parse({**body, "max_tokens": 50, "max_completion_tokens": 70}, "m", 1024).max_tokens == 70
    call = Call("m", 100, 50)
    assert api.demand(call, cached_tokens=40) == {Dim.REQUESTS: 1, Dim.TOKENS: 150}
    assert api.usage(Outcome(call, 40, 20)) == {Dim.REQUESTS: 1, Dim.TOKENS: 120}


def test_anthropic_leaves_cache_reads_out_of_input_tokens() -> None:
    api = AnthropicApi()
    body = {
        "model": "m",
        "max_tokens": 64,
        "system": [{"type": "text", "text": "be nice"}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": " you"}]}],
    }
    assert api.parse(body, "m", default_max_tokens=1024) == Call("m", 3 + 5 + 5, 64)
    call = Call("m", 100, 64)
    assert api.demand(call, cached_tokens=40) == {Dim.REQUESTS: 1, Dim.INPUT: 60, Dim.OUTPUT: 64, Dim.TOKENS: 124}
    assert api.usage(Outcome(call, 40, 20)) == {Dim.REQUESTS: 1, Dim.INPUT: 60, Dim.OUTPUT: 20, Dim.TOKENS: 80}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": "x"}], "stream": True}, "stream"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content[0]"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": "9"}, "max_tokens"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": True}, "max_tokens"),
        ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
    ],
)
def test_openai_bad_fields_are_400_naming_the_param(body: dict[str, object], param: str) -> None:
    api = OpenAiApi()
    with pytest.raises(ApiError) as caught:
        api.parse({"model": "m", **body}, "m", 1024)
    assert caught.value.kind is ErrorKind.INVALID_REQUEST
    assert param_name(caught.value.path) == param
    assert api.error_body(caught.value, "req_1")["error"]["param"] == param


def test_anthropic_requires_max_tokens() -> None:
    api = AnthropicApi()
    with pytest.raises(ApiError) as caught:
        api.parse({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "m", 1024)
    assert api.error_body(caught.value, "req_1") == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
        "request_id": "req_1",
    }


def test_keys_come_from_each_providers_header() -> None:
    assert OpenAiApi().api_key({"Authorization": "Bearer sk-1"}) == "sk-1"
    assert OpenAiApi().api_key({"Authorization": "Basic sk-1"}) is None
    assert OpenAiApi().api_key({}) is None
    assert AnthropicApi().api_key({"x-api-key": "sk-2"}) == "sk-2"
    assert AnthropicApi().api_key({"x-api-key": ""}) is None
    assert AnthropicApi().api_key({"Authorization": "Bearer sk-3"}) == "sk-3"
