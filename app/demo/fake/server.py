"""The aiohttp application: OpenAI `/v1` routes with per-key fault modes, and `/_control` routes.

Order of checks on a chat request: Bearer key (401) -> the key's fault mode -> body (400) ->
model (404) -> rate windows (429) -> answer. `/v1/models` applies the same key check and fault
mode, and answers 429 while a window is full without using it up, so probes cost no budget.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from types import TracebackType
from typing import NoReturn

import orjson
from aiohttp import web

from app.demo.fake import bodies
from app.demo.fake.bodies import BadRequest, ChatParams, ChunkEncoder
from app.demo.fake.limits import (
    KeyLimiter,
    full_limiter,
    rate_headers,
    retry_headers,
    tightest_status,
)
from app.demo.fake.state import FakeProviderState, KeyRuntime

STATE = web.AppKey("state", FakeProviderState)

_STATUS_FAULTS = {
    "unauthorized": (401, "Incorrect API key provided."),
    "forbidden": (403, "You are not allowed to use this API key."),
    "error_500": (500, "The server had an error while processing your request."),
    "bad_request": (400, "Invalid value for 'messages': rejected by the fake provider."),
}
_EVENT_STREAM_HEADERS = {"content-type": "text/event-stream", "cache-control": "no-cache"}
_JSON = "application/json"


class _InFlight:
    """Counts a request as in flight until its handler ends, however it ends (cancel included)."""

    __slots__ = ("rt", "state")

    def __init__(self, state: FakeProviderState, rt: KeyRuntime) -> None:
        self.state, self.rt = state, rt

    def __enter__(self) -> None:
        self.state.stats.in_flight += 1
        self.rt.counters.in_flight += 1

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.state.stats.in_flight -= 1
        self.rt.counters.in_flight -= 1


def _json(rt: KeyRuntime | None, status: int, body: bytes, headers: dict[str, str]) -> web.Response:
    """A JSON answer; `rt` is passed for chat requests, whose statuses are counted per key."""
    if rt is not None:
        rt.counters.status[str(status)] += 1
    return web.Response(status=status, body=body, headers=headers, content_type=_JSON)


def _window_headers(rt: KeyRuntime) -> dict[str, str]:
    return rate_headers(*tightest_status(rt.limiters, time.monotonic()))


def _unknown_key() -> web.Response:
    body = bodies.error_body(401, "Incorrect API key provided.")
    return web.Response(status=401, body=body, content_type=_JSON)


def _rate_limited(rt: KeyRuntime, counted: KeyRuntime | None) -> web.Response:
    """Mode `rate_limited`: remaining 0, plus a reset and Retry-After only when one is set."""
    retry_after = rt.behaviour.retry_after_s
    limit = rt.limiter.status(time.monotonic())[0]
    headers = rate_headers(limit, 0, retry_after or 0.0)
    if retry_after is None:
        del headers["x-ratelimit-reset-requests"]
    else:
        headers.update(retry_headers(retry_after))
    body = bodies.error_body(429, "Rate limit reached for requests.")
    return _json(counted, 429, body, headers)


def _window_full(limiter: KeyLimiter, counted: KeyRuntime | None) -> web.Response:
    limit, _, reset_s = limiter.status(time.monotonic())
    headers = rate_headers(limit, 0, reset_s)
    headers.update(retry_headers(reset_s))
    body = bodies.error_body(429, f"Rate limit reached for requests: limit {limit}.")
    return _json(counted, 429, body, headers)


async def _hang() -> NoReturn:
    """Wait until the client leaves: the disconnect cancels the handler (handler_cancellation)."""
    await asyncio.get_running_loop().create_future()
    raise AssertionError("unreachable")


def _drop(request: web.Request, rt: KeyRuntime, *, abort: bool) -> None:
    """Close the TCP connection; whatever the handler returns next fails to write, quietly."""
    rt.counters.dropped += 1
    transport = request.transport
    if transport is None:
        return
    # abort() discards unsent bytes (a reset); close() first flushes the chunks already written.
    if abort:
        transport.abort()
    else:
        transport.close()


async def _fault(request: web.Request, rt: KeyRuntime, *, chat: bool) -> web.Response | None:
    """The answer the key's mode forces, or None when the request goes on normally."""
    mode = rt.behaviour.mode
    if mode == "stream_fail_before_first" and not chat:
        mode = "error_500"  # a probe sees a key that fails its streams as failing
    if mode == "bad_request" and not chat:
        mode = "ok"  # a request-level rejection says nothing about the key itself
    counted = rt if chat else None
    if mode == "echo_key" and chat:
        # Like providers that quote the credential they refused, placed so a 500-character cut
        # would split it: the gateway must hide it whole and in part.
        given = request.headers.get("Authorization", "").removeprefix("Bearer ")
        message = "x" * (490 - len("Incorrect API key: ")) + f"Incorrect API key: {given}"
        return _json(counted, 400, bodies.error_body(400, message), _window_headers(rt))
    fault = _STATUS_FAULTS.get(mode)
    if fault is not None:
        status, message = fault
        return _json(counted, status, bodies.error_body(status, message), _window_headers(rt))
    if mode == "rate_limited":
        return _rate_limited(rt, counted)
    if mode == "quota_exceeded" and chat:  # listing models still works, as at OpenAI
        return _json(counted, 429, bodies.quota_body(), {})
    if mode == "hang":
        await _hang()
    if mode == "reset":
        _drop(request, rt, abort=True)
        return web.Response()
    return None


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    state.stats.total_requests += 1
    rt = state.lookup(request.headers.get("Authorization"))
    if rt is None:
        state.stats.unknown_key_requests += 1
        return _unknown_key()
    rt.counters.requests += 1
    with _InFlight(state, rt):
        return await _serve_chat(request, state, rt)


