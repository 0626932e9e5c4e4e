"""Scenario 6 — the Redis key-state backend: added latency, throughput and goodput with 2 workers."""

from __future__ import annotations

import itertools
import json
import os
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bench import s4_goodput
from bench.common import PATH_B, Ctx, Endpoint, Section, body, describe, holds
from bench.loadgen import Run, alternating, open_loop
from bench.procs import Server, Servers
from bench.redisproc import (
    RedisTarget,
    drop_prefix,
    ping_floor,
    redis_for_bench,
    reset_stats,
    script_stats,
    tree_cpu,
)
from bench.servers import fake_config, fake_stats, keys, start_fake, start_gateway, upstream_counts
from bench.stats import arun, ratio, rnd
from bench.wrk import closed

LATENCY_GOAL_MS = 0.15  # Redis adds at most this to the sequential p50
THROUGHPUT_GOAL = 0.8  # one worker on Redis serves at least this share of in-process req/s
CONCS = (32, 128)
WARMUP = 50  # sequential requests per target before 6a's measured ones
ROUNDS = 2  # throughput runs per target and concurrency, the targets taking turns
EP_PATH_B = Endpoint("gateway Path B /api/chat", "gateway", "/api/chat", body(PATH_B))
_RUNS = itertools.count(1)
# label -> (workers, uses Redis)
TARGETS = {
    "in-process, 1 worker": (1, False),
    "Redis, 1 worker": (1, True),
    "Redis, 2 workers": (2, True),
}
LAT_COLUMNS = ["target", "requests", "p50 ms", "p99 ms", "Redis adds p50 ms", "Redis adds p99 ms"]
LAT_COLUMNS += ["errors", "redis", "goal", "holds?"]
TPUT_COLUMNS = ["target", "conc", "req/s", "rounds", "p50 ms", "p99 ms", "non-2xx", "redis"]
TPUT_COLUMNS += ["gateway CPU us/req", "redis CPU us/req"]
TPUT_COLUMNS += ["vs in-process", "vs Redis 1 worker", "direct >= 3x?", "goal", "holds?"]
GOODPUT_COLUMNS = ["target", "load", "sent/s", "sent", "ok", "capacity served", "client errors"]
GOODPUT_COLUMNS += ["upstream 429s", "ok p50 ms", "ok p99 ms", "redis", "goal", "holds?"]


def _prefix() -> str:
    return f"keypool-bench-{os.getpid()}-{next(_RUNS)}:"


def _redis_check(srv: Server) -> str:
    """The gateway's own view of Redis from /readyz ("off" for the in-process store)."""
    try:
        with urllib.request.urlopen(srv.base + "/readyz", timeout=5) as resp:
            data: dict[str, Any] = json.loads(resp.read())
    except OSError as exc:
        return f"? ({type(exc).__name__})"
    return str((data.get("checks") or {}).get("redis", "?"))


@contextmanager
def gateways(
    ctx: Ctx,
    config: dict[str, Any],
    names: list[str],
    targets: dict[str, tuple[int, bool]],
    notes: list[str],
    env: dict[str, str] | None = None,
) -> Iterator[tuple[Server, dict[str, Server | str], RedisTarget]]:
    """One fake, one Redis and one gateway per target (a start failure is kept as its reason);
    every Redis prefix is unique to this run and deleted afterwards."""
    prefixes: list[str] = []
    with redis_for_bench() as redis, Servers() as group:
        notes.append(f"Redis: {redis.describe()}")
        fake = start_fake(group, config, ctx.raw_dir)
        started: dict[str, Server | str] = {}
        try:
            for label, (workers, shared) in targets.items():
                extra = dict(env or {})
                if shared:
                    prefixes.append(_prefix())
                    extra |= {"REDIS_URL": redis.url, "KEYPOOL_REDIS_PREFIX": prefixes[-1]}
                try:
                    started[label] = start_gateway(
                        group, fake, names, ctx.raw_dir, extra, workers=workers
                    )
                except Exception as exc:
                    started[label] = describe(exc)
            yield fake, started, redis
        finally:
            group.__exit__(None, None, None)  # stop the gateways before deleting their state
            for prefix in prefixes:
                n = drop_prefix(redis.url, prefix)
                notes.append(f"Redis prefix {prefix} held {n} Redis key(s) after the run; deleted")


