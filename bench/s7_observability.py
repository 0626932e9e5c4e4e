"""Scenario 7 — what observability costs one worker: closed-loop throughput with /metrics scraped
and request logging on, against the same gateway with both off, interleaved in the same run.

"on" is `app.main:app` as deployed (LOG_LEVEL=INFO, LOG_FORMAT=json: one JSON line per request
into the server's log file) while a scraper GETs /metrics every second; "off" is `bench.obs_off`
(no request metrics, summary, ids, log line or per-attempt recording) at LOG_LEVEL=WARNING.
Both run one worker on the server core, behind the same fake provider, and are measured in
alternating rounds; each keeps its best round. Goal: on costs <= 3% of off's throughput.

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
        "second; off = bench.obs_off:app (no RequestObserver, no per-attempt metrics or "
        "observer), LOG_LEVEL=WARNING. cost = 1 - on/off req/s.",
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
                "on": start_gateway(group, fake, names, ctx.raw_dir, ON_ENV),
            }
        except Exception as exc:
            sec.error_row("gateway", describe(exc))
            return [sec]
        for label, server in servers.items():
            measure(ctx, server, label, 1)  # warm-up, discarded
        for round_i in range(rounds):
            order = ("off", "on") if round_i % 2 == 0 else ("on", "off")
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
    off_rps = best.get("off", {}).get("rps")
    rows = []
    for label in ("off", "on"):
        data = best.get(label)
        if not data:
            continue
        rps = float(data["rps"])
        cost = None if label == "off" or not off_rps else 1 - rps / off_rps
        row: dict[str, Any] = {
            "target": f"gateway, observability {label}",
            "conc": CONCURRENCY,
            "req/s": rnd(rps, 0),
            "p50 ms": rnd(data.get("p50_us", float("nan")) / 1000, 2),
            "p99 ms": rnd(data.get("p99_us", float("nan")) / 1000, 2),
            "CPU us/req": rnd(data.get("cpu_us"), 1),
            "non-2xx": int(data.get("errors_total", 0)),
            "cost": "" if cost is None else f"{cost:.1%}",
            "goal": f"<= {GOAL:.0%}" if label == "on" else "",
            "holds?": holds(cost <= GOAL) if cost is not None else "",
        }
        if cost is not None:
            row["_measured"] = f"{cost:.1%} of one worker's throughput ({rps:.0f} req/s on)"
        rows.append(row)
    return rows
