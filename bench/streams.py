"""Streaming clients: TTFT/total time per stream, and many streams held open at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import orjson

from bench.loadgen import JSON


@dataclass(slots=True)
class StreamRec:
    status: int = 0
    ttft: float | None = None  # seconds to the first content chunk
    total: float | None = None  # seconds to the end of the stream
    chunks: int = 0
    ok: bool = False
    error: str | None = None


@dataclass
class Live:
    """Counters the hold-open monitor reads while streams run."""

    open: int = 0
    finished: int = 0
    peak_open: int = 0
    recs: list[StreamRec] = field(default_factory=list)


def _content_of(payload: bytes, kind: str) -> tuple[str | None, bool, str | None]:
    """(content, end_of_stream, error) of one `data:` payload. kind: 'keypool' or 'openai'."""
    if payload == b"[DONE]":
        return None, True, None
    event = orjson.loads(payload)
    if kind == "keypool":
        etype = event.get("type")
        if etype == "chunk":
            return event.get("content") or None, False, None
        if etype == "error":
            return None, True, str(event.get("error"))[:200]
        return None, etype == "done", None
    choices = event.get("choices") or [{}]
    return (choices[0].get("delta") or {}).get("content") or None, False, None


async def _read(
    resp: aiohttp.ClientResponse,
    rec: StreamRec,
    kind: str,
    start: float,
    on_first: Callable[[], None],
) -> None:
    async for line in resp.content:
        if not line.startswith(b"data:"):
            continue
        content, end, error = _content_of(line[5:].strip(), kind)
        if content:
            rec.chunks += 1
            if rec.ttft is None:
                rec.ttft = time.perf_counter() - start
                on_first()
        if error:
            rec.error = error
        if end:
            rec.ok = error is None and rec.chunks > 0
            return
    rec.error = rec.error or "stream ended without done/[DONE]"


async def stream_once(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    kind: str,
    live: Live | None = None,
) -> StreamRec:
    rec = StreamRec()
    start = time.perf_counter()
    counted = False

    def on_first() -> None:
        nonlocal counted
        if live is not None:
            counted = True
            live.open += 1
            live.peak_open = max(live.peak_open, live.open)

    try:
        async with session.post(url, data=body, headers={**JSON, **headers}) as resp:
            rec.status = resp.status
            if resp.status != 200:
                text = (await resp.read())[:200].decode(errors="replace")
                rec.error = f"HTTP {resp.status}: {text}"
                return rec
            await _read(resp, rec, kind, start, on_first)
    except TimeoutError:
        rec.error = "client timeout"
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        rec.error = f"{type(exc).__name__}: {exc}"[:200]
    finally:
        rec.total = time.perf_counter() - start
        if not rec.ok and rec.error is None:
            rec.error = "cancelled before the end of the stream"
        if live is not None:
            live.finished += 1
            live.open -= 1 if counted else 0
            live.recs.append(rec)
    return rec


def _session(limit: int, timeout: float) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit), timeout=aiohttp.ClientTimeout(total=timeout)
    )


async def concurrent_streams(
    url: str,
    body: bytes,
    headers: dict[str, str],
    kind: str,
    *,
    concurrency: int,
    duration: float,
    timeout: float = 30,
) -> tuple[list[StreamRec], float]:
    """`concurrency` workers each opening one stream after another until `duration` is up."""
    recs: list[StreamRec] = []
    async with _session(concurrency, timeout) as session:
        t0 = time.perf_counter()
        deadline = t0 + duration

        async def worker() -> None:
            while time.perf_counter() < deadline:
                recs.append(await stream_once(session, url, body, headers, kind))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return recs, time.perf_counter() - t0


@dataclass
class HoldResult:
    live: Live
    peak_rss_mb: float = 0.0
    rss_all_open_mb: float | None = None
    all_open_after_s: float | None = None
    samples: list[tuple[float, int, float]] = field(default_factory=list)  # (t, open, rss)


async def hold_open(
    url: str,
    body: bytes,
    headers: dict[str, str],
    kind: str,
    *,
    n: int,
    ramp_s: float,
    rss: Callable[[], float],
    timeout: float,
) -> HoldResult:
    """Open `n` streams over `ramp_s` seconds, sample the server's RSS while they are open."""
    live = Live()
    result = HoldResult(live=live)
    async with _session(0, timeout) as session:
        t0 = time.perf_counter()
        tasks = []
        for i in range(n):
            delay = t0 + ramp_s * i / n - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(stream_once(session, url, body, headers, kind, live)))
        deadline = t0 + timeout + ramp_s + 5
        while live.finished < n and time.perf_counter() < deadline:
            try:
                mem = rss()
            except OSError:
                mem = float("nan")
            now = time.perf_counter() - t0
            result.samples.append((round(now, 2), live.open, mem))
            result.peak_rss_mb = max(result.peak_rss_mb, mem)
            if result.rss_all_open_mb is None and live.open >= n:
                result.rss_all_open_mb, result.all_open_after_s = mem, now
            await asyncio.sleep(0.25)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return result
