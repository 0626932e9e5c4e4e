"""Scenario 7 — what /metrics and request logging cost one worker: the same build with both
on and with both switched off, measured side by side.

"on" is `app.main:app` as deployed with both on (LOG_LEVEL=INFO, LOG_FORMAT=json: one JSON line
per request into the server's log file; METRICS_ENABLED=true, /metrics scraped every second);
"off" is the same build with the product's two switches off (METRICS_ENABLED=false: nothing
recorded for Prometheus, /metrics answers 404; LOG_LEVEL=WARNING: no request line). Request ids,
the admin summary and alerts stay on in both. A third row, against `bench.obs_off` ("bare": no
request record, ids, summary or per-attempt recording at all, a build the product does not
ship), shows what the whole observability layer costs, without a goal; a fourth runs "off"
against itself: the method's own error.

Method, for a noisy shared host: the two gateways of a comparison serve *at the same time*, both
pinned to the server core, each driven by its own closed loop (wrk, concurrency 32, on the
load core). The scheduler splits the core between them, so a slow moment of the host slows
both at once and cancels in their ratio: per round, cost = 1 - on/baseline req/s over the same
seconds (and on/baseline - 1 of CPU µs per request, from /proc schedstat).

The process started first of a pair runs 1-3 % slower than its twin, in CPU per request too
(the same build against itself, with a fake each, after 15 s idle: it stays), so every
comparison runs in fresh pairs, half of them started in each order, and is estimated as a
crossover trial is: the mean of the two orders' medians, in which the order's own effect
cancels (the median of all rounds pooled sat anywhere in the gap between the two orders'
clusters). Its 95 % interval bootstraps whole pairs within each order, then their rounds (pairs
differ more than the rounds of one pair). Goal: on vs off <= 3 %.

Alone: `python -m bench.run --only observability` (or `make bench-obs`).
"""

from __future__ import annotations

import random
import statistics
import threading
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import PATH_B, Ctx, Section, body, describe, holds
from bench.procs import Server, Servers
from bench.servers import fake_config, keys, start_fake, start_gateway
from bench.stats import rnd
from bench.wrk import closed

COLUMNS = ["comparison", "conc", "pairs", "rounds", "req/s", "base req/s", "CPU us/req",
           "base CPU us/req", "non-2xx", "cost", "by start order", "95% CI", "CPU cost", "goal",
           "holds?"]  # fmt: skip
GOAL = 0.03
CONCURRENCY = 32
ROUND_S = 3
WARMUP_S = 2
SCRAPE_S = 1.0
BOOTSTRAP = 2000
ON_ENV = {"LOG_LEVEL": "INFO", "LOG_FORMAT": "json", "METRICS_ENABLED": "true"}
OFF_ENV = {"LOG_LEVEL": "WARNING", "LOG_FORMAT": "json", "METRICS_ENABLED": "false"}
BARE_ENV = {"LOG_LEVEL": "WARNING", "METRICS_ENABLED": "false"}
BARE_APP = "bench.obs_off:app"


@dataclass(frozen=True)
class Target:
    label: str
    env: dict[str, str]
    app: str | None = None
    scraped: bool = False


ON = Target("on", ON_ENV, scraped=True)
OFF = Target("off", OFF_ENV)
BARE = Target("bare", BARE_ENV, BARE_APP)
TWIN = Target("twin", OFF_ENV)  # "off" again, under a name of its own in the report


@dataclass(frozen=True)
class Comparison:
    name: str
    first: Target
    base: Target
    pairs: int  # fresh pairs of processes, alternating which starts first
    rounds: int  # rounds per pair
    goal: float | None


COMPARISONS = (
    Comparison("on vs off (request logging + /metrics)", ON, OFF, 12, 4, GOAL),
    Comparison("on vs bare (the whole observability layer)", ON, BARE, 2, 5, None),
    Comparison("off vs off (same build: the method's error)", OFF, TWIN, 2, 5, None),
)
QUICK_PAIRS, QUICK_ROUNDS = 2, 2


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


