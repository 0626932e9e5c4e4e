"""Scenario 5 — failover: one bad key out of four, open loop at 50 req/s."""

from __future__ import annotations

import math
from typing import Any

from bench.common import PATH_B, Ctx, Endpoint, Section, body, gateway_open_loop, holds
from bench.servers import fake_config, keys
from bench.stats import rnd

RATE = 50.0
HANG_TIMEOUT_S = 2.0
P99_SLACK_MS = 10.0
EP = Endpoint("gateway Path B /api/chat", "gateway", "/api/chat", body(PATH_B))
COLUMNS = [
    "run",
    "bad key",
    "sent/s",
    "sent",
    "ok",
    "client errors",
    "p50 ms",
    "p99 ms",
    "p99 vs healthy ms",
    f"paid timeout (>= {HANG_TIMEOUT_S:g} s)",
    "upstream requests",
    "goal",
    "holds?",
]
# (run name, mode of the bad key, extra gateway env)
RUNS: list[tuple[str, str | None, dict[str, str]]] = [
    ("healthy", None, {}),
    ("500", "error_500", {}),
    ("401", "unauthorized", {}),
    ("hang", "hang", {"FAKE_TIMEOUT_S": f"{HANG_TIMEOUT_S:g}"}),
]


def run(ctx: Ctx) -> list[Section]:
    duration = ctx.dur(15, 6)
    sec = Section(
        "failover",
        f"5. Failover (4 keys, one bad; open loop {RATE:g} req/s for {duration:g} s)",
        "Fresh fake + gateway per run, POST /api/chat (Path B), fake latency 0. The hang run sets "
        f"FAKE_TIMEOUT_S={HANG_TIMEOUT_S:g}; 'paid timeout' counts requests whose latency reached "
        "it. client errors = any non-2xx or client-side failure.",
        COLUMNS,
    )
    names = keys(4)
    healthy_p99: float | None = None
    for name, mode, env in RUNS:
        special = {names[1]: {"mode": mode}} if mode else {}
        cfg = fake_config(names, special=special)
        try:
            result, upstream = gateway_open_loop(
                ctx, cfg, names, env, EP, RATE, duration, timeout=30
            )
        except Exception as exc:
            sec.error_row(name, exc)
            continue
        sent, ok = len(result.recs), len(result.ok())
        p50, p99 = result.lat_ms(pct=50), result.lat_ms(pct=99)
        if mode is None and not math.isnan(p99):
            healthy_p99 = p99
        delta = p99 - healthy_p99 if healthy_p99 is not None and mode else None
        paid = sum(1 for r in result.recs if r.latency >= HANG_TIMEOUT_S)
        cond: bool | None = sent > 0 and ok == sent
        goal = "0 client errors"
        if mode in ("error_500", "unauthorized"):
            goal += f", p99 within {P99_SLACK_MS:g} ms of healthy"
            cond = bool(cond) and delta is not None and delta <= P99_SLACK_MS
        row: dict[str, Any] = {
            "run": name,
            "bad key": f"{names[1]}: {mode}" if mode else "-",
            "sent/s": rnd(result.sent_rate, 1),
            "sent": sent,
            "ok": ok,
            "client errors": f"{(sent - ok) / sent:.2%}" if sent else "n/a",
            "p50 ms": rnd(p50),
            "p99 ms": rnd(p99),
            "p99 vs healthy ms": rnd(delta),
            f"paid timeout (>= {HANG_TIMEOUT_S:g} s)": paid if mode == "hang" else "",
            "upstream requests": upstream.get("requests"),
            "goal": goal,
            "holds?": holds(cond),
            "_measured": f"{sent - ok} client errors, p99 {p99:.1f} ms"
            + (f" ({delta:+.1f} vs healthy)" if delta is not None else "")
            + (f", {paid} paid the timeout" if mode == "hang" else ""),
        }
        if ok < sent:
            row["error"] = f"statuses {result.status_counts()}; first: {result.first_error()}"
        sec.rows.append(row)
        sec.notes.append(
            f"{name}: generator send lag p99 {result.lag_ms(99):.2f} ms, "
            f"max {result.lag_ms(100):.2f} ms"
        )
    return [sec]
