"""Scenario 7 — what access control and the response cache cost (or save) per request.

(a) AUTH_MODE=token with tier rate limits and daily budgets on, against AUTH_MODE=none, same
fake, same run: the added sequential p50 and the one-worker wrk c=32 throughput (both gateways
price every answer: cost is recorded in every mode). (b) A response-cache hit next to a miss
(CACHE_MODE=all; the miss gateway's entries expire at once, so it pays lookup + upstream + store)
and next to the cache switched off.

python -m bench.access_cache [--quick] [--no-wrk] [--access-only] [--rounds N] [--out-dir DIR]
(alone: writes DIR/results-access-cache.*, DIR defaults to bench/)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import PATH_B, Ctx, Section, body
from bench.loadgen import Run, sequential
from bench.procs import Server, Servers, install_cleanup, pin_self_to_loadgen_core, stop_all
from bench.report import loadavg, markdown, meta, write
from bench.servers import fake_config, fake_stats, keys, start_fake, start_gateway, upstream_counts
from bench.stats import arun, ratio, rnd
from bench.wrk import closed, ensure_wrk

BENCH = Path(__file__).resolve().parent
CONC = 32
SEQ_SLICES = 5  # sequential requests per target, in this many interleaved slices
ADMIN = "bench-admin-token-0123456789"
CHAT = body(PATH_B, temperature=0)
PRICED = {"MODEL_PRICES": "fake-small=0.15/0.60"}
TARGETS: dict[str, dict[str, str]] = {
    "none": {**PRICED, "CACHE_MODE": "off"},
    "token + limits + budgets": {
        **PRICED,
        "CACHE_MODE": "off",
        "AUTH_MODE": "token",
        "ADMIN_TOKEN": ADMIN,
        "TIER_RPM": "free:100000000",  # never refused, but every request is counted
        "TIER_DAILY_BUDGET_USD": "free:1000000",  # checked and charged on every answer
    },
    # none mode with a self-declared user: what serving a named user costs without any check
    # (the token gateway's user comes from its key); not in the goal, it splits the difference.
    "none, X-User-Id": {**PRICED, "CACHE_MODE": "off"},
    "cache miss": {**PRICED, "CACHE_MODE": "all", "CACHE_TTL_S": "0.000001"},
    "cache hit": {**PRICED, "CACHE_MODE": "all", "CACHE_TTL_S": "3600"},
}
BASELINE = {
    "token + limits + budgets": "none",
    "none, X-User-Id": "none",
    "cache miss": "none",
    "cache hit": "cache miss",
}
COLUMNS = ["target", "seq p50 ms", "seq p99 ms", "adds p50 ms", "vs", "c=32 req/s"]
COLUMNS += ["c=32 p50 ms", "req/s ratio", "paired ratio", "CPU us/req", "adds CPU us"]
COLUMNS += ["non-2xx", "upstream calls"]


def _client_key(srv: Server) -> str:
    request = urllib.request.Request(
        srv.base + "/api/admin/clients",
        data=json.dumps({"user_id": "bench"}).encode(),
        headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        key: str = json.loads(resp.read())["key"]
    return key


def _upstream(fake: Server) -> int:
    return upstream_counts(fake_stats(fake))["requests"]


ACCESS_ONLY = ("none", "token + limits + budgets", "none, X-User-Id")


def measure(ctx: Ctx, *, access_only: bool = False, rounds: int | None = None) -> Section:
    duration = ctx.dur(5, 3)
    n = 300 if ctx.quick else 1000
    sec = Section(
        "access_cache",
        f"7. Access control and response cache: added latency and throughput (wrk c={CONC}, "
        f"{duration:g} s, 1 worker each, fake latency 0)",
        "POST /api/chat Path B (temperature 0) against five gateways on one fake, same run: "
        "AUTH_MODE=none; AUTH_MODE=token with a client key, tier rpm and daily budget on (never "
        "reached); AUTH_MODE=none with X-User-Id (a named user, no checks); and, both none mode, "
        "CACHE_MODE=all whose entries expire at once (every "
        "request a miss: lookup, upstream, store) and CACHE_MODE=all with a 1 h TTL (every "
        "request after the first a hit). Sequential: one connection, one request at a time, in "
        f"{SEQ_SLICES} slices per target taken in rotation; "
        "'adds' = p50 - the baseline named in 'vs'. 'upstream calls' = chat requests the fake "
        "saw during that target's runs (warm-ups included).",
        COLUMNS,
    )
    names = keys(4)
    rounds = rounds or (1 if ctx.quick else 3)
    chosen = {k: v for k, v in TARGETS.items() if not access_only or k in ACCESS_ONLY}
    with Servers() as group:
        fake = start_fake(group, fake_config(names), ctx.raw_dir)
        targets: dict[str, tuple[Server, dict[str, str]]] = {}
        for label, env in chosen.items():
            try:
                srv = start_gateway(group, fake, names, ctx.raw_dir, env)
                auth = {"Authorization": f"Bearer {_client_key(srv)}"} if "AUTH_MODE" in env else {}
                if "X-User-Id" in label:
                    auth = {"X-User-Id": "bench"}
                targets[label] = (srv, auth)
            except Exception as exc:
                sec.error_row(label, exc)
        results: dict[str, dict[str, Any]] = {label: {"upstream": 0} for label in targets}
        # Sequential in slices, then the wrk runs, both in rotation (every target once per
        # round, forwards then backwards), so drift in the machine's load hits all alike.
        slices = 1 if ctx.quick else SEQ_SLICES
        order = list(targets.items())
        for slice_no in range(slices):
            for label, (srv, auth) in order if slice_no % 2 == 0 else order[::-1]:
                before = _upstream(fake)
                part = arun(
                    sequential(
                        srv.base + "/api/chat",
                        CHAT,
                        auth,
                        n=n // slices,
                        time_limit=ctx.dur(60, 20) / slices,
                        warmup=20,
                    )
                )
                seq = results[label].setdefault("seq", Run())
                seq.recs.extend(part.recs)
                results[label]["upstream"] += _upstream(fake) - before
        for round_no in range(rounds):
            order = list(targets.items())  # forwards, then backwards: drift hits all alike
            for label, (srv, auth) in order if round_no % 2 == 0 else order[::-1]:
                before = _upstream(fake)
                lua = ctx.raw_dir / f"wrk-access-cache-{label.replace(' ', '_')}.lua"
                url = srv.base + "/api/chat"
                for seconds in (1.0, duration):  # a warm-up, discarded, then the run
                    cpu0 = srv.cpu()
                    run = closed(
                        url,
                        CHAT,
                        auth,
                        concurrency=CONC,
                        duration=seconds,
                        lua_path=lua,
                        wrk_path=ctx.wrk_path,
                    )
                    run["cpu_us"] = (srv.cpu() - cpu0) * 1e6 / max(1, int(run.get("requests", 0)))
                results[label].setdefault("tputs", []).append(run)
                results[label]["upstream"] += _upstream(fake) - before
        for label, data in results.items():
            runs = data.pop("tputs", [])
            if "seq" not in data or not runs:
                continue
            data["tput"] = {
                "rps": sum(float(r["rps"]) for r in runs) / len(runs),
                "p50_us": sorted(float(r.get("p50_us", "nan")) for r in runs)[len(runs) // 2],
                "errors_total": sum(int(r.get("errors_total", 0)) for r in runs),
                "cpu_us": sorted(float(r["cpu_us"]) for r in runs)[len(runs) // 2],
                "round_rps": [float(r["rps"]) for r in runs],
            }
            sec.rows.append(_row(label, data, results))
        sec.notes.append(
            f"c={CONC} figures: mean req/s (median p50, median CPU us/req) of {rounds} rotation "
            f"round(s) of {duration:g} s per target, each after a 1 s warm-up, targets in turn "
            "forwards then backwards; 'paired ratio' = median over rounds of req/s / the "
            "baseline's req/s in the same round; CPU us/req = the gateway's utime+stime during "
            "the run / requests completed"
        )
    return sec


def _paired(rps: list[float], base: list[float]) -> float:
    """Median over rounds of this round's req/s / the baseline's in the same round: runs seconds
    apart, so a noisy neighbour on a shared machine moves both sides of each ratio alike."""
    ratios = sorted(a / b for a, b in zip(rps, base, strict=False) if b > 0)
    if not ratios:
        return float("nan")
    middle = len(ratios) // 2
    return ratios[middle] if len(ratios) % 2 else (ratios[middle - 1] + ratios[middle]) / 2


def _row(label: str, data: dict[str, Any], results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    seq: Run = data["seq"]
    tput: dict[str, Any] = data["tput"]
    base_label = BASELINE.get(label)
    base = results.get(base_label) if base_label else None
    p50 = seq.lat_ms(pct=50)
    base_p50 = base["seq"].lat_ms(pct=50) if base else None
    errors = len(seq.recs) - len(seq.ok()) + int(tput.get("errors_total", 0))
    row: dict[str, Any] = {
        "target": label,
        "seq p50 ms": rnd(p50, 3),
        "seq p99 ms": rnd(seq.lat_ms(pct=99), 3),
        "adds p50 ms": rnd(p50 - base_p50, 3) if base_p50 is not None else "",
        "vs": base_label or "",
        "c=32 req/s": rnd(float(tput["rps"]), 0),
        "c=32 p50 ms": rnd(tput.get("p50_us", float("nan")) / 1000, 2),
        "req/s ratio": rnd(ratio(float(tput["rps"]), base["tput"]["rps"]), 2) if base else "",
        "paired ratio": rnd(_paired(tput["round_rps"], base["tput"]["round_rps"]), 2)
        if base
        else "",
        "CPU us/req": rnd(tput["cpu_us"], 0),
        "adds CPU us": rnd(tput["cpu_us"] - base["tput"]["cpu_us"], 0) if base else "",
        "non-2xx": errors,
        "upstream calls": data["upstream"],
    }
    if errors:
        row["error"] = f"statuses {seq.status_counts()}; first: {seq.first_error()}"
    return row


def run(ctx: Ctx, *, access_only: bool = False, rounds: int | None = None) -> list[Section]:
    try:
        return [measure(ctx, access_only=access_only, rounds=rounds)]
    except Exception as exc:
        sec = Section(
            "access_cache", "7. Access control and response cache (crashed)", "", ["target"]
        )
        sec.error_row("access_cache", exc)
        return [sec]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.access_cache", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-wrk", action="store_true")
    parser.add_argument("--out-dir", type=Path, default=BENCH)
    parser.add_argument(
        "--access-only", action="store_true", help="only AUTH_MODE=none and token (no cache rows)"
    )
    parser.add_argument("--rounds", type=int, default=None, help="wrk rotation rounds (3; quick 1)")
    args = parser.parse_args(argv)
    install_cleanup()
    notes = [f"1-min load average before the run: {loadavg():.2f}"]
    if not pin_self_to_loadgen_core():
        notes.append("fewer than 2 cores: no pinning, figures are not comparable")
    wrk_path = None if args.no_wrk else ensure_wrk()
    tool = "wrk -t1 (closed loop) + aiohttp (sequential)" if wrk_path else "aiohttp only"
    ctx = Ctx(
        quick=args.quick,
        raw_dir=args.out_dir / "results.raw" / "access_cache",
        wrk_path=wrk_path,
        notes=notes,
    )
    started = time.monotonic()
    try:
        sections = run(ctx, access_only=args.access_only, rounds=args.rounds)
    finally:
        stop_all()
    info = meta(args.quick, tool, time.monotonic() - started, notes)
    md, js = write(args.out_dir, info, sections, stem="results-access-cache")
    print(markdown(info, sections))
    print(f"\nwrote {md} and {js}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