async def _serve_chat(
    request: web.Request, state: FakeProviderState, rt: KeyRuntime
) -> web.StreamResponse:
    raw = await request.read()
    forced = await _fault(request, rt, chat=True)
    if forced is not None:
        return forced
    try:
        params = bodies.parse_chat(raw)
    except BadRequest as exc:
        return _json(rt, 400, bodies.error_body(400, str(exc)), _window_headers(rt))
    if state.models is not None and params.model not in state.models:
        message = f"The model `{params.model}` does not exist or you do not have access to it."
        return _json(rt, 404, bodies.error_body(404, message), _window_headers(rt))
    full = full_limiter(rt.limiters, time.monotonic())
    if full is not None:
        return _window_full(full, rt)
    if params.stream:
        return await _stream(request, state, rt, params)
    if rt.behaviour.mode == "stream_fail_before_first":
        message = "The server had an error while processing your request."
        return _json(rt, 500, bodies.error_body(500, message), _window_headers(rt))
    return await _complete(rt, params)


async def _complete(rt: KeyRuntime, params: ChatParams) -> web.Response:
    behaviour = rt.behaviour
    if behaviour.latency_ms > 0:
        await asyncio.sleep(behaviour.latency_ms / 1000)
    chunks, finish_reason = bodies.completion_size(behaviour.chunks, params.max_tokens)
    rt.counters.ok += 1
    body = bodies.completion_body(params, chunks, finish_reason)
    return _json(rt, 200, body, _window_headers(rt))


async def _stream(
    request: web.Request, state: FakeProviderState, rt: KeyRuntime, params: ChatParams
) -> web.StreamResponse:
    headers = _window_headers(rt)
    headers.update(_EVENT_STREAM_HEADERS)
    response = web.StreamResponse(headers=headers)
    state.stats.streams_open += 1
    rt.counters.streams_open += 1
    try:
        await response.prepare(request)
        rt.counters.status["200"] += 1
        await _write_events(request, response, rt, params)
    except ConnectionResetError:  # the client left mid-stream
        pass
    finally:
        state.stats.streams_open -= 1
        rt.counters.streams_open -= 1
    return response


async def _write_events(
    request: web.Request, response: web.StreamResponse, rt: KeyRuntime, params: ChatParams
) -> None:
    behaviour = rt.behaviour
    chunks, finish_reason = bodies.completion_size(behaviour.chunks, params.max_tokens)
    if behaviour.ttft_ms > 0:
        await asyncio.sleep(behaviour.ttft_ms / 1000)
    if behaviour.mode == "stream_fail_before_first":
        _drop(request, rt, abort=False)
        return
    cut = behaviour.mode == "stream_cut"
    sent = min(chunks, behaviour.cut_after) if cut else chunks
    encoder = ChunkEncoder(params.model)
    interval = behaviour.chunk_interval_ms / 1000
    for index in range(sent):
        if index and interval > 0:
            await asyncio.sleep(interval)
        await response.write(encoder.content(index))
    if cut:
        _drop(request, rt, abort=False)
        return
    tail = encoder.finish(finish_reason)
    if params.include_usage:
        tail += encoder.usage(params, chunks)
    await response.write(tail + bodies.DONE_EVENT)
    await response.write_eof()
    rt.counters.ok += 1


async def list_models(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    state.stats.total_models_requests += 1
    rt = state.lookup(request.headers.get("Authorization"))
    if rt is None:
        state.stats.unknown_key_requests += 1
        return _unknown_key()
    rt.counters.models_requests += 1
    with _InFlight(state, rt):
        forced = await _fault(request, rt, chat=False)
        if forced is not None:
            return forced
        now = time.monotonic()
        full = next((lim for lim in rt.limiters if lim.status(now)[1] <= 0), None)
        if full is not None:
            return _window_full(full, None)
        return _json(None, 200, bodies.models_body(state.config.models), _window_headers(rt))


async def control_stats(request: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps(request.app[STATE].snapshot()), content_type=_JSON)


async def control_keys(request: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps(request.app[STATE].behaviours()), content_type=_JSON)


async def control_set_key(request: web.Request) -> web.Response:
    """Apply a partial KeyBehaviour (JSON object) to a key, adding the key if it is new."""
    try:
        changes = orjson.loads(await request.read())
        if not isinstance(changes, dict):
            raise ValueError("expected a JSON object of KeyBehaviour fields")
        behaviour = request.app[STATE].update_key(request.match_info["key"], changes)
    except (ValueError, TypeError) as exc:
        return web.Response(status=400, body=bodies.error_body(400, str(exc)), content_type=_JSON)
    return web.Response(body=orjson.dumps(dataclasses.asdict(behaviour)), content_type=_JSON)


async def control_reset(request: web.Request) -> web.Response:
    request.app[STATE].reset()
    return web.Response(body=b'{"ok":true}', content_type=_JSON)


def build_app(state: FakeProviderState) -> web.Application:
    app = web.Application(client_max_size=32 * 1024 * 1024)
    app[STATE] = state
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/_control/stats", control_stats)
    app.router.add_get("/_control/keys", control_keys)
    app.router.add_put("/_control/keys/{key}", control_set_key)
    app.router.add_post("/_control/reset", control_reset)
    return app
