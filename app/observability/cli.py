"""`keypool keys check` and `keypool stats`: the operator's view from a terminal (rich)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from app.chat.clients import ClientCache
from app.chat.recovery import KeyProber, ProbeResult
from app.config import Settings
from app.keys.signals import parse_signal
from app.providers.errors import UpstreamError
from app.providers.transport import AiohttpTransport, Transport, UpstreamResponse, UpstreamStream
from app.state.build import build_pools
from app.state.memory import MemoryStateStore


class RemainingTap:
    """A Transport wrapper that notes each key's announced remaining requests (by auth header).

    The probes themselves are KeyProber's; this only reads the headers they get back.
    """

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.remaining: dict[str, int | None] = {}

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout_s: float,
    ) -> UpstreamResponse:
        auth = headers.get("Authorization", "")
        try:
            response = await self.inner.request(method, url, headers, body, timeout_s)
        except UpstreamError as exc:
            self.remaining[auth] = exc.signal.remaining_requests
            raise
        self.remaining[auth] = parse_signal(response.headers, 0.0).remaining_requests
        return response

    async def open_stream(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float
    ) -> UpstreamStream:
        return await self.inner.open_stream(url, headers, body, timeout_s)

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass(frozen=True, slots=True)
class CheckedKey:
    result: ProbeResult
    remaining_requests: int | None


async def check_keys(settings: Settings, console: Console) -> list[CheckedKey]:
    """Probe every configured key at once (GET /models), with a progress bar."""
    transport = AiohttpTransport()
    for provider in settings.providers:
        transport.open_session(provider.base_url)
    tap = RemainingTap(transport)
    store = MemoryStateStore(build_pools(settings))
    prober = KeyProber(settings.providers, store, ClientCache(settings.providers, tap))
    jobs = [(p, i) for p in settings.providers for i in range(len(p.keys))]
    checked: list[CheckedKey] = []
    try:
        with Progress(
            TextColumn("probing keys"), BarColumn(), MofNCompleteColumn(), console=console
        ) as progress:
            bar = progress.add_task("probe", total=len(jobs))
            for done in asyncio.as_completed([prober.probe_key(p.name, i) for p, i in jobs]):
                result = await done
                secret = settings_secret(settings, result.provider, result.key_index)
                remaining = tap.remaining.get(f"Bearer {secret}")
                checked.append(CheckedKey(result, remaining))
                progress.advance(bar)
    finally:
        await tap.aclose()
    return sorted(checked, key=lambda c: (c.result.provider, c.result.key_index))


def settings_secret(settings: Settings, provider: str, index: int) -> str:
    config = next(p for p in settings.providers if p.name == provider)
    return config.keys[index].secret


def keys_table(checked: list[CheckedKey]) -> Table:
    table = Table(title="keys")
    for column in ("provider", "index", "fingerprint", "state", "status", "latency", "remaining"):
        table.add_column(column, justify="right" if column in ("index", "latency") else "left")
    for entry in checked:
        r = entry.result
        colour = "green" if r.ok else "red"
        table.add_row(
            r.provider,
            str(r.key_index),
            r.fingerprint,
            f"[{colour}]{r.state.value}[/]",
            str(r.status) if r.status is not None else "no answer",
            f"{r.latency_ms:.0f} ms",
            "-" if entry.remaining_requests is None else str(entry.remaining_requests),
        )
    return table


def run_keys_check(settings: Settings, console: Console | None = None) -> int:
    """Exit status 0 when every key answered 2xx, 1 otherwise."""
    console = console or Console()
    checked = asyncio.run(check_keys(settings, console))
    console.print(keys_table(checked))
    bad = [c for c in checked if not c.result.ok]
    console.print(f"{len(checked) - len(bad)}/{len(checked)} keys answered")
    return 1 if bad else 0


# ---- keypool stats -------------------------------------------------------------------------


def fetch_summary(url: str, token: str | None, window: str) -> dict[str, Any] | str:
    """The running gateway's summary, or a one-line reason it could not be read."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        answer = httpx.get(
            f"{url.rstrip('/')}/api/admin/metrics/summary",
            params={"window": window},
            headers=headers,
            timeout=5,
        )
    except httpx.HTTPError as exc:
        return f"gateway not reachable at {url} ({type(exc).__name__})"
    if answer.status_code != 200:
        error = (
            answer.json().get("error", {})
            if answer.headers.get("content-type", "").startswith("application/json")
            else {}
        )
        return f"gateway answered {answer.status_code} {error.get('type', '')}".strip()
    body: dict[str, Any] = answer.json()
    return body


def summary_table(summary: dict[str, Any]) -> Table:
    table = Table(title=f"gateway, last {summary['window']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    latency, ttft = summary["latency_ms"], summary["ttft_ms"]
    rows = [
        ("requests", f"{summary['requests']}"),
        ("success rate", f"{summary['success_rate'] * 100:.1f} %"),
        ("latency p50/p95/p99", "/".join(_ms(latency[p]) for p in ("p50", "p95", "p99"))),
        ("first token p50/p95", "/".join(_ms(ttft[p]) for p in ("p50", "p95"))),
        ("tokens", f"{summary['tokens']}"),
        ("cost", f"${summary['cost_usd']:.4f}"),
        ("cache hit rate", f"{summary['cache_hit_rate'] * 100:.1f} %"),
    ]
    rows += [(f"errors: {kind}", str(n)) for kind, n in summary["errors_by_type"].items()]
    for row in rows:
        table.add_row(*row)
    return table


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


async def key_totals(database_url: str) -> list[dict[str, Any]]:
    """Per-key totals over every group, from `api_key_stats`."""
    from app.db.repositories import KeyStatsRepository
    from app.db.session import create_engine, create_sessionmaker

    engine = create_engine(database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            rows = await KeyStatsRepository.from_session(session).all()
    finally:
        await engine.dispose()
    totals: dict[tuple[str, int], dict[str, Any]] = {}
    for row in rows:
        entry = totals.setdefault(
            (row.provider, row.key_index),
            {"provider": row.provider, "key_index": row.key_index, "fingerprint": row.key_fingerprint,
             "requests": 0, "tokens": 0, "errors": 0, "rate_limited": 0},
        )  # fmt: skip
        entry["requests"] += row.total_requests
        entry["tokens"] += row.total_tokens
        entry["errors"] += row.errors
        entry["rate_limited"] += row.rate_limited
    return [totals[k] for k in sorted(totals)]


def totals_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="per-key totals (database)")
    for column in ("provider", "index", "fingerprint", "requests", "tokens", "errors", "429s"):
        table.add_column(
            column, justify="left" if column in ("provider", "fingerprint") else "right"
        )
    for r in rows:
        table.add_row(
            r["provider"], str(r["key_index"]), r["fingerprint"], str(r["requests"]),
            str(r["tokens"]), str(r["errors"]), str(r["rate_limited"]),
        )  # fmt: skip
    return table


def run_stats(
    url: str, token: str | None, window: str, database_url: str, console: Console | None = None
) -> int:
    console = console or Console()
    summary = fetch_summary(url, token, window)
    if isinstance(summary, str):
        console.print(f"[yellow]{summary}[/]: no live summary")
    else:
        console.print(summary_table(summary))
    try:
        rows = asyncio.run(key_totals(database_url))
    except Exception as exc:  # an operator tool: say what failed, no traceback
        console.print(f"[yellow]database not readable ({type(exc).__name__})[/]: no per-key totals")
        return 1 if isinstance(summary, str) else 0
    console.print(totals_table(rows) if rows else "no per-key totals in the database yet")
    return 0
