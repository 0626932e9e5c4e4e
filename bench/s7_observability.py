"""Scenario 7 — what observability costs one worker: closed-loop throughput with /metrics scraped
and request logging on, against the same gateway with both off, interleaved in the same run.

"on" is `app.main:app` as deployed (LOG_LEVEL=INFO, LOG_FORMAT=json: one JSON line per request
into the server's log file) while a scraper GETs /metrics every second; "quiet" is the same build
with what an operator can switch off switched off (LOG_LEVEL=WARNING: no request log; nobody
scrapes /metrics); "off" is `bench.obs_off` (no request metrics, summary, ids, log line or
per-attempt recording, a build the product does not ship) at LOG_LEVEL=WARNING. All run one
worker on the server core, behind the same fake provider.

Measured for a noisy shared host: many short rounds, each running the three targets back to back
in an order that cycles through all six permutations, and a *paired* statistic: per round the
cost of "on" against each baseline measured seconds apart (1 - on/baseline req/s, and on/baseline
- 1 of the gateway's CPU µs per request), reported as the median over rounds with its
interquartile range and a bootstrap 95% interval of the median. A neighbour that slows the host
for a few seconds moves one round's pair, not the median. Goal: the median paired throughput
cost <= 3%, against "quiet" (request logging and /metrics on vs off) and "off" (the whole layer,
in-memory recording included).

Alone: `python -m bench.run --only observability` (or `make bench-obs`).
"""

from __future__ import annotations

import itertools
import random
import statistics
import threading
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import PATH_B, Ctx, Section, body, describe, holds
from bench.procs import Server, Servers
from bench.servers import fake_config, keys, start_fake, start_gateway
from bench.stats import rnd
from bench.wrk import closed

COLUMNS = ["target", "conc", "rounds", "req/s", "p50 ms", "p99 ms", "CPU us/req", "non-2xx",
           "cost", "IQR", "95% CI", "CPU cost", "CPU IQR", "goal", "holds?"]  # fmt: skip
GOAL = 0.03
CONCURRENCY = 32
ROUNDS, ROUND_S = 30, 1  # full: 30 x 3 targets x 1 s = 90 s measured (wrk takes whole seconds)
QUICK_ROUNDS, QUICK_ROUND_S = 4, 1
WARMUP_S = 2
SCRAPE_S = 1.0
BOOTSTRAP = 2000
ON_ENV = {"LOG_LEVEL": "INFO", "LOG_FORMAT": "json"}
OFF_ENV = {"LOG_LEVEL": "WARNING"}
QUIET_ENV = {"LOG_LEVEL": "WARNING", "LOG_FORMAT": "json"}
OFF_APP = "bench.obs_off:app"
LABELS = ("off", "quiet", "on")
BASELINES = (("quiet", "request logging + /metrics"), ("off", "whole layer"))


@contextmanager
def scraping(server: Server, every_s: float = SCRAPE_S) -> Iterator[list[int]]:
    """GET /metrics every `every_s` while the block runs (a Prometheus at a short interval),
    the first half an interval in, so a round of n intervals holds n scrapes."""
    stop, sizes = threading.Event(), list[int]()

    def loop() -> None:
        wait = every_s / 2
        while not stop.wait(wait):
            wait = every_s
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


