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
seconds (and on/baseline - 1 of CPU µs per request, from /proc schedstat). The process started
first of a pair measured 1-2 % slower than its twin (same build against itself), so every
comparison runs in several fresh pairs, half of them started in each order; the verdict is the
median over all their rounds, with a bootstrap 95 % interval. Goal: on vs off <= 3 %.

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
           "base CPU us/req", "non-2xx", "cost", "IQR", "95% CI", "CPU cost", "goal",
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


@dataclass(frozen=True)
class Comparison:
    name: str
    first: Target
    base: Target
    pairs: int  # fresh pairs of processes, alternating which starts first
    rounds: int  # rounds per pair
    goal: float | None


COMPARISONS = (
    Comparison("on vs off (request logging + /metrics)", ON, OFF, 6, 5, GOAL),
    Comparison("on vs bare (the whole observability layer)", ON, BARE, 2, 5, None),
    Comparison("off vs off (same build: the method's error)", OFF, OFF, 2, 5, None),
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
        "request record, ids, summary or per-attempt recording: not shipped). cost = median "
        "over rounds of 1 - on/baseline req/s in the same seconds; IQR and a bootstrap 95% "
        "interval of that median; CPU cost = the same for the gateway's CPU µs per request "
        "(all threads, /proc schedstat). holds = median cost <= 3%.",
        COLUMNS,
    )
    for comparison in COMPARISONS:
        pairs, rounds = (
            (QUICK_PAIRS, QUICK_ROUNDS) if ctx.quick else (comparison.pairs, comparison.rounds)
        )
        results: list[tuple[dict[str, Any], dict[str, Any]]] = []
        per_pair: list[float] = []
        try:
            for pair in range(pairs):
                got = run_pair(ctx, comparison, pair, rounds)
                results += got
                per_pair.append(statistics.median(costs(got)[0]))
        except Exception as exc:
            sec.error_row(comparison.name, describe(exc), conc=CONCURRENCY)
            continue
        sec.rows.append(_row(comparison, results, pairs))
        tput, _ = costs(results)
        sec.notes.append(
            f"{comparison.name}: cost per round "
            + ", ".join(f"{x:.1%}" for x in tput)
            + "; median per pair (first started: "
            + ", ".join(f"{'on' if i % 2 == 0 else 'base'} {x:.1%}" for i, x in enumerate(per_pair))
            + ")."
        )
    return [sec]


def _med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _row(
    comparison: Comparison,
    results: Sequence[tuple[dict[str, Any], dict[str, Any]]],
    pairs: int,
) -> dict[str, Any]:
    tput, cpu = costs(results)
    t, c = spread(tput), spread(cpu)
    goal = comparison.goal
    measured = (
        f"{t['median']:.1%} of one worker's throughput (median of {len(tput)} side-by-side "
        f"rounds in {pairs} pairs; IQR {t['q1']:.1%} to {t['q3']:.1%}, 95% CI of the median "
        f"{t['lo']:.1%} to {t['hi']:.1%}); CPU per request {c['median']:+.1%}"
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
        "cost": f"{t['median']:.1%}",
        "IQR": f"{t['q1']:.1%} to {t['q3']:.1%}",
        "95% CI": f"{t['lo']:.1%} to {t['hi']:.1%}",
        "CPU cost": f"{c['median']:+.1%}",
        "goal": f"<= {goal:.0%}" if goal is not None else "",
        "holds?": holds(t["median"] <= goal) if goal is not None else "",
        "_measured": measured,
        "_paired_cost": [round(x, 4) for x in tput],
        "_paired_cpu": [round(x, 4) for x in cpu],
    }
