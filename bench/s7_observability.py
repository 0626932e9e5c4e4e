"""Scenario 7 — what observability costs one worker: closed-loop throughput with /metrics scraped
and request logging on, against the same gateway with both off, interleaved in the same run.

"on" is `app.main:app` as deployed (LOG_LEVEL=INFO, LOG_FORMAT=json: one JSON line per request
into the server's log file) while a scraper GETs /metrics every second; "quiet" is the same build
with what an operator can switch off switched off (LOG_LEVEL=WARNING: no request log; nobody
scrapes /metrics); "off" is `bench.obs_off` (no request metrics, summary, ids, log line or
per-attempt recording, a build the product does not ship) at LOG_LEVEL=WARNING. All run one
worker on the server core, behind the same fake provider, and are measured in rotating rounds;
each keeps its best round. Goal: on costs <= 3% of the throughput without it, reported against
both baselines: "quiet" (request logging and /metrics on vs off) and "off" (the whole layer,
in-memory recording included).

Alone: `python -m bench.run --only observability` (or `make bench-obs`).
"""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bench.common import PATH_B, Ctx, Section, body, describe, holds
from bench.procs import Server, Servers
from bench.servers import fake_config, keys, start_fake, start_gateway
from bench.stats import rnd
from bench.wrk import closed

COLUMNS = ["target", "conc", "req/s", "p50 ms", "p99 ms", "CPU us/req", "non-2xx", "cost",
           "goal", "holds?"]  # fmt: skip
GOAL = 0.03
CONCURRENCY = 32
ROUNDS, ROUND_S = 4, 5.0
SCRAPE_S = 1.0
ON_ENV = {"LOG_LEVEL": "INFO", "LOG_FORMAT": "json"}
OFF_ENV = {"LOG_LEVEL": "WARNING"}
QUIET_ENV = {"LOG_LEVEL": "WARNING", "LOG_FORMAT": "json"}
OFF_APP = "bench.obs_off:app"


@contextmanager
def scraping(server: Server, every_s: float = SCRAPE_S) -> Iterator[list[int]]:
    """GET /metrics every `every_s` while the block runs (a Prometheus at a short interval)."""
    stop, sizes = threading.Event(), list[int]()

    def loop() -> None:
        while not stop.wait(every_s):
            try:
                with urllib.request.urlopen(server.base + "/metrics", timeout=5) as answer:
                    sizes.append(len(answer.read()))
            except OSError:
                sizes.append(-1)

    thread = threading.Thread(target=loop, name="metrics-scraper", daemon=True)
    thread.start()
    try:
        yield sizes
    finally:
        stop.set()
        thread.join(timeout=10)


def measure(ctx: Ctx, server: Server, label: str, duration: float) -> dict[str, Any]:
    cpu0 = server.cpu()
    data = closed(
        server.base + "/api/chat",
        body(PATH_B),
        {},
        concurrency=CONCURRENCY,
        duration=duration,
        lua_path=ctx.raw_dir / f"wrk-obs-{label}.lua",
        wrk_path=ctx.wrk_path,
    )
    done = max(1, int(data.get("requests", 0)))
    data["cpu_us"] = (server.cpu() - cpu0) * 1e6 / done
    return data


def run(ctx: Ctx) -> list[Section]:
    rounds, duration = (1, 3.0) if ctx.quick else (ROUNDS, ROUND_S)
    sec = Section(
        "observability",
        "7. Observability cost (one worker, /metrics + request logging on vs off)",
        f"Gateway Path B /api/chat, wrk closed loop at concurrency {CONCURRENCY}; {rounds} "
        f"alternating {duration:g} s rounds per target (after a 1 s warm-up each), best round "
        "kept. on = app.main:app, LOG_LEVEL=INFO, LOG_FORMAT=json, /metrics scraped every "
        "second; quiet = the same build at LOG_LEVEL=WARNING (no request log), not scraped; "
        "off = bench.obs_off:app (no RequestObserver, no per-attempt metrics or observer: a "
        "build the product does not ship), LOG_LEVEL=WARNING. cost = 1 - on/baseline req/s, "
        "against quiet (request logging and /metrics on vs off) and against off (the whole "
        "layer, in-memory recording included).",
        COLUMNS,
    )
    names = keys(4)
    best: dict[str, dict[str, Any]] = {}
    scrapes: list[int] = []
    with Servers() as group:
        try:
            fake = start_fake(group, fake_config(names), ctx.raw_dir)
            servers = {
                "off": start_gateway(group, fake, names, ctx.raw_dir, OFF_ENV, app=OFF_APP),
                "quiet": start_gateway(group, fake, names, ctx.raw_dir, QUIET_ENV),
                "on": start_gateway(group, fake, names, ctx.raw_dir, ON_ENV),
            }
        except Exception as exc:
            sec.error_row("gateway", describe(exc))
            return [sec]
        for label, server in servers.items():
            measure(ctx, server, label, 1)  # warm-up, discarded
        for round_i in range(rounds):
            labels = list(servers)
            shift = round_i % len(labels)
            order = labels[shift:] + labels[:shift]
            if round_i % 2:
                order.reverse()
            for label in order:
                server = servers[label]
                try:
                    if label == "on":
                        with scraping(server) as sizes:
                            data = measure(ctx, server, label, duration)
                        scrapes += sizes
                    else:
                        data = measure(ctx, server, label, duration)
                except Exception as exc:
                    sec.error_row(label, describe(exc), conc=CONCURRENCY)
                    return [sec]
                if label not in best or data["rps"] > best[label]["rps"]:
                    best[label] = data
    sec.rows += _rows(best)
    failed = sum(1 for s in scrapes if s < 0)
    sec.notes.append(
        f"{len(scrapes)} /metrics scrapes during the 'on' rounds ({failed} failed), "
        f"~{max(scrapes, default=0) // 1024} KiB each."
    )
    return [sec]


def _rows(best: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for label in ("off", "quiet", "on"):
        data = best.get(label)
        if not data:
            continue
        rows.append(_row(f"gateway, observability {label}", data))
    on = best.get("on")
    for base, what in (("quiet", "request logging + /metrics"), ("off", "whole layer")):
        base_rps = best.get(base, {}).get("rps")
        if not on or not base_rps:
            continue
        cost = 1 - float(on["rps"]) / float(base_rps)
        row = _row(f"on vs {base} ({what})", on)
        row.update(
            {
                "cost": f"{cost:.1%}",
                "goal": f"<= {GOAL:.0%}",
                "holds?": holds(cost <= GOAL),
                "_measured": f"{cost:.1%} of one worker's throughput "
                f"({float(on['rps']):.0f} req/s on, {float(base_rps):.0f} {base})",
            }
        )
        rows.append(row)
    return rows


def _row(target: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "target": target,
        "conc": CONCURRENCY,
        "req/s": rnd(float(data["rps"]), 0),
        "p50 ms": rnd(data.get("p50_us", float("nan")) / 1000, 2),
        "p99 ms": rnd(data.get("p99_us", float("nan")) / 1000, 2),
        "CPU us/req": rnd(data.get("cpu_us"), 1),
        "non-2xx": int(data.get("errors_total", 0)),
        "cost": "",
        "goal": "",
        "holds?": "",
    }
