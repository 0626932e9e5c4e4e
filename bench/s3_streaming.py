"""Scenario 3 — streaming: TTFT and total time at concurrency 20, then 1,000 streams held open."""

from __future__ import annotations

import math
from collections import Counter

from bench.common import PATH_B, Ctx, Section, body, chat_endpoints, holds, stack
from bench.servers import fake_config, keys
from bench.stats import arun, percentile, rnd
from bench.streams import StreamRec, concurrent_streams, hold_open

TTFT_GOAL_MS = 3.0
RSS_GOAL_MB = 300.0
CONCURRENCY = 20
HOLD_N = 1000


def _ms(values: list[float], pct: float) -> float:
    return percentile((v * 1000 for v in values), pct)


def ttft_section(ctx: Ctx) -> Section:
    cols = [
        "target",
        "streams",
        "TTFT p50 ms",
        "TTFT p99 ms",
        "added TTFT p50 ms",
        "total p50 ms",
        "total p99 ms",
        "errors",
        "goal",
        "holds?",
    ]
    sec = Section(
        "streaming",
        f"3a. Streaming TTFT (concurrency {CONCURRENCY}; fake TTFT 20 ms, 20 chunks 5 ms apart)",
        f"{CONCURRENCY} aiohttp workers open one stream after another for {ctx.dur(10, 3):g} s; "
        "TTFT = time to the first non-empty content chunk, total = time to done/[DONE].",
        cols,
    )
    names = keys(4)
    cfg = fake_config(names, ttft_ms=20, chunks=20, chunk_interval_ms=5)
    with stack(ctx, cfg, names) as st:
        direct_p50: float | None = None
        for ep in chat_endpoints(stream=True):
            try:
                recs, _ = arun(
                    concurrent_streams(
                        st.url(ep),
                        ep.body,
                        st.headers(ep),
                        ep.kind,
                        concurrency=CONCURRENCY,
                        duration=ctx.dur(10, 3),
                    )
                )
            except Exception as exc:
                sec.error_row(ep.label, exc)
                continue
            ok = [r for r in recs if r.ok and r.ttft is not None and r.total is not None]
            if not ok:
                first = next((r.error for r in recs if r.error), "no stream completed")
                sec.error_row(ep.label, first or "no stream completed", streams=len(recs))
                continue
            ttft = [r.ttft for r in ok if r.ttft is not None]
            total = [r.total for r in ok if r.total is not None]
            p50 = _ms(ttft, 50)
            if ep.server == "direct":
                direct_p50 = p50
            added = p50 - direct_p50 if direct_p50 is not None and ep.server != "direct" else None
            is_gw = ep.server == "gateway"
            cond = (added <= TTFT_GOAL_MS and len(ok) == len(recs)) if added is not None else None
            row = {
                "target": ep.label,
                "streams": len(recs),
                "TTFT p50 ms": rnd(p50),
                "TTFT p99 ms": rnd(_ms(ttft, 99)),
                "added TTFT p50 ms": rnd(added),
                "total p50 ms": rnd(_ms(total, 50)),
                "total p99 ms": rnd(_ms(total, 99)),
                "errors": len(recs) - len(ok),
                "goal": f"added TTFT p50 <= {TTFT_GOAL_MS:g} ms" if is_gw else "",
                "holds?": holds(cond) if is_gw else "",
                "_measured": f"added TTFT p50 {added:.2f} ms" if added is not None else "",
            }
            if len(ok) < len(recs):
                row["error"] = next((r.error for r in recs if r.error), None)
            sec.rows.append(row)
    return sec


def _error_kinds(recs: list[StreamRec]) -> str:
    kinds = Counter((r.error or "")[:60] for r in recs if not r.ok)
    return "; ".join(f"{n}x {k}" for k, n in kinds.most_common(3))


def hold_section(ctx: Ctx) -> Section:
    chunks, interval = (16, 500) if ctx.quick else (40, 500)
    ramp = ctx.dur(5, 3)
    cols = [
        "target",
        "streams",
        "completed ok",
        "errors",
        "peak open",
        "all open after s",
        "RSS idle MB",
        "RSS all open MB",
        "peak RSS MB",
        "goal",
        "holds?",
    ]
    sec = Section(
        "streams_held",
        f"3b. {HOLD_N} concurrent streams held open (gateway)",
        f"{HOLD_N} POST /api/chat/stream opened over {ramp:g} s; each upstream stream lasts "
        f"~{chunks * interval / 1000:g} s ({chunks} chunks {interval} ms apart). Gateway VmRSS "
        "sampled every 250 ms.",
        cols,
    )
    names = keys(8)
    cfg = fake_config(names, ttft_ms=20, chunks=chunks, chunk_interval_ms=interval)
    label = "gateway /api/chat/stream (B)"
    with stack(ctx, cfg, names, want=("gateway",)) as st:
        try:
            gw = st.server("gateway")
            idle = gw.rss_mb()
            res = arun(
                hold_open(
                    gw.base + "/api/chat/stream",
                    body(PATH_B),
                    {},
                    "keypool",
                    n=HOLD_N,
                    ramp_s=ramp,
                    rss=gw.rss_mb,
                    timeout=chunks * interval / 1000 + 30,
                )
            )
        except Exception as exc:
            sec.error_row(label, exc)
            return sec
    recs = res.live.recs
    ok = sum(1 for r in recs if r.ok)
    errors = HOLD_N - ok
    peak = res.peak_rss_mb
    cond = errors == 0 and not math.isnan(peak) and peak < RSS_GOAL_MB
    row = {
        "target": label,
        "streams": HOLD_N,
        "completed ok": ok,
        "errors": errors,
        "peak open": res.live.peak_open,
        "all open after s": rnd(res.all_open_after_s, 1),
        "RSS idle MB": rnd(idle, 1),
        "RSS all open MB": rnd(res.rss_all_open_mb, 1),
        "peak RSS MB": rnd(peak, 1),
        "goal": f"0 errors, RSS < {RSS_GOAL_MB:g} MB",
        "holds?": holds(cond),
        "_measured": f"{errors} errors, peak RSS {peak:.0f} MB",
    }
    if errors:
        row["error"] = _error_kinds(recs) or f"{HOLD_N - len(recs)} streams never finished"
    sec.rows.append(row)
    return sec


def run(ctx: Ctx) -> list[Section]:
    return [ttft_section(ctx), hold_section(ctx)]
