"""Python load generators: sequential, open-loop (fixed rate) and a closed-loop fallback.

Every loop is bounded by a request count and/or a wall-clock limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.stats import percentile

JSON = {"Content-Type": "application/json"}
TIMEOUT = -1  # pseudo-status: the client gave up
CONN_ERROR = -2  # pseudo-status: connection refused/reset


@dataclass(slots=True)
class Rec:
    status: int = 0
    latency: float = 0.0  # seconds, from the moment the request was sent
    lag: float = 0.0  # seconds the send was behind its schedule (open loop)
    retry_after: str | None = None
    error: str | None = None


@dataclass
class Run:
    recs: list[Rec] = field(default_factory=list)
    duration: float = 0.0  # seconds between the first and last send
    sent_rate: float = 0.0

    def ok(self) -> list[Rec]:
        return [r for r in self.recs if 200 <= r.status < 300]

    def with_status(self, status: int) -> list[Rec]:
        return [r for r in self.recs if r.status == status]

    def lat_ms(self, recs: list[Rec] | None = None, pct: float = 50) -> float:
        src = self.ok() if recs is None else recs
        return percentile((r.latency * 1000 for r in src), pct)

    def lag_ms(self, pct: float) -> float:
        """How late the generator sent (open loop): a large value means it was starved."""
        return percentile((r.lag * 1000 for r in self.recs), pct)

    def status_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.recs:
            key = {TIMEOUT: "timeout", CONN_ERROR: "conn_error"}.get(r.status, str(r.status))
            out[key] = out.get(key, 0) + 1
        return dict(sorted(out.items()))

    def first_error(self) -> str | None:
        return next((r.error for r in self.recs if r.error), None)


async def _one(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], rec: Rec
) -> None:
    start = time.perf_counter()
    try:
        async with session.post(url, data=body, headers=headers) as resp:
            data = await resp.read()
            rec.status = resp.status
            rec.retry_after = resp.headers.get("Retry-After")
            if resp.status >= 300 and rec.error is None:
                rec.error = f"HTTP {resp.status}: {data[:200].decode(errors='replace')}"
    except TimeoutError:
        rec.status, rec.error = TIMEOUT, "client timeout"
    except (aiohttp.ClientError, OSError) as exc:
        rec.status, rec.error = CONN_ERROR, f"{type(exc).__name__}: {exc}"[:200]
    rec.latency = time.perf_counter() - start


def _session(limit: int, timeout: float) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit),
        timeout=aiohttp.ClientTimeout(total=timeout),
    )


async def sequential(
    url: str,
    body: bytes,
    headers: dict[str, str] | None = None,
    *,
    n: int,
    time_limit: float,
    warmup: int = 50,
    timeout: float = 10,
) -> Run:
    """One keep-alive connection, one request at a time."""
    hdrs = {**JSON, **(headers or {})}
    run = Run()
    async with _session(1, timeout) as session:
        for _ in range(warmup):
            await _one(session, url, body, hdrs, Rec())
        t0 = time.perf_counter()
        deadline = t0 + time_limit
        while len(run.recs) < n and time.perf_counter() < deadline:
            rec = Rec()
            await _one(session, url, body, hdrs, rec)
            run.recs.append(rec)
        run.duration = time.perf_counter() - t0
    run.sent_rate = len(run.recs) / run.duration if run.duration else 0.0
    return run


async def alternating(
    urls: dict[str, str], body: bytes, *, n: int, time_limit: float, warmup: int = 50
) -> dict[str, Run]:
    """Sequential requests to several targets taking turns, one keep-alive connection each."""
    runs, hdrs = {label: Run() for label in urls}, dict(JSON)
    async with contextlib.AsyncExitStack() as stack:
        sessions = {label: await stack.enter_async_context(_session(1, 10)) for label in urls}
        for _ in range(warmup):
            for label, url in urls.items():
                await _one(sessions[label], url, body, hdrs, Rec())
        t0 = time.perf_counter()
        deadline = t0 + time_limit
        while min(len(r.recs) for r in runs.values()) < n and time.perf_counter() < deadline:
            for label, url in urls.items():
                rec = Rec()
                await _one(sessions[label], url, body, hdrs, rec)
                runs[label].recs.append(rec)
        for run in runs.values():
            run.duration = time.perf_counter() - t0
            run.sent_rate = len(run.recs) / run.duration if run.duration else 0.0
    return runs


async def open_loop(
    url: str,
    body: bytes,
    headers: dict[str, str] | None = None,
    *,
    rate: float,
    duration: float,
    timeout: float = 30,
) -> Run:
    """Send request i at t0 + i/rate whatever the replies do; wait for stragglers at the end."""
    hdrs = {**JSON, **(headers or {})}
    run = Run()
    n = max(1, int(rate * duration))
    tasks: list[asyncio.Task[None]] = []
    async with _session(0, timeout) as session:
        t0 = time.perf_counter() + 0.05
        first = last = t0
        for i in range(n):
            target = t0 + i / rate
            now = time.perf_counter()
            if target > now:
                await asyncio.sleep(target - now)
                now = time.perf_counter()
            rec = Rec(lag=max(0.0, now - target))
            run.recs.append(rec)
            tasks.append(asyncio.create_task(_one(session, url, body, hdrs, rec)))
            if i == 0:
                first = now
            last = now
        _, pending = await asyncio.wait(tasks, timeout=timeout + 5) if tasks else (set(), set())
        for task in pending:
            task.cancel()
        for rec in run.recs:
            if rec.status == 0:
                rec.status, rec.error = TIMEOUT, "not finished at drain deadline"
    run.duration = last - first
    run.sent_rate = (n - 1) / run.duration if run.duration > 0 else 0.0
    return run


async def closed_loop(
    url: str,
    body: bytes,
    headers: dict[str, str] | None = None,
    *,
    concurrency: int,
    duration: float,
    timeout: float = 10,
) -> dict[str, Any]:
    """Fallback for wrk: `concurrency` workers, each sending its next request on each reply."""
    hdrs = {**JSON, **(headers or {})}
    recs: list[Rec] = []
    async with _session(concurrency, timeout) as session:
        t0 = time.perf_counter()
        deadline = t0 + duration

        async def worker() -> None:
            while time.perf_counter() < deadline:
                rec = Rec()
                await _one(session, url, body, hdrs, rec)
                recs.append(rec)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    ok = [r.latency * 1e6 for r in recs if 200 <= r.status < 300]
    return {
        "requests": len(recs),
        "duration_s": elapsed,
        "rps": len(recs) / elapsed if elapsed else 0.0,
        "p50_us": percentile(ok, 50),
        "p99_us": percentile(ok, 99),
        "errors": len(recs) - len(ok),
        "tool": "aiohttp",
    }
