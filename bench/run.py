"""`make bench`: run every scenario against direct / passthrough / gateway and write results.

python -m bench.run [--quick]
    [--only latency,throughput,streaming,goodput,failover,redis,scheduling,access_cache,
            observability]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench import (
    access_cache,
    s1_latency,
    s2_throughput,
    s3_streaming,
    s4_goodput,
    s5_failover,
    s6_redis,
    s7_observability,
    s7_scheduling,
)
from bench.common import Ctx, Section, describe
from bench.procs import install_cleanup, pin_self_to_loadgen_core, stop_all
from bench.report import loadavg, markdown, meta, write
from bench.servers import fake_available, gateway_available
from bench.wrk import ensure_wrk, wrk_version

BENCH = Path(__file__).resolve().parent
SCENARIOS: dict[str, Callable[[Ctx], list[Section]]] = {
    "latency": s1_latency.run,
    "throughput": s2_throughput.run,
    "streaming": s3_streaming.run,
    "goodput": s4_goodput.run,
    "failover": s5_failover.run,
    "redis": s6_redis.run,
    "scheduling": s7_scheduling.run,
    "access_cache": access_cache.run,
    "observability": s7_observability.run,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter runs (development)")
    parser.add_argument(
        "--only", default="", help="comma-separated scenarios: " + ",".join(SCENARIOS)
    )
    parser.add_argument("--out-dir", type=Path, default=BENCH, help="where results.md/json go")
    parser.add_argument("--no-wrk", action="store_true", help="use the aiohttp closed loop")
    return parser.parse_args(argv)


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()] or list(SCENARIOS)
    unknown = [s for s in only if s not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s) {unknown}; choose from {list(SCENARIOS)}", file=sys.stderr)
        return 2
    install_cleanup()
    _raise_fd_limit()
    notes: list[str] = []
    load = loadavg()
    notes.append(
        f"1-min load average before the bench: {load:.2f}"
        + (
            " (the machine was busy: other processes share the cores, figures are noisy)"
            if load > 0.5
            else ""
        )
    )
    if not pin_self_to_loadgen_core():
        notes.append("fewer than 2 cores: no pinning, figures are not comparable")
    wrk_path = None if args.no_wrk else ensure_wrk()
    if wrk_path:
        load_tool = (
            f"closed loop: {wrk_version(wrk_path)} (-t1, Lua done() percentiles); "
            "sequential/open loop/streams: Python aiohttp on uvloop"
        )
    else:
        load_tool = (
            "closed loop: aiohttp generator (wrk NOT available: apt-get install wrk "
            "failed or --no-wrk); sequential/open loop/streams: Python aiohttp on uvloop"
        )
    for why in (fake_available(), gateway_available()):
        if why:
            notes.append(why)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    raw = args.out_dir / "results.raw" / "bench"
    shutil.rmtree(raw, ignore_errors=True)  # logs, configs and DBs of the previous run
    ctx = Ctx(quick=args.quick, raw_dir=raw, wrk_path=wrk_path, notes=notes)
    sections: list[Section] = []
    t0 = time.monotonic()
    try:
        for name in only:
            print(f"== {name} ...", flush=True)
            started = time.monotonic()
            try:
                got = SCENARIOS[name](ctx)
            except Exception as exc:
                traceback.print_exc()
                sec = Section(name, f"{name} (crashed)", "The scenario raised.", ["scenario"])
                sec.error_row(name, describe(exc))
                got = [sec]
            sections += got
            print(f"   {name} took {time.monotonic() - started:.0f} s", flush=True)
            write(args.out_dir, meta(args.quick, load_tool, time.monotonic() - t0, notes), sections)
    finally:
        stop_all()
    info = meta(args.quick, load_tool, time.monotonic() - t0, notes)
    md, js = write(args.out_dir, info, sections)
    print(markdown(info, sections))
    print(f"\nwrote {md} and {js}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
