"""Render bench results as Markdown (results.md) and JSON (results.json)."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import Section
from bench.procs import LOADGEN_CORE, REPO, SERVER_CORE, pinning_available


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_head() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "no commit"


def loadavg() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


def meta(quick: bool, load_tool: str, elapsed_s: float, notes: list[str]) -> dict[str, Any]:
    pinning = (
        f"taskset: fake provider + load generators (wrk, Python) on core {LOADGEN_CORE}; "
        f"server under test (passthrough, gateway) on core {SERVER_CORE}"
        if pinning_available()
        else "no CPU pinning (taskset missing or < 2 cores)"
    )
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "git": _git_head(),
        "machine": f"{os.cpu_count()} cores, {_cpu_model()}, Linux {platform.release()}",
        "python": sys.version.split()[0],
        "mode": "quick" if quick else "full",
        "pinning": pinning,
        "load_tool": load_tool,
        "server": "uvicorn --loop uvloop --http httptools --no-access-log (1 worker)",
        "elapsed_s": round(elapsed_s, 1),
        "loadavg_1m_end": loadavg(),
        "notes": notes,
    }


_ABSENT = object()


def _cell(value: Any) -> str:
    if value is _ABSENT or value == "":
        return ""
    if value is None:
        return "-"
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(sec: Section) -> str:
    cols = list(sec.columns)
    if any("error" in row for row in sec.rows):
        cols.append("error")
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in sec.rows:
        lines.append("| " + " | ".join(_cell(row.get(c, _ABSENT)) for c in cols) + " |")
    return "\n".join(lines)


def goals(sections: list[Section]) -> str:
    lines = ["| scenario | row | goal | measured | holds? |", "|---|---|---|---|---|"]
    for sec in sections:
        first = sec.columns[0]
        for row in sec.rows:
            label = " ".join(str(row.get(c, "")) for c in (first, "conc", "load") if row.get(c))
            if row.get("goal"):
                lines.append(
                    f"| {sec.key} | {_cell(label)} | {_cell(row['goal'])} | "
                    f"{_cell(row.get('_measured', ''))} | {row.get('holds?', '')} |"
                )
            elif "error" in row and row.get("holds?", "") == "":
                lines.append(
                    f"| {sec.key} | {_cell(label)} | (error row) | "
                    f"{_cell(str(row['error'])[:120])} | **ERROR** |"
                )
    return "\n".join(lines)


def markdown(info: dict[str, Any], sections: list[Section]) -> str:
    out = [
        "# keypool benchmark results",
        "",
        f"- date: {info['date']} (git {info['git']}), mode: **{info['mode']}**, "
        f"took {info['elapsed_s']} s",
        f"- machine: {info['machine']}, Python {info['python']}, 1-min load average at the end: "
        f"{info['loadavg_1m_end']:.2f}",
        f"- **pinning**: {info['pinning']}",
        f"- load: {info['load_tool']}",
        f"- servers: {info['server']}",
        "- targets: **direct** = the fake provider itself (physical limit), **passthrough** = "
        "bench/passthrough.py (one aiohttp session, round-robin key, no logic), **gateway** = "
        "keypool (app.main:app)",
    ]
    out += [f"- note: {n}" for n in info["notes"]]
    out += ["", "## Goals", "", goals(sections), ""]
    for sec in sections:
        out += [f"## {sec.title}", "", sec.about, "", table(sec), ""]
        out += [f"- {n}" for n in sec.notes]
        if sec.notes:
            out.append("")
    return "\n".join(out)


def write(
    out_dir: Path, info: dict[str, Any], sections: list[Section], stem: str = "results"
) -> tuple[Path, Path]:
    md, js = out_dir / f"{stem}.md", out_dir / f"{stem}.json"
    md.write_text(markdown(info, sections))
    payload = {"meta": info, "sections": [dataclasses.asdict(s) for s in sections]}
    js.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    return md, js
