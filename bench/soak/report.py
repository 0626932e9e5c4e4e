"""From a soak's raw figures to the report: invariants, a markdown table and JSON."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from bench.soak.faults import Fault
from bench.soak.traffic import Rec

DOCUMENTED_STATUSES = (429, 503)
SWITCH_LAG_S = 1.0


def percentile(values: Sequence[float], pct: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, math.ceil(pct / 100 * len(ordered)) - 1)
    return ordered[rank]


Windows = dict[str, tuple[float, float]]  # fault name → (on, off), seconds from the start


def windows(faults: Sequence[Fault], events: Sequence[dict[str, Any]], duration: float) -> Windows:
    """When each fault really was on: the harness's own on/off events. A step can run late
    (the gateway restart waits for its drain and start, and delays the steps after it on a busy
    machine), so the planned times alone would misjudge requests near a late `off`."""
    found = {f.name: f.window(duration) for f in faults}
    for event in events:
        start, end = found[event["fault"]]
        found[event["fault"]] = (event["at_s"], end) if event["on"] else (start, event["at_s"])
    return found


def _overlaps(rec: Rec, start: float, end: float) -> bool:
    return rec.started <= end and rec.started + rec.seconds >= start


def no_healthy_key(rec: Rec, faults: Sequence[Fault], seen: Windows) -> bool:
    """The request's target had no usable key while it ran: Path B to a provider that was down
    (plus the grace its keys need to be probed back)."""
    for fault in faults:
        if fault.provider is None or fault.grace_s == 0 or rec.target != fault.provider:
            continue
        start, end = seen[fault.name]
        if _overlaps(rec, start, end + fault.grace_s):
            return True
    return False


def cut_expected(rec: Rec, faults: Sequence[Fault], seen: Windows) -> bool:
    """A mid-stream failure while a key cut streams: streams fail over until their first token
    only, after it the client gets the documented error event."""
    for fault in faults:
        if fault.mode != "stream_cut" or rec.target not in ("A", fault.provider):
            continue
        start, end = seen[fault.name]
        # The event is stamped when the switch is sent: it reaches the fake a moment later.
        if _overlaps(rec, start, end + SWITCH_LAG_S):
            return True
    return False


def in_faults(rec: Rec, seen: Windows) -> bool:
    return any(_overlaps(rec, *window) for window in seen.values())


def judge(rec: Rec, faults: Sequence[Fault], seen: Windows) -> str:
    """ok | expected (documented, no healthy key or a mid-stream cut) | violation."""
    if rec.outcome == "ok":
        return "ok"
    if rec.outcome == "interrupted":
        return "expected" if cut_expected(rec, faults, seen) else "violation"
    documented = rec.outcome == "envelope" and rec.status in DOCUMENTED_STATUSES
    if documented and no_healthy_key(rec, faults, seen):
        return "expected"
    return "violation"


def compare_stats(
    upstream: dict[str, dict[str, Any]], stored: dict[str, dict[str, int]]
) -> list[dict[str, Any]]:
    """Per key: chat requests and 429s the fake provider counted vs the rows the gateways
    wrote (api_key_stats)."""
    rows = []
    for provider, stats in sorted(upstream.items()):
        for key, counters in sorted(stats["keys"].items()):
            mine = stored.get(key, {"requests": 0, "429": 0, "errors": 0})
            rows.append(
                {
                    "key": key,
                    "provider": provider,
                    "upstream_requests": int(counters["requests"]),
                    "stored_requests": mine["requests"],
                    "upstream_429": int(counters["status"].get("429", 0)),
                    "stored_429": mine["429"],
                }
            )
    return rows


def summarise(raw: dict[str, Any]) -> dict[str, Any]:
    records: list[Rec] = raw["records"]
    faults: list[Fault] = raw["faults"]
    duration: float = raw["duration_s"]
    seen = windows(faults, raw["events"], duration)
    verdicts = Counter(judge(r, faults, seen) for r in records)
    violations = [asdict(r) for r in records if judge(r, faults, seen) == "violation"]
    errors = Counter(
        f"{r.status} {r.error_type}" for r in records if r.outcome in ("envelope", "other")
    )
    by_kind = Counter(f"{r.kind}/{r.target}" for r in records)
    faulty = [r.seconds for r in records if in_faults(r, seen) and r.outcome == "ok"]
    calm = [r.seconds for r in records if not in_faults(r, seen) and r.outcome == "ok"]
    stats = compare_stats(raw["upstream"], raw["stored"])
    lost = sum(r["upstream_requests"] - r["stored_requests"] for r in stats)
    mismatched = [r for r in stats if r["upstream_requests"] != r["stored_requests"]]
    in_flight = sum(s["in_flight"] + s["streams_open"] for s in raw["upstream"].values())
    samples = {
        phase: {str(i): asdict(s) for i, s in per.items()} for phase, per in raw["samples"].items()
    }
    fd_growth = max(
        (samples["end"][i]["fds"] - samples["start"][i]["fds"] for i in samples["end"]),
        default=0,
    )
    summary = {
        "duration_s": duration,
        "rate_per_s": raw["rate"],
        "requests_sent": len(records),
        "requests_by_kind": dict(sorted(by_kind.items())),
        "ok": verdicts["ok"],
        "expected_errors": verdicts["expected"],
        "violations": verdicts["violation"],
        "interrupted_streams": sum(r.outcome == "interrupted" for r in records),
        "errors_by_status_type": dict(sorted(errors.items())),
        "p50_ms_calm": round(percentile(calm, 50) * 1000, 1),
        "p99_ms_calm": round(percentile(calm, 99) * 1000, 1),
        "p99_ms_during_faults": round(percentile(faulty, 99) * 1000, 1),
        "upstream_requests": sum(r["upstream_requests"] for r in stats),
        "stored_requests": sum(r["stored_requests"] for r in stats),
        "stats_lost": lost,
        "stats_per_key": stats,
        "upstream_in_flight_after_drain": in_flight,
        "upstream_connections_open_after_stop": raw["left_open"],
        "gateway_samples": samples,
        "fd_growth": fd_growth,
        "gateway_tracebacks": raw["tracebacks"],
        "fault_events": raw["events"],
        "notes": raw["notes"],
        "violation_examples": violations[:10],
    }
    summary["invariants"] = invariants(summary, mismatched)
    summary["passed"] = all(summary["invariants"].values())
    return summary


def invariants(summary: dict[str, Any], mismatched: list[dict[str, Any]]) -> dict[str, bool]:
    expected = summary["duration_s"] * summary["rate_per_s"]
    return {
        "load generator kept its rate (>= 80%)": summary["requests_sent"] >= 0.8 * expected,
        "no client error while a healthy key existed; the rest documented": (
            summary["violations"] == 0
        ),
        "stats rows equal the fake providers' counts, per key": not mismatched,
        "nothing in flight upstream after the drain": summary["upstream_in_flight_after_drain"]
        == 0,
        "no upstream connection left open after stop": (
            summary["upstream_connections_open_after_stop"] == 0
        ),
        "open fds did not grow by more than 64": summary["fd_growth"] <= 64,
        "no traceback in the gateways' logs": summary["gateway_tracebacks"] == 0,
        "the restart with the database down spooled, and the next start took the spool": bool(
            summary["notes"].get("spooled_lines_at_restart")
        )
        and not summary["notes"].get("spool_left_after_restart"),
    }


def markdown(summary: dict[str, Any]) -> str:
    s = summary
    samples = s["gateway_samples"]
    lines = [
        f"# Soak: {s['duration_s']:.0f} s at {s['rate_per_s']:g} requests/s",
        "",
        "| figure | value |",
        "|---|---|",
        f"| requests sent | {s['requests_sent']} |",
        f"| by kind / target | {_inline(s['requests_by_kind'])} |",
        f"| answered ok | {s['ok']} |",
        f"| client errors while a healthy key existed (violations) | {s['violations']} |",
        f"| documented errors (no healthy key, or mid-stream cut) | {s['expected_errors']} |",
        f"| of which mid-stream interruptions | {s['interrupted_streams']} |",
        f"| errors by status and type | {_inline(s['errors_by_status_type'])} |",
        f"| upstream chat requests (fake providers' counters) | {s['upstream_requests']} |",
        f"| stats rows' requests (PostgreSQL) | {s['stored_requests']} |",
        f"| lost | {s['stats_lost']} |",
        f"| users stored | {s['notes'].get('users_stored')} |",
        f"| spool lines written at the restart (database down) | "
        f"{s['notes'].get('spooled_lines_at_restart')} |",
        f"| p50 / p99 outside faults | {s['p50_ms_calm']} / {s['p99_ms_calm']} ms |",
        f"| p99 during faults | {s['p99_ms_during_faults']} ms |",
        f"| upstream in flight after drain | {s['upstream_in_flight_after_drain']} |",
        f"| upstream connections open after stop | {s['upstream_connections_open_after_stop']} |",
    ]
    for instance in sorted(samples["end"]):
        a, b = samples["start"].get(instance), samples["end"][instance]
        if a:
            lines.append(
                f"| gateway {instance} RSS start → end | {a['rss_mb']} → {b['rss_mb']} MB |"
            )
            lines.append(f"| gateway {instance} open fds start → end | {a['fds']} → {b['fds']} |")
    lines.append(f"| tracebacks in gateway logs | {s['gateway_tracebacks']} |")
    lines += ["", "| invariant | holds |", "|---|---|"]
    lines += [f"| {name} | {'yes' if ok else '**NO**'} |" for name, ok in s["invariants"].items()]
    lines += ["", "Fault schedule (seconds from the start):", ""]
    lines += [f"- {e['at_s']:>6.1f} s {'on ' if e['on'] else 'off'} {e['fault']}" for e in
              s["fault_events"]]  # fmt: skip
    return "\n".join(lines) + "\n"


def _inline(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in counts.items()) or "none"
