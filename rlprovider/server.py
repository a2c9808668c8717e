"""The aiohttp application: the routes, and the path every call takes (key, body, model, limits on
arrival, latency, settle at the end)."""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import time
from dataclasses import dataclass

from aiohttp import web

from .anthropic_api import AnthropicApi
from .calls import Api, ApiError, Call, ErrorKind, JsonObject, Outcome, require_object
from .config import ModelConfig, Settings
from .draws import Draws
from .limits import CONCURRENCY, Dim, Limiter, Refused
from .openai_api import OpenAiApi
from .stats import ModelStats, minute_of
from .timefmt import retry_after
from .tokens import filler

# Anthropic's own cap on a request's size; aiohttp's default of 1 MiB is below long prompts.
MAX_BODY_BYTES = 32 * 1024 * 1024
LIMIT_NAMES = (*(dim.value for dim in Dim), CONCURRENCY)


@dataclass
class ModelEntry:
    config: ModelConfig
    limiter: Limiter
    stats: ModelStats


class Provider:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._draws = Draws(settings.seed)
        self._models = {
            key: {name: ModelEntry(config, Limiter(config, time.monotonic), ModelStats()) for name, config in m.items()}
            for key, m in settings.keys.items()
        }
        self._errors: dict[int, int] = {}
        self._openai = OpenAiApi()
        self._anthropic = AnthropicApi()

    async def chat_completions(self, request: web.Request) -> web.Response:
        return await self._serve(request, self._openai)

    async def messages(self, request: web.Request) -> web.Response:
        return await self._serve(request, self._anthropic)

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.snapshot())

    def snapshot(self) -> JsonObject:
        now_ms = _unix_ms(time.time())
        return {
            "unix_ms": now_ms,
            "minute": minute_of(now_ms),
            "errors": {str(status): n for status, n in sorted(self._errors.items())},
            "keys": {
                key: {name: self._model_snapshot(entry) for name, entry in models.items()}
                for key, models in self._models.items()
            },
        }

    async def _serve(self, request: web.Request, api: Api) -> web.Response:
        request_id = f"req_{secrets.token_hex(16)}"
        headers = {api.request_id_header: request_id}
        try:
            entry, call = await self._parse(request, api)
        except ApiError as e:
            status = e.kind.value
            self._errors[status] = self._errors.get(status, 0) + 1
            return web.json_response(api.error_body(e, request_id), status=status, headers=headers)
        cached = math.floor(call.prompt_tokens * entry.config.cached_share)
        demand = api.demand(call, cached)
        verdict = entry.limiter.admit(demand)
        now_unix = time.time()
        headers.update(api.limit_headers(verdict.levels, now_unix))
        if isinstance(verdict, Refused):
            entry.stats.refuse(call, cached, verdict.limit_name, _unix_ms(now_unix))
            headers["retry-after"] = str(retry_after(verdict.wait_s))
            return web.json_response(api.refusal_body(verdict, call.model, request_id), status=429, headers=headers)
        latency = self._draws.latency_s(self._settings.latency_for(entry.config))
        output = self._draws.output_tokens(self._settings.output_for(entry.config), call.max_tokens)
        outcome = Outcome(call, cached, output)
        try:
            await asyncio.sleep(latency)
        finally:
            # Also when the call is cancelled at shutdown: the capacity it held must come back.
            entry.limiter.settle(demand, api.usage(outcome))
            entry.stats.accept(outcome, _unix_ms(time.time()))
        body = api.answer_body(outcome, filler(outcome.output_tokens), request_id, now_unix)
        return web.json_response(body, headers=headers)

    async def _parse(self, request: web.Request, api: Api) -> tuple[ModelEntry, Call]:
        key = api.api_key(request.headers)
        models = self._models.get(key) if key is not None else None
        if models is None:
            raise api.unknown_key()
        try:
            body = require_object(json.loads(await request.read()))
        except ValueError:
            raise ApiError(ErrorKind.INVALID_REQUEST, "the request body is not valid JSON") from None
        model = api.model_of(body)
        entry = models.get(model)
        if entry is None or entry.config.api != api.name:
            raise api.unknown_model(model)
        return entry, api.parse(body, model, self._settings.default_max_tokens)

    def _model_snapshot(self, entry: ModelEntry) -> JsonObject:
        return {
            "api": entry.config.api,
            "limits": entry.config.model_dump(include=set(LIMIT_NAMES), exclude_none=True),
            "in_flight": entry.limiter.in_flight,
            "peak_in_flight": entry.limiter.peak_in_flight,
            **entry.stats.snapshot(),
        }


def _unix_ms(unix_seconds: float) -> int:
    return int(unix_seconds * 1000)


def build_app(provider: Provider) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_post("/v1/chat/completions", provider.chat_completions)
    app.router.add_post("/v1/messages", provider.messages)
    app.router.add_get("/stats", provider.stats)
    return app
