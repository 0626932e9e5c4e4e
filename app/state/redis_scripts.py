"""The shared key state script: its Lua parts joined, with the pure modules' constants filled in."""

from __future__ import annotations

import functools
import re
from pathlib import Path

from app.keys import stall, transitions

LUA_DIR = Path(__file__).with_name("lua")
PARTS = ("state.lua", "keys.lua", "pool.lua")

# An instance whose heartbeat is older than this is gone: its in-flight requests stop counting
# and it no longer takes a share of the budgets.
INSTANCE_TTL_S = 10.0
# How long a half-open breaker's trial may stay out before another instance may try: the trial's
# owner may have crashed (in one process the trial always ends, through `release`).
TRIAL_LEASE_S = 300.0
# A provider's record expires after a week without a write (abandoned prefixes clean themselves).
RECORD_TTL_S = 7 * 24 * 3600

_PLACEHOLDER = re.compile(r"__[A-Z_]+__")


def constants() -> dict[str, float]:
    return {
        "TRIAL_HOLD_S": transitions.TRIAL_HOLD_S,
        "DEFAULT_COOLDOWN_S": transitions.DEFAULT_COOLDOWN_S,
        "MAX_DEFAULT_COOLDOWN_S": transitions.MAX_DEFAULT_COOLDOWN_S,
        "FAIL_AFTER_ERRORS": transitions.FAIL_AFTER_ERRORS,
        "LATENCY_EWMA_WEIGHT": transitions.LATENCY_EWMA_WEIGHT,
        "MIN_HEALTH": transitions.MIN_HEALTH,
        "STALL_FLOOR_S": stall.STALL_FLOOR_S,
        "STALL_FACTOR": stall.STALL_FACTOR,
        "INSTANCE_TTL_S": INSTANCE_TTL_S,
        "TRIAL_LEASE_S": TRIAL_LEASE_S,
        "RECORD_TTL_MS": RECORD_TTL_S * 1000,
    }


@functools.cache
def script_source() -> str:
    text = "\n".join((LUA_DIR / part).read_text(encoding="utf-8") for part in PARTS)
    for name, value in constants().items():
        text = text.replace(f"__{name}__", repr(value))
    left = _PLACEHOLDER.search(text)
    if left:
        raise RuntimeError(f"key state script: no value for {left.group()}")
    return text