def task_cpu_s(pid: int) -> float:
    """CPU seconds of every thread of `pid`, in nanoseconds' resolution (schedstat's run time;
    /proc/<pid>/stat counts 10 ms ticks, 1% of a 2 s round)."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += int(stat.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended meanwhile
    return total / 1e9


def _cpu(server: Server) -> float:
    try:
        return task_cpu_s(server.pid)
    except OSError:
        return server.cpu()


def measure(ctx: Ctx, server: Server, label: str, duration: float) -> dict[str, Any]:
    cpu0 = _cpu(server)
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
    data["cpu_us"] = (_cpu(server) - cpu0) * 1e6 / done
    return data


def orders(labels: Sequence[str], rounds: int) -> list[tuple[str, ...]]:
    """The targets' order in each round: all permutations in turn, so each target runs first,
    middle and last equally often (and after each other target equally often)."""
    cycle = list(itertools.permutations(labels))
    return [cycle[i % len(cycle)] for i in range(rounds)]


def spread(values: Sequence[float], seed: int = 7) -> dict[str, float]:
    """Median, interquartile range and a bootstrap 95% interval of the median of `values`."""
    data = sorted(values)
    if not data:
        nan = float("nan")
        return {"median": nan, "q1": nan, "q3": nan, "lo": nan, "hi": nan}
    if len(data) == 1:
        q1 = q3 = data[0]
    else:
        q1, _, q3 = statistics.quantiles(data, n=4, method="inclusive")
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(data, k=len(data))) for _ in range(BOOTSTRAP))
    return {
        "median": statistics.median(data),
        "q1": q1,
        "q3": q3,
        "lo": medians[int(0.025 * BOOTSTRAP)],
        "hi": medians[int(0.975 * BOOTSTRAP) - 1],
    }


def paired_costs(
    rounds: Sequence[dict[str, dict[str, Any]]], base: str
) -> tuple[list[float], list[float]]:
    """Per round: 1 - on/base req/s (throughput lost) and on/base - 1 CPU µs per request."""
    tput, cpu = [], []
    for one in rounds:
        on, other = one.get("on"), one.get(base)
        if not on or not other:
            continue
        if float(other["rps"]) > 0:
            tput.append(1 - float(on["rps"]) / float(other["rps"]))
        if float(other.get("cpu_us", 0)) > 0:
            cpu.append(float(on["cpu_us"]) / float(other["cpu_us"]) - 1)
    return tput, cpu


def run(ctx: Ctx) -> list[Section]:
    rounds, duration = (QUICK_ROUNDS, QUICK_ROUND_S) if ctx.quick else (ROUNDS, ROUND_S)
    sec = Section(
        "observability",
        "7. Observability cost (one worker, /metrics + request logging on vs off)",
        f"Gateway Path B /api/chat, wrk closed loop at concurrency {CONCURRENCY}, one worker "
        f"each; {rounds} rounds of {duration:g} s per target after a {WARMUP_S} s warm-up each, "
        "every round running the three targets back to back in an order cycling through all "
        "six permutations. on = app.main:app, LOG_LEVEL=INFO, LOG_FORMAT=json, /metrics "
        "scraped every second; quiet = the same build at LOG_LEVEL=WARNING (no request log), "
        "not scraped; off = bench.obs_off:app (no RequestObserver, no per-attempt metrics or "
        "observer: a build the product does not ship), LOG_LEVEL=WARNING. Target rows: median "
        "over rounds. cost = median over rounds of 1 - on/baseline req/s in the same round "
        "(paired), against quiet (request logging and /metrics on vs off) and against off (the "
        "whole layer, in-memory recording included); IQR = its interquartile range over "
        "rounds, 95% CI = bootstrap interval of that median; CPU cost = the same for "
        "on/baseline - 1 of the gateway's CPU µs per request (all its threads, /proc "
        "schedstat). holds = median paired req/s cost <= 3%.",
        COLUMNS,
    )
    names = keys(4)
    results: list[dict[str, dict[str, Any]]] = []
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
            measure(ctx, server, label, WARMUP_S)  # warm-up, discarded
        for order in orders(LABELS, rounds):
            one: dict[str, dict[str, Any]] = {}
            for label in order:
                server = servers[label]
                try:
                    if label == "on":
                        with scraping(server) as sizes:
                            one[label] = measure(ctx, server, label, duration)
                        scrapes += sizes
                    else:
                        one[label] = measure(ctx, server, label, duration)
                except Exception as exc:
                    sec.error_row(label, describe(exc), conc=CONCURRENCY)
                    return [sec]
            results.append(one)
    sec.rows += rows(results)
    sec.notes += notes(results, scrapes)
    return [sec]


def rows(results: Sequence[dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    out = [_row(f"gateway, observability {label}", results, label) for label in LABELS]
    for base, what in BASELINES:
        tput, cpu = paired_costs(results, base)
        if not tput:
            continue
        t, c = spread(tput), spread(cpu)
        row = _row(f"on vs {base} ({what})", results, "on")
        row.update(
            {
                "cost": f"{t['median']:.1%}",
                "IQR": f"{t['q1']:.1%} to {t['q3']:.1%}",
                "95% CI": f"{t['lo']:.1%} to {t['hi']:.1%}",
                "CPU cost": f"{c['median']:+.1%}",
                "CPU IQR": f"{c['q1']:+.1%} to {c['q3']:+.1%}",
                "goal": f"<= {GOAL:.0%}",
                "holds?": holds(t["median"] <= GOAL),
                "_measured": f"{t['median']:.1%} of one worker's throughput (median of "
                f"{len(tput)} paired rounds; IQR {t['q1']:.1%} to {t['q3']:.1%}, 95% CI of the "
                f"median {t['lo']:.1%} to {t['hi']:.1%}); CPU per request {c['median']:+.1%}",
                "_paired_cost": [round(x, 4) for x in tput],
                "_paired_cpu": [round(x, 4) for x in cpu],
            }
        )
        out.append(row)
    return out


def _med(results: Sequence[dict[str, dict[str, Any]]], label: str, key: str) -> float:
    values = [float(one[label][key]) for one in results if label in one and key in one[label]]
    return statistics.median(values) if values else float("nan")


def _row(target: str, results: Sequence[dict[str, dict[str, Any]]], label: str) -> dict[str, Any]:
    runs = [one[label] for one in results if label in one]
    return {
        "target": target,
        "conc": CONCURRENCY,
        "rounds": len(runs),
        "req/s": rnd(_med(results, label, "rps"), 0),
        "p50 ms": rnd(_med(results, label, "p50_us") / 1000, 2),
        "p99 ms": rnd(_med(results, label, "p99_us") / 1000, 2),
        "CPU us/req": rnd(_med(results, label, "cpu_us"), 1),
        "non-2xx": sum(int(r.get("errors_total", 0)) for r in runs),
        "cost": "",
        "goal": "",
        "holds?": "",
        "_rounds_rps": [round(float(r["rps"])) for r in runs],
        "_rounds_cpu_us": [round(float(r["cpu_us"]), 1) for r in runs],
    }


def notes(results: Sequence[dict[str, dict[str, Any]]], scrapes: Sequence[int]) -> list[str]:
    out = []
    for label in LABELS:
        rps = [float(one[label]["rps"]) for one in results if label in one]
        cpu = [float(one[label]["cpu_us"]) for one in results if label in one]
        if rps:
            out.append(
                f"{label}: req/s over rounds {min(rps):.0f}-{max(rps):.0f}, CPU us/req "
                f"{min(cpu):.0f}-{max(cpu):.0f} (the host's noise, same build)."
            )
    for base, _ in BASELINES:
        tput, cpu = paired_costs(results, base)
        if tput:
            t = spread(tput)
            out.append(
                f"on vs {base}, paired req/s cost per round: "
                + ", ".join(f"{x:.1%}" for x in tput)
                + f" (range {min(tput):.1%} to {max(tput):.1%}; the goal is judged on the "
                f"median, {t['median']:.1%}, whose 95% interval spans "
                f"{t['hi'] - t['lo']:.1%} points)."
            )
    failed = sum(1 for s in scrapes if s < 0)
    out.append(
        f"{len(scrapes)} /metrics scrapes during the 'on' rounds ({failed} failed), "
        f"~{max(scrapes, default=0) // 1024} KiB each."
    )
    return out