def _pinning_note() -> str:
    return (
        "Pinning as elsewhere: fake + load generator on core 0, gateway on core 1; the two "
        "workers of 'Redis, 2 workers' share core 1 (uvicorn --workers 2, stopped through its "
        "parent PID). Redis: a redis-server of the bench's own (bench/redisproc.py: free port, "
        "no persistence, not pinned: it shares the 2 cores with everything else, as the "
        "machine's Redis did), so no other user of the machine's Redis is measured. Every "
        "gateway has its own KEYPOOL_REDIS_PREFIX, deleted after the run."
    )


# -- 6a latency ------------------------------------------------------------------------------


def latency(ctx: Ctx) -> Section:
    sec = Section(
        "redis",
        "6a. Redis backend: added latency (one connection each, sequential, fake latency 0)",
        "POST /api/chat Path B one request at a time to the in-process gateway and to the "
        "gateway with REDIS_URL (1 worker each), same fake, taking turns request by request "
        "(one keep-alive connection each), so both see the same moments of a busy machine; "
        "'Redis adds' = Redis percentile - in-process percentile. " + _pinning_note(),
        LAT_COLUMNS,
    )
    names = keys(4)
    wanted = {k: v for k, v in TARGETS.items() if v[0] == 1}
    n = 300 if ctx.quick else 1000
    with gateways(ctx, fake_config(names), names, wanted, sec.notes) as (_fake, started, redis):
        live = {label: srv for label, srv in started.items() if isinstance(srv, Server)}
        for label, srv in started.items():
            if isinstance(srv, str):
                sec.error_row(label, srv)
        try:
            urls = {label: srv.base + EP_PATH_B.path for label, srv in live.items()}
            reset_stats(redis.url)
            runs = arun(
                alternating(urls, EP_PATH_B.body, n=n, time_limit=ctx.dur(90, 30), warmup=WARMUP)
            )
            calls, usec = script_stats(redis.url)
            idle, busy = ping_floor(redis.url)
        except Exception as exc:
            sec.error_row(", ".join(live), exc)
            return sec
        base: Run | None = None
        for label, res in runs.items():
            base = base or res
            sec.rows.append(_lat_row(label, res, base, _redis_check(live[label])))
        requests = sum(len(res.recs) + WARMUP for label, res in runs.items() if TARGETS[label][1])
        sec.notes.append(
            f"Where the Redis round trip goes: {calls / max(1, requests):.2f} script calls per "
            f"request (the acquire awaited, the release queued), redis-server {usec:.0f} us per "
            f"call; a bare PING from the gateway's core after 2 ms idle {idle:.0f} us p50 "
            f"({busy:.0f} us back to back), right after the requests"
        )
    return sec


def _lat_row(label: str, res: Run, base: Run, redis: str) -> dict[str, Any]:
    p50, p99 = res.lat_ms(pct=50), res.lat_ms(pct=99)
    is_redis = res is not base
    add50 = p50 - base.lat_ms(pct=50) if is_redis else None
    add99 = p99 - base.lat_ms(pct=99) if is_redis else None
    errors = len(res.recs) - len(res.ok())
    row: dict[str, Any] = {
        "target": label,
        "requests": len(res.recs),
        "p50 ms": rnd(p50, 3),
        "p99 ms": rnd(p99, 3),
        "Redis adds p50 ms": rnd(add50, 3),
        "Redis adds p99 ms": rnd(add99, 3),
        "errors": errors,
        "redis": redis,
    }
    if is_redis and add50 is not None:
        cond = add50 <= LATENCY_GOAL_MS and errors == 0 and redis == "ok"
        row |= {
            "goal": f"Redis adds p50 <= {LATENCY_GOAL_MS:g} ms",
            "holds?": holds(cond),
            "_measured": f"Redis adds p50 {add50:.3f} ms (p99 {add99:.3f} ms), redis {redis}",
        }
    if errors:
        row["error"] = f"statuses {res.status_counts()}; first: {res.first_error()}"
    return row


# -- 6b throughput ---------------------------------------------------------------------------


