"""`make soak`: python -m bench.soak [--duration 600] [--rate 10] [--out bench/soak-results]."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from bench.procs import REPO
from bench.soak.report import markdown, summarise
from bench.soak.run import soak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds (default 600)")
    parser.add_argument("--rate", type=float, default=10.0, help="requests per second")
    parser.add_argument(
        "--out", type=Path, default=REPO / "bench" / "soak-results", help="writes .json and .md"
    )
    args = parser.parse_args(argv)
    summary = summarise(asyncio.run(soak(args.duration, args.rate)))
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    report = markdown(summary)
    args.out.with_suffix(".md").write_text(report)
    print(report)
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
