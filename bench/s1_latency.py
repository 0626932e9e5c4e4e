"""Scenario 1 — added latency without queueing: one keep-alive connection, sequential requests."""

from __future__ import annotations

import math

from bench.common import Ctx, Endpoint, Section, Stack, chat_endpoints, holds, stack
from bench.loadgen import Run, sequential
from bench.servers import fake_config, keys
from bench.stats import arun, rnd

COLUMNS = [
    "target",
    "requests",
    "p50 ms",
    "p99 ms",
    "added p50 ms",
    "added p99 ms",
    "errors",
    "goal",
    "holds?",
]
GOAL_MS = 1.0


def section() -> Section:
    return Section(
        "latency",
        "1. Added latency (one connection, sequential, fake latency 0)",
        "The same aiohttp keep-alive client sends one request at a time to each target; "
        "'added' is the target's percentile minus the direct (fake provider) percentile.",
        COLUMNS,
    )


def run(ctx: Ctx) -> list[Section]:
    sec = section()
    names = keys(4)
    with stack(ctx, fake_config(names), names) as st:
        measure_all(ctx, st, chat_endpoints(), sec)
    return [sec]


def measure_all(ctx: Ctx, st: Stack, endpoints: list[Endpoint], sec: Section) -> None:
    """One sequential run per endpoint; direct must come first for the 'added' columns."""
    n = 200 if ctx.quick else 1000
    direct: Run | None = None
    for ep in endpoints:
        try:
            result = arun(
                sequential(st.url(ep), ep.body, st.headers(ep), n=n, time_limit=ctx.dur(30, 10))
            )
        except Exception as exc:
            sec.error_row(ep.label, exc)
            continue
        ok = result.ok()
        if not ok:
            sec.error_row(
                ep.label, result.first_error() or "no successful request", requests=len(result.recs)
            )
            continue
        p50, p99 = result.lat_ms(pct=50), result.lat_ms(pct=99)
        if ep.server == "direct":
            direct = result
        added50 = p50 - direct.lat_ms(pct=50) if direct and direct is not result else None
        added99 = p99 - direct.lat_ms(pct=99) if direct and direct is not result else None
        is_gateway = ep.server == "gateway"
        cond = None
        if is_gateway and added50 is not None and not math.isnan(added50):
            cond = added50 <= GOAL_MS and len(ok) == len(result.recs)
        row = {
            "target": ep.label,
            "requests": len(result.recs),
            "p50 ms": rnd(p50, 3),
            "p99 ms": rnd(p99, 3),
            "added p50 ms": rnd(added50, 3),
            "added p99 ms": rnd(added99, 3),
            "errors": len(result.recs) - len(ok),
            "goal": f"added p50 <= {GOAL_MS:g} ms" if is_gateway else "",
            "holds?": holds(cond) if is_gateway else "",
            "_measured": f"added p50 {added50:.3f} ms" if added50 is not None else "",
        }
        if len(ok) < len(result.recs):
            row["error"] = result.first_error()
        sec.rows.append(row)