def throughput(ctx: Ctx) -> Section:
    duration = ctx.dur(4, 2)
    concs = "/".join(str(c) for c in CONCS)
    sec = Section(
        "redis",
        f"6b. Redis backend: throughput (wrk c={concs}, {ROUNDS} x {duration:g} s, fake latency 0)",
        "POST /api/chat Path B, closed loop after a 1 s warm-up per target and concurrency, "
        f"{ROUNDS} rounds with the targets taking turns (req/s over all rounds, each round in "
        "'rounds'): "
        "in-process vs Redis (1 worker), and two workers sharing Redis. Goal: one worker on "
        f"Redis serves >= {THROUGHPUT_GOAL:.0%} of the in-process worker's req/s at each "
        "concurrency (same run). The two workers share core 1 while wrk and the fake share "
        "core 0 (and redis-server floats), so they have no goal; pinning and prefixes as in 6a. "
        "CPU per request: the gateway process (with its workers) and redis-server, from "
        "/proc, over the same rounds.",
        TPUT_COLUMNS,
    )
    names = keys(4)
    with gateways(ctx, fake_config(names), names, TARGETS, sec.notes) as (fake, started, redis):
        for conc in CONCS:
            direct = _wrk(ctx, fake.base + "/v1/chat/completions", names[0], duration, conc)
            results = _rounds(ctx, sec, started, redis.pid, conc, duration)
            sec.rows += [
                _tput_row(label, conc, data, results, direct) for label, data in results.items()
            ]
            sec.notes.append(f"direct (fake /v1) at c={conc}: {direct.get('rps', 0):.0f} req/s")
    return sec


def _rounds(
    ctx: Ctx,
    sec: Section,
    started: dict[str, Server | str],
    redis_pid: int | None,
    conc: int,
    duration: float,
) -> dict[str, dict[str, Any]]:
    """ROUNDS runs per target, the targets taking turns, so a burst of load from elsewhere on
    the machine falls on all of them alike; req/s over all rounds, percentiles averaged."""
    live: dict[str, Server] = {}
    for label, srv in started.items():
        if isinstance(srv, str):
            sec.error_row(label, srv, conc=conc)
            continue
        try:
            _wrk(ctx, srv.base + EP_PATH_B.path, None, 1, conc)  # warm-up, discarded
            live[label] = srv
        except Exception as exc:
            sec.error_row(label, exc, conc=conc)
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in live}
    for _ in range(ROUNDS):
        for label, srv in live.items():
            try:
                gw0, rd0 = tree_cpu(srv.pid), tree_cpu(redis_pid)
                data = _wrk(ctx, srv.base + EP_PATH_B.path, None, duration, conc)
                data["cpu_s"] = tree_cpu(srv.pid) - gw0
                data["redis_cpu_s"] = tree_cpu(redis_pid) - rd0
                runs[label].append(data)
            except Exception as exc:
                sec.error_row(label, exc, conc=conc)
    results: dict[str, dict[str, Any]] = {}
    for label, parts in runs.items():
        if len(parts) < ROUNDS:
            continue
        requests = sum(int(p["requests"]) for p in parts)
        seconds = sum(float(p["requests"]) / float(p["rps"]) for p in parts if p["rps"])
        results[label] = {
            "rps": requests / seconds if seconds else 0.0,
            "requests": requests,
            "p50_us": sum(float(p["p50_us"]) for p in parts) / len(parts),
            "p99_us": sum(float(p["p99_us"]) for p in parts) / len(parts),
            "errors_total": sum(int(p.get("errors_total", 0)) for p in parts),
            "rounds": [round(float(p["rps"])) for p in parts],
            "cpu_us": sum(p["cpu_s"] for p in parts) * 1e6 / max(1, requests),
            "redis_cpu_us": sum(p["redis_cpu_s"] for p in parts) * 1e6 / max(1, requests),
            "redis": _redis_check(live[label]),
        }
    return results


