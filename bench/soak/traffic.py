"""Mixed client traffic for the soak: REST Path A/B, SSE, websocket and the openai SDK.

Open loop: one request starts every 1/rate seconds whatever the previous ones are doing, so a
slow gateway shows up as latency, not as a lower request rate. Each request is one `Rec`:
what the client saw, classified (ok, documented error envelope, interrupted stream, other).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import orjson
import websockets
from openai.types.chat import ChatCompletionMessageParam

CLIENT_TIMEOUT_S = 60.0
USERS = 40  # distinct X-User-Id values: user groups get exercised, the users table stays small
MESSAGES = [{"role": "user", "content": "soak"}]
SDK_MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "soak"}]


@dataclass(slots=True)
class Rec:
    kind: str
    target: str  # "A" (Path A), or the provider a Path B request names
    instance: int
    started: float  # seconds since the run started
    seconds: float = 0.0
    status: int = 0
    outcome: str = "ok"  # ok | envelope | interrupted | other
    error_type: str | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Kind:
    name: str
    target: str
    run: Callable[[Traffic, str, int, Rec], Awaitable[None]]


def envelope_type(body: Any) -> str | None:
    """The error type of a documented envelope ({"error": {"type", "message"}}; /v1 puts
    keypool's type in `code`), or None when the body is not one."""
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return None
    error = body["error"]
    if not isinstance(error.get("type"), str) or not isinstance(error.get("message"), str):
        return None
    code = error.get("code")
    return code if isinstance(code, str) else str(error["type"])


def _classify_http(rec: Rec, status: int, raw: bytes) -> None:
    rec.status = status
    if 200 <= status < 300:
        return
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    kind = envelope_type(body)
    rec.outcome = "envelope" if kind is not None else "other"
    rec.error_type = kind
    rec.detail = raw[:200].decode(errors="replace")


def _model(target: str) -> str | None:
    return None if target == "A" else f"{target}/fake-small"


async def rest(traffic: Traffic, base: str, user: int, rec: Rec) -> None:
    body: dict[str, Any] = {"messages": MESSAGES}
    if (model := _model(rec.target)) is not None:
        body["model"] = model
    answer = await traffic.http.post(f"{base}/api/chat", json=body, headers=_user(user))
    _classify_http(rec, answer.status_code, answer.content)


async def sse(traffic: Traffic, base: str, user: int, rec: Rec) -> None:
    body: dict[str, Any] = {"messages": MESSAGES}
    if (model := _model(rec.target)) is not None:
        body["model"] = model
    url = f"{base}/api/chat/stream"
    async with traffic.http.stream("POST", url, json=body, headers=_user(user)) as answer:
        if answer.status_code != 200:
            _classify_http(rec, answer.status_code, await answer.aread())
            return
        rec.status = 200
        events = [
            orjson.loads(line[6:])
            async for line in answer.aiter_lines()
            if line.startswith("data: ") and line != "data: [DONE]"
        ]
    _classify_events(rec, events)


def _classify_events(rec: Rec, events: Sequence[dict[str, Any]]) -> None:
    """start, chunk…, done; an error event after start is the documented mid-stream failure."""
    last = events[-1] if events else {}
    if last.get("type") == "done" and events[0].get("type") == "start":
        return
    if last.get("type") == "error":
        started = any(e.get("type") == "start" for e in events)
        error = last.get("error") or {}
        rec.error_type = error.get("type")
        rec.status = int(last.get("status") or rec.status)
        if started:
            rec.outcome = "interrupted"
        else:
            rec.outcome = "envelope" if envelope_type({"error": error}) else "other"
        return
    rec.outcome, rec.detail = "other", f"stream ended without done: {str(last)[:160]}"


async def ws(traffic: Traffic, base: str, user: int, rec: Rec) -> None:
    url = "ws" + base.removeprefix("http") + "/api/chat/ws"
    frame: dict[str, Any] = {"id": 1, "messages": MESSAGES}
    if (model := _model(rec.target)) is not None:
        frame["model"] = model
    events: list[dict[str, Any]] = []
    async with websockets.connect(url, additional_headers=_user(user), open_timeout=30) as sock:
        await sock.send(orjson.dumps(frame).decode())
        while True:
            event = orjson.loads(await sock.recv())
            events.append(event)
            if event.get("type") in ("done", "error"):
                break
    rec.status = 200 if events[-1].get("type") == "done" else int(events[-1].get("status") or 0)
    _classify_events(rec, events)


async def sdk(traffic: Traffic, base: str, user: int, rec: Rec, *, stream: bool) -> None:
    client = traffic.sdk(base)
    model = _model(rec.target) or "auto"
    try:
        if not stream:
            await client.chat.completions.create(
                model=model,
                messages=SDK_MESSAGES,
                user=f"u{user}",
            )
            rec.status = 200
            return
        answer = await client.chat.completions.create(
            model=model,
            messages=SDK_MESSAGES,
            user=f"u{user}",
            stream=True,
        )
        rec.status = 200
        async for _ in answer:
            pass
    except openai.APIStatusError as exc:
        _classify_http(rec, exc.status_code, exc.response.content)
    except openai.APIError as exc:  # an error event inside a started stream
        if stream and rec.status == 200:
            rec.outcome, rec.error_type = "interrupted", type(exc).__name__
            rec.detail = str(exc)[:200]
        else:
            raise


async def sdk_plain(traffic: Traffic, base: str, user: int, rec: Rec) -> None:
    await sdk(traffic, base, user, rec, stream=False)


async def sdk_stream(traffic: Traffic, base: str, user: int, rec: Rec) -> None:
    await sdk(traffic, base, user, rec, stream=True)


def _user(user: int) -> dict[str, str]:
    return {"X-User-Id": f"u{user}"}


# The mix, taken in turn: every kind, Path A and both Path B providers.
KINDS = (
    Kind("rest", "A", rest),
    Kind("sse", "A", sse),
    Kind("rest", "alpha", rest),
    Kind("sdk", "A", sdk_plain),
    Kind("ws", "A", ws),
    Kind("rest", "beta", rest),
    Kind("sdk_stream", "A", sdk_stream),
    Kind("sse", "beta", sse),
    Kind("sdk_stream", "alpha", sdk_stream),
    Kind("ws", "beta", ws),
)


@dataclass
class Traffic:
    """Sends `rate` requests a second to the instances `pick` names, until `stop()`."""

    rate: float
    bases: dict[int, str]  # instance number → base URL
    origin: float = field(default_factory=time.monotonic)
    records: list[Rec] = field(default_factory=list)
    active: set[int] = field(default_factory=set)  # instances taking new requests
    in_flight: dict[int, int] = field(default_factory=dict)
    http: httpx.AsyncClient = field(init=False)
    _clients: dict[str, openai.AsyncOpenAI] = field(default_factory=dict)
    _stopping: bool = False
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
        self.http = httpx.AsyncClient(timeout=CLIENT_TIMEOUT_S, limits=limits)
        self.active = set(self.bases)
        self.in_flight = dict.fromkeys(self.bases, 0)

    def sdk(self, base: str) -> openai.AsyncOpenAI:
        client = self._clients.get(base)
        if client is None:
            client = openai.AsyncOpenAI(
                base_url=f"{base}/v1",
                api_key="unused",
                max_retries=0,  # every gateway answer counts, none is hidden by a retry
                timeout=CLIENT_TIMEOUT_S,
                http_client=self.http,
            )
            self._clients[base] = client
        return client

    def now(self) -> float:
        return time.monotonic() - self.origin

    async def run(self) -> None:
        """Open loop at `rate` until `stop()`; then wait for every request still running."""
        kinds = itertools.cycle(KINDS)
        users = itertools.cycle(range(USERS))
        turn = itertools.count()
        interval = 1.0 / self.rate
        started = time.monotonic()
        for n in turn:
            if self._stopping:
                break
            delay = started + n * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if not self.active:
                continue
            instance = sorted(self.active)[n % len(self.active)]
            task = asyncio.create_task(self._one(next(kinds), instance, next(users)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await self.drain()

    def stop(self) -> None:
        self._stopping = True

    async def drain(self, instance: int | None = None) -> None:
        """Wait until no request is running (on `instance`, or anywhere)."""
        while self.in_flight.get(instance, 0) if instance is not None else self._tasks:
            await asyncio.sleep(0.05)

    async def _one(self, kind: Kind, instance: int, user: int) -> None:
        rec = Rec(kind.name, kind.target, instance, self.now())
        self.in_flight[instance] += 1
        begun = time.monotonic()
        try:
            await kind.run(self, self.bases[instance], user, rec)
        except Exception as exc:  # transport failure: the client saw no answer at all
            rec.outcome, rec.error_type = "other", type(exc).__name__
            rec.detail = str(exc)[:200]
        finally:
            rec.seconds = time.monotonic() - begun
            self.in_flight[instance] -= 1
            self.records.append(rec)

    async def aclose(self) -> None:
        await self.http.aclose()
