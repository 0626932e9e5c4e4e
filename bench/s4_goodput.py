"""Scenario 4 — goodput under per-key limits (8 keys x 20 req/s enforced by the fake)."""

from __future__ import annotations

import math
from typing import Any

from bench.common import PATH_B, Ctx, Endpoint, Section, body, gateway_open_loop, holds
from bench.loadgen import Run
from bench.servers import fake_config, keys
from bench.stats import rnd

N_KEYS, RPS_PER_KEY = 8, 20.0
# What the fake takes to answer: the baseline the admitted latencies are measured against.
UPSTREAM_MS = 20.0
CAPACITY = N_KEYS * RPS_PER_KEY
EP = Endpoint("gateway Path B /api/chat", "gateway", "/api/chat", body(PATH_B))
COLUMNS = [
    "limits",
    "load",
    "sent/s",
    "sent",
    "ok",
    "capacity served",
    "client errors",
    "gateway 429s",
    "429 p99 ms",
    "429 with Retry-After",
    "upstream 429s",
    "upstream 429 share",
    "ok p50 ms",
    "ok p99 ms",
    "p50 over upstream ms",
    "p99 over upstream ms",
    "goal",
    "holds?",
    "pacing goal",
    "pacing holds?",
]


def _pacing_goal(mode: str, load: float) -> str:
    """Issue 17's goal for configured limits (learned limits are judged by `_goal` only)."""
    if mode != "configured":
        return "-"
    if load <= 1.0:
        return "p99 <= upstream + 250 ms"
    return "served >= 98%, p50 <= upstream + 25 ms, p99 <= upstream + 250 ms, 0 upstream 429"


def _pacing_holds(mode: str, load: float, m: dict[str, Any]) -> bool | None:
    if mode != "configured":
        return None
    p50, p99 = m["p50"] - UPSTREAM_MS, m["p99"] - UPSTREAM_MS
    if math.isnan(p99) or p99 > 250.0:
        return False
    if load <= 1.0:
        return True
    return float(m["served"]) >= 0.98 and p50 <= 25.0 and int(m["up429"]) == 0


def _goal(mode: str, load: float) -> str:
    if load <= 1.0:
        return (
            "served >= 95%, client errors <= 0.5%, 0 upstream 429"
            if mode == "configured"
            else "served >= 90%, upstream 429 <= 2%"
        )
    if mode == "configured":
        return (
            "served >= 95%, other errors <= 0.5%, 0 upstream 429, "
            "excess = 429 + Retry-After, 429 p99 < 5 ms"
        )
    return (
        "served >= 90%, other errors <= 0.5%, upstream 429 <= 2%, "
        "excess = 429 + Retry-After, 429 p99 < 5 ms"
    )


def _holds(mode: str, load: float, m: dict[str, Any]) -> bool:
    served, up429, err = float(m["served"]), float(m["up429_share"]), float(m["client_err"])
    if load <= 1.0:
        if mode == "configured":
            return served >= 0.95 and err <= 0.005 and int(m["up429"]) == 0
        return served >= 0.90 and up429 <= 0.02
    floor = 0.95 if mode == "configured" else 0.90
    p99 = m["p99_429"]
    quick_429 = m["n429"] == 0 or (not math.isnan(p99) and p99 < 5.0 and m["ra"] == m["n429"])
    upstream_ok = up429 <= 0.02 if mode == "learned" else int(m["up429"]) == 0
    return served >= floor and err <= 0.005 and quick_429 and upstream_ok