def measure(ctx: Ctx, server: Server, target: Target, duration: float, tag: str) -> dict[str, Any]:
    """One closed loop against `server` (scraped meanwhile if the target says so)."""
    cpu0 = _cpu(server)
    scraper: AbstractContextManager[list[int]] = (
        scraping(server) if target.scraped else nullcontext([])
    )
    with scraper:
        data = closed(
            server.base + "/api/chat",
            body(PATH_B),
            {},
            concurrency=CONCURRENCY,
            duration=duration,
            lua_path=ctx.raw_dir / f"wrk-obs-{tag}.lua",
            wrk_path=ctx.wrk_path,
        )
    done = max(1, int(data.get("requests", 0)))
    data["cpu_us"] = (_cpu(server) - cpu0) * 1e6 / done
    return data


def side_by_side(
    ctx: Ctx, servers: Sequence[tuple[Target, Server]], duration: float, tag: str
) -> list[dict[str, Any]]:
    """Both closed loops at once (a thread each: wrk runs as a subprocess)."""
    results: list[dict[str, Any] | BaseException] = [RuntimeError("no result")] * len(servers)

    def run(index: int, target: Target, server: Server) -> None:
        try:
            results[index] = measure(ctx, server, target, duration, f"{tag}-{index}")
        except BaseException as exc:  # reported by the caller
            results[index] = exc

    threads = [
        threading.Thread(target=run, args=(i, t, s), name=f"obs-{i}")
        for i, (t, s) in enumerate(servers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out = []
    for result in results:
        if isinstance(result, BaseException):
            raise result
        out.append(result)
    return out


def run_pair(
    ctx: Ctx, comparison: Comparison, pair: int, rounds: int
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """A fresh pair of gateways behind one fake; even pairs start `first` first, odd ones the
    baseline. Returns (first, base) results per round."""
    names = keys(4)
    order = [comparison.first, comparison.base]
    if pair % 2:
        order.reverse()
    with Servers() as group:
        fake = start_fake(group, fake_config(names), ctx.raw_dir)
        started = [
            (t, start_gateway(group, fake, names, ctx.raw_dir, t.env, app=t.app)) for t in order
        ]
        if pair % 2:
            started.reverse()  # back to (first, base)
        side_by_side(ctx, started, WARMUP_S, "warm")  # discarded
        out = []
        for index in range(rounds):
            first, base = side_by_side(ctx, started, ROUND_S, f"r{index}")
            out.append((first, base))
        return out


def crossover(
    first_first: Sequence[Sequence[float]], base_first: Sequence[Sequence[float]], seed: int = 7
) -> dict[str, float]:
    """The mean of the two start orders' medians (the rounds of the pairs whose `first` target
    started first, and of those whose baseline did; one list of rounds per pair) and a 95%
    interval from a bootstrap that resamples whole pairs within each order, then their rounds:
    pairs differ from each other more than rounds of one pair do."""
    nan = float("nan")
    if not any(first_first) or not any(base_first):
        return {"cost": nan, "first": nan, "base": nan, "lo": nan, "hi": nan}
    rng = random.Random(seed)
    median = statistics.median

    def resampled(pairs: Sequence[Sequence[float]]) -> float:
        rounds = [x for pair in rng.choices(pairs, k=len(pairs)) for x in pair]
        return median(rng.choices(rounds, k=len(rounds)))

    estimates = sorted(
        (resampled(first_first) + resampled(base_first)) / 2 for _ in range(BOOTSTRAP)
    )
    first = median([x for pair in first_first for x in pair])
    base = median([x for pair in base_first for x in pair])
    return {
        "cost": (first + base) / 2,
        "first": first,
        "base": base,
        "lo": estimates[int(0.025 * BOOTSTRAP)],
        "hi": estimates[int(0.975 * BOOTSTRAP) - 1],
    }


def costs(
    rounds: Sequence[tuple[dict[str, Any], dict[str, Any]]],
) -> tuple[list[float], list[float]]:
    """Per round: 1 - first/base req/s (throughput lost) and first/base - 1 CPU µs per request."""
    tput, cpu = [], []
    for first, base in rounds:
        if float(base["rps"]) > 0:
            tput.append(1 - float(first["rps"]) / float(base["rps"]))
        if float(base.get("cpu_us", 0)) > 0:
            cpu.append(float(first["cpu_us"]) / float(base["cpu_us"]) - 1)
    return tput, cpu


def run(ctx: Ctx) -> list[Section]:
    sec = Section(
        "observability",
        "7. Observability cost (one worker, request logging + /metrics on vs off, side by side)",
        f"Gateway Path B /api/chat, two one-worker gateways of a comparison serving at the same "
        f"time on the server core, each under its own wrk closed loop at concurrency "
        f"{CONCURRENCY}; rounds of {ROUND_S} s after a {WARMUP_S} s warm-up, in fresh pairs of "
        "processes started in alternating order. on = app.main:app with LOG_LEVEL=INFO, "
        "LOG_FORMAT=json, METRICS_ENABLED=true, /metrics scraped every second; off = the same "
        "build with METRICS_ENABLED=false and LOG_LEVEL=WARNING; bare = bench.obs_off:app (no "
        "request record, ids, summary or per-attempt recording: not shipped). Per round, cost "
        "= 1 - on/baseline req/s in the same seconds. The process started first of a pair runs "
        "1-3% slower than its twin, so cost = the mean of the two start orders' medians (a "
        "crossover trial's estimate: the order's effect cancels), shown apart under 'by start "
        "order'; 95% CI = bootstrap resampling whole pairs within each order, then their "
        "rounds; CPU cost = the same "
        "for the gateway's CPU µs per request (all threads, /proc schedstat). holds = cost <= "
        "3%.",
        COLUMNS,
    )
    for comparison in COMPARISONS:
        pairs, rounds = (
            (QUICK_PAIRS, QUICK_ROUNDS) if ctx.quick else (comparison.pairs, comparison.rounds)
        )
        # rounds of the pairs whose `first` target started first, and of those whose base did
        by_order: tuple[list[Rounds], list[Rounds]] = ([], [])
        try:
            for pair in range(pairs):
                by_order[pair % 2].append(run_pair(ctx, comparison, pair, rounds))
        except Exception as exc:
            sec.error_row(comparison.name, describe(exc), conc=CONCURRENCY)
            continue
        sec.rows.append(_row(comparison, by_order, pairs))
        sec.notes.append(
            f"{comparison.name}: cost per round, pairs started {comparison.first.label} first: "
            + _listed(by_order[0])
            + f"; started {comparison.base.label} first: "
            + _listed(by_order[1])
            + "."
        )
    return [sec]


Rounds = list[tuple[dict[str, Any], dict[str, Any]]]


def _listed(pairs: Sequence[Rounds]) -> str:
    return " | ".join(", ".join(f"{x:.1%}" for x in costs(got)[0]) for got in pairs)


def _med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _row(
    comparison: Comparison, by_order: tuple[list[Rounds], list[Rounds]], pairs: int
) -> dict[str, Any]:
    results = [r for order in by_order for got in order for r in got]
    tput, cpu = costs(results)
    t = crossover([costs(got)[0] for got in by_order[0]], [costs(got)[0] for got in by_order[1]])
    c = crossover([costs(got)[1] for got in by_order[0]], [costs(got)[1] for got in by_order[1]])
    goal = comparison.goal
    first, base = comparison.first.label, comparison.base.label
    order = f"{first} first {t['first']:.1%}, {base} first {t['base']:.1%}"
    measured = (
        f"{t['cost']:.1%} of one worker's throughput ({len(tput)} side-by-side rounds in "
        f"{pairs} pairs; {order}; 95% CI {t['lo']:.1%} to {t['hi']:.1%}); CPU per request "
        f"{c['cost']:+.1%}"
    )
    return {
        "comparison": comparison.name,
        "conc": CONCURRENCY,
        "pairs": pairs,
        "rounds": len(tput),
        "req/s": rnd(_med([float(f["rps"]) for f, _ in results]), 0),
        "base req/s": rnd(_med([float(b["rps"]) for _, b in results]), 0),
        "CPU us/req": rnd(_med([float(f["cpu_us"]) for f, _ in results]), 1),
        "base CPU us/req": rnd(_med([float(b["cpu_us"]) for _, b in results]), 1),
        "non-2xx": sum(
            int(f.get("errors_total", 0)) + int(b.get("errors_total", 0)) for f, b in results
        ),
        "cost": f"{t['cost']:.1%}",
        "by start order": order,
        "95% CI": f"{t['lo']:.1%} to {t['hi']:.1%}",
        "CPU cost": f"{c['cost']:+.1%}",
        "goal": f"<= {goal:.0%}" if goal is not None else "",
        "holds?": holds(t["cost"] <= goal) if goal is not None else "",
        "_measured": measured,
        "_paired_cost": [round(x, 4) for x in tput],
        "_paired_cpu": [round(x, 4) for x in cpu],
    }