def _wrk(ctx: Ctx, url: str, key: str | None, duration: float, conc: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    lua = ctx.raw_dir / f"wrk-redis-c{conc}.lua"
    return closed(
        url,
        EP_PATH_B.body,
        headers,
        concurrency=conc,
        duration=duration,
        lua_path=lua,
        wrk_path=ctx.wrk_path,
    )


def _tput_row(
    label: str,
    conc: int,
    data: dict[str, Any],
    results: dict[str, dict[str, Any]],
    direct: dict[str, Any],
) -> dict[str, Any]:
    rps = float(data["rps"])
    in_proc = results.get("in-process, 1 worker", {}).get("rps")
    one = results.get("Redis, 1 worker", {}).get("rps")
    errors = int(data.get("errors_total", 0))
    share = ratio(rps, in_proc)
    row: dict[str, Any] = {
        "target": label,
        "conc": conc,
        "req/s": rnd(rps, 0),
        "rounds": " / ".join(str(r) for r in data.get("rounds", [])),
        "p50 ms": rnd(data.get("p50_us", float("nan")) / 1000, 2),
        "p99 ms": rnd(data.get("p99_us", float("nan")) / 1000, 2),
        "non-2xx": errors,
        "redis": data.get("redis", ""),
        "gateway CPU us/req": rnd(data.get("cpu_us"), 0),
        "redis CPU us/req": rnd(data.get("redis_cpu_us"), 0),
        "vs in-process": rnd(share, 2),
        "vs Redis 1 worker": rnd(ratio(rps, one), 2) if label == "Redis, 2 workers" else "",
        "direct >= 3x?": "yes" if float(direct.get("rps", 0)) >= 3 * rps else "**NO** (flag)",
    }
    if label == "Redis, 1 worker" and share is not None:
        row |= {
            "goal": f"req/s >= {THROUGHPUT_GOAL:.0%} of in-process",
            "holds?": holds(share >= THROUGHPUT_GOAL and errors == 0 and row["redis"] == "ok"),
            "_measured": f"{rps:.0f} vs {in_proc:.0f} req/s in-process ({share:.0%})",
        }
    if errors:
        row["error"] = f"{errors} of {data.get('requests')} responses were errors"
    return row


# -- 6c goodput ------------------------------------------------------------------------------


def goodput(ctx: Ctx) -> Section:
    duration = ctx.dur(30, 10)
    cap = s4_goodput.CAPACITY
    sec = Section(
        "redis",
        f"6c. Redis backend: goodput, two workers sharing Redis ({s4_goodput.N_KEYS} keys x "
        f"{s4_goodput.RPS_PER_KEY:g} req/s = {cap:g} req/s capacity)",
        f"Open loop at 100% of capacity for {duration:g} s on POST /api/chat (Path B), "
        "FAKE_RPM_PER_KEY=1200, gateway = uvicorn --workers 2 with one REDIS_URL/prefix; "
        "capacity served = 2xx / (capacity x send window); upstream 429s from the fake's "
        "/_control/stats; pinning and prefixes as in 6a.",
        GOODPUT_COLUMNS,
    )
    names = keys(s4_goodput.N_KEYS)
    cfg = fake_config(names, rps=s4_goodput.RPS_PER_KEY)
    target = {"Redis, 2 workers": TARGETS["Redis, 2 workers"]}
    env = {"FAKE_RPM_PER_KEY": "1200"}
    with gateways(ctx, cfg, names, target, sec.notes, env) as (fake, started, _):
        srv = started["Redis, 2 workers"]
        if isinstance(srv, str):
            sec.error_row("Redis, 2 workers", srv, load="100%")
            return sec
        try:
            res = arun(
                open_loop(
                    srv.base + EP_PATH_B.path,
                    EP_PATH_B.body,
                    rate=cap,
                    duration=duration,
                    timeout=40,
                )
            )
            upstream = upstream_counts(fake_stats(fake))
        except Exception as exc:
            sec.error_row("Redis, 2 workers", exc, load="100%")
            return sec
        sec.rows.append(_goodput_row(res, upstream, _redis_check(srv)))
        sec.notes.append(
            f"generator send lag p99 {res.lag_ms(99):.2f} ms, max {res.lag_ms(100):.2f} ms"
        )
    return sec


def _goodput_row(res: Run, upstream: dict[str, int], redis: str) -> dict[str, Any]:
    m = s4_goodput._metrics(res, upstream, 1.0)
    cond = m["served"] >= 0.95 and int(m["up429"]) == 0 and redis == "ok"
    row: dict[str, Any] = {
        "target": "Redis, 2 workers",
        "load": "100%",
        "sent/s": rnd(m["sent_rate"], 1),
        "sent": m["sent"],
        "ok": m["ok"],
        "capacity served": f"{m['served']:.1%}",
        "client errors": f"{m['client_err']:.2%}",
        "upstream 429s": m["up429"],
        "ok p50 ms": rnd(m["p50"]),
        "ok p99 ms": rnd(m["p99"]),
        "redis": redis,
        "goal": "served >= 95%, 0 upstream 429",
        "holds?": holds(cond),
        "_measured": (
            f"served {m['served']:.1%}, client errors {m['client_err']:.2%}, "
            f"upstream 429 {m['up429']}, redis {redis}"
        ),
    }
    if m["ok"] == 0 or m["client_err"] > 0:
        row["error"] = f"statuses {res.status_counts()}; first: {res.first_error()}"
    return row


def run(ctx: Ctx) -> list[Section]:
    sections: list[Section] = []
    for part in (latency, throughput, goodput):
        try:
            sections.append(part(ctx))
        except Exception as exc:
            sec = Section("redis", f"6. Redis backend: {part.__name__} (crashed)", "", ["target"])
            sec.error_row(part.__name__, exc)
            sections.append(sec)
    return sections