def _metrics(run: Run, upstream: dict[str, int], load: float) -> dict[str, Any]:
    sent = len(run.recs)
    ok = len(run.ok())
    r429 = run.with_status(429)
    # At 150% the gateway's own 429s are the expected answer for the excess, not errors.
    bad = sent - ok - (len(r429) if load > 1.0 else 0)
    up_total = upstream.get("requests", 0)
    up429 = upstream.get("status_429", 0)
    return {
        "sent": sent,
        "ok": ok,
        "sent_rate": run.sent_rate,
        "served": ok / (CAPACITY * run.duration) if run.duration else 0.0,
        "client_err": bad / sent if sent else 0.0,
        "n429": len(r429),
        "p99_429": run.lat_ms(r429, 99),
        "ra": sum(1 for r in r429 if r.retry_after),
        "up429": up429,
        "up429_share": up429 / up_total if up_total else 0.0,
        "p50": run.lat_ms(pct=50),
        "p99": run.lat_ms(pct=99),
    }


def run(ctx: Ctx) -> list[Section]:
    duration = ctx.dur(30, 10)
    sec = Section(
        "goodput",
        f"4. Goodput under per-key limits ({N_KEYS} keys x {RPS_PER_KEY:g} req/s = "
        f"{CAPACITY:g} req/s capacity)",
        f"Open loop at 100% and 150% of capacity for {duration:g} s on POST /api/chat (Path B), a "
        "fresh fake + gateway per run. 'configured': FAKE_RPM_PER_KEY=1200; 'learned': no limit "
        "configured, the gateway learns from x-ratelimit-* headers. capacity served = 2xx / "
        "(capacity x send window); client errors = non-2xx (at 150% excluding 429s) / sent; "
        "upstream 429s from the fake's /_control/stats. The fake answers in "
        f"{UPSTREAM_MS:g} ms; 'over upstream' subtracts that from the admitted (2xx) latencies.",
        COLUMNS,
    )
    names = keys(N_KEYS)
    cfg = fake_config(names, rps=RPS_PER_KEY, latency_ms=UPSTREAM_MS)
    for mode, env in (("configured", {"FAKE_RPM_PER_KEY": "1200"}), ("learned", {})):
        for load in (1.0, 1.5):
            label = {"limits": mode, "load": f"{load:.0%}"}
            try:
                result, upstream = gateway_open_loop(
                    ctx, cfg, names, env, EP, CAPACITY * load, duration, timeout=40
                )
            except Exception as exc:
                sec.error_row(mode, exc, load=label["load"])
                continue
            m = _metrics(result, upstream, load)
            row: dict[str, Any] = {
                **label,
                "sent/s": rnd(m["sent_rate"], 1),
                "sent": m["sent"],
                "ok": m["ok"],
                "capacity served": f"{m['served']:.1%}",
                "client errors": f"{m['client_err']:.2%}",
                "gateway 429s": m["n429"],
                "429 p99 ms": rnd(m["p99_429"]),
                "429 with Retry-After": f"{m['ra']}/{m['n429']}",
                "upstream 429s": m["up429"],
                "upstream 429 share": f"{m['up429_share']:.2%}",
                "ok p50 ms": rnd(m["p50"]),
                "ok p99 ms": rnd(m["p99"]),
                "p50 over upstream ms": rnd(m["p50"] - UPSTREAM_MS),
                "p99 over upstream ms": rnd(m["p99"] - UPSTREAM_MS),
                "goal": _goal(mode, load),
                "holds?": holds(_holds(mode, load, m)),
                "pacing goal": _pacing_goal(mode, load),
                "pacing holds?": holds(_pacing_holds(mode, load, m)),
                "_measured": (
                    f"served {m['served']:.1%}, client errors {m['client_err']:.2%}, "
                    f"upstream 429 {m['up429']}, gateway 429s {m['n429']} "
                    f"(p99 {m['p99_429']:.1f} ms, Retry-After {m['ra']}/{m['n429']})"
                ),
            }
            if m["ok"] == 0 or m["client_err"] > 0:
                row["error"] = f"statuses {result.status_counts()}; first: {result.first_error()}"
            sec.rows.append(row)
            sec.notes.append(
                f"{mode} {label['load']}: generator send lag p99 "
                f"{result.lag_ms(99):.2f} ms, max {result.lag_ms(100):.2f} ms"
            )
    return [sec]
