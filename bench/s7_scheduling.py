"""Scenario 7 — scheduling v2: account-wide limits and fair waiting across users.

`make bench` (or `python -m bench.run --only scheduling`) reports:
- shared bucket: 4 keys behind one account limit (the fake's shared-bucket mode), open loop at
  100% of the account's capacity; attempts per request = upstream requests / requests sent.
- fairness: one key paced at 20 req/s; one user offering 5x capacity and nine users 10% each,
  open loop; the nine users' success rate and p99 latency, against the nine alone.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.common import PATH_B, Ctx, Endpoint, Section, body, gateway_open_loop, holds, stack
from bench.loadgen import Run, open_loop
from bench.servers import fake_config, fake_stats, keys, upstream_counts
from bench.stats import arun, rnd

SHARED_KEYS, SHARED_RPS = 4, 20.0
EP = Endpoint("gateway Path B /api/chat", "gateway", "/api/chat", body(PATH_B))
FAIR_RPS = 20.0
LIGHT_USERS = 9


def shared_bucket(ctx: Ctx) -> Section:
    duration = ctx.dur(20, 8)
    sec = Section(
        "scheduling-shared",
        f"7a. Account-wide limit ({SHARED_KEYS} keys, one account bucket of {SHARED_RPS:g} req/s)",
        f"Open loop at 100% of the account's capacity for {duration:g} s on POST /api/chat "
        "(Path B), FAKE_SHARED_LIMIT=auto, nothing configured per key. attempts per request = "
        "upstream requests / requests sent.",
        [
            "load",
            "sent",
            "ok",
            "gateway 429s",
            "upstream 429s",
            "attempts/request",
            "goal",
            "holds?",
        ],
    )
    names = keys(SHARED_KEYS)
    cfg: dict[str, Any] = {**fake_config(names), "shared_rps": SHARED_RPS}
    try:
        run, upstream = gateway_open_loop(ctx, cfg, names, {}, EP, SHARED_RPS, duration)
    except Exception as exc:
        sec.error_row("shared", exc)
        return sec
    sent = len(run.recs)
    per_request = upstream.get("requests", 0) / sent if sent else float("nan")
    sec.rows.append(
        {
            "load": "100%",
            "sent": sent,
            "ok": len(run.ok()),
            "gateway 429s": len(run.with_status(429)),
            "upstream 429s": upstream.get("status_429", 0),
            "attempts/request": rnd(per_request, 3),
            "goal": "attempts per request <= 1.1",
            "holds?": holds(per_request <= 1.1),
            "_measured": f"attempts per request {per_request:.3f}",
        }
    )
    return sec


async def _users(url: str, heavy: bool, duration: float) -> tuple[list[Run], Run | None]:
    light_rate = FAIR_RPS * 0.1
    jobs = [
        open_loop(url, body(PATH_B), {"X-User-Id": f"light{i}"}, rate=light_rate, duration=duration)
        for i in range(LIGHT_USERS)
    ]
    if heavy:
        jobs.append(
            open_loop(
                url, body(PATH_B), {"X-User-Id": "heavy"}, rate=5 * FAIR_RPS, duration=duration
            )
        )
    runs = list(await asyncio.gather(*jobs))
    return runs[:LIGHT_USERS], (runs[LIGHT_USERS] if heavy else None)


def fairness(ctx: Ctx) -> Section:
    duration = ctx.dur(20, 8)
    sec = Section(
        "scheduling-fair",
        f"7b. Fair waiting (1 key paced at {FAIR_RPS:g} req/s)",
        f"Open loop for {duration:g} s: nine light users at 10% of capacity each, alone and then "
        "beside one heavy user at 5x capacity (X-User-Id names the users, all weight 1). Light "
        "users' success and p99 latency of their answers.",
        [
            "run",
            "light sent",
            "light ok",
            "light success",
            "light p99 ms",
            "heavy ok",
            "upstream 429s",
            "goal",
            "holds?",
        ],
    )
    names = keys(1)
    cfg = fake_config(names, rps=FAIR_RPS)
    env = {"FAKE_RPM_PER_KEY": str(int(FAIR_RPS * 60)), "REQUEST_DEADLINE_S": "10"}
    alone_p99 = float("nan")
    for heavy in (False, True):
        label = "with heavy user" if heavy else "light users alone"
        try:
            with stack(ctx, cfg, names, want=("gateway",), gateway_env=env) as st:
                lights, big = arun(_users(st.url(EP), heavy, duration))
                upstream = upstream_counts(fake_stats(st.server("fake")))
        except Exception as exc:
            sec.error_row(label, exc)
            continue
        recs = [r for run in lights for r in run.recs]
        ok = [r for r in recs if 200 <= r.status < 300]
        merged = Run(recs=recs)
        p99 = merged.lat_ms(ok, 99)
        success = len(ok) / len(recs) if recs else 0.0
        if not heavy:
            alone_p99 = p99
        good = success >= 0.99 and (not heavy or p99 <= 2 * alone_p99)
        sec.rows.append(
            {
                "run": label,
                "light sent": len(recs),
                "light ok": len(ok),
                "light success": f"{success:.1%}",
                "light p99 ms": rnd(p99),
                "heavy ok": len(big.ok()) if big else "-",
                "upstream 429s": upstream.get("status_429", 0),
                "goal": "success >= 99%, p99 <= 2x alone" if heavy else "baseline",
                "holds?": holds(good),
                "_measured": f"success {success:.1%}, p99 {p99:.1f} ms",
            }
        )
    return sec


def run(ctx: Ctx) -> list[Section]:
    sections: list[Section] = []
    for part in (shared_bucket, fairness):
        try:
            sections.append(part(ctx))
        except Exception as exc:
            sec = Section("scheduling", f"7. Scheduling: {part.__name__} (crashed)", "", ["target"])
            sec.error_row(part.__name__, exc)
            sections.append(sec)
    return sections
