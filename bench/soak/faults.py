"""The fault schedule: what breaks when, as fractions of the run, so 60 s and 10 min match.

Every fault has an `on` and an `off` step. The fake providers' faults are key modes set through
their control API; the database, Redis and the gateway restart are driven by the harness.
The schedule keeps one healthy alpha key at every moment, and beta healthy except while it is
down: Path B to beta may fail only then (the documented 503/429 envelope).
"""

from __future__ import annotations

from dataclasses import dataclass

# After an outage ends, the gateway finds out by itself: the breaker half-opens after
# CIRCUIT_RESET_S (5 s in the soak) and failed keys are probed every PROBE_INTERVAL_S (2 s).
# Errors on the recovering provider are expected for that long (plus slack for a busy machine).
RECOVERY_S = 5.0 + 2 * 2.0 + 3.0
ALPHA_KEYS = ["alpha-k0", "alpha-k1", "alpha-k2", "alpha-k3"]
BETA_KEYS = ["beta-k0", "beta-k1", "beta-k2"]


@dataclass(frozen=True, slots=True)
class Fault:
    name: str
    start: float  # fraction of the run
    end: float
    provider: str | None = None  # a fake provider's fault: its keys get `mode` meanwhile
    keys: tuple[str, ...] = ()
    mode: str = ""
    extra: tuple[tuple[str, float], ...] = ()
    # Seconds after `end` during which the target may still have no healthy key (probes and
    # the breaker bring it back): errors on it are expected until then.
    grace_s: float = 0.0

    def window(self, duration: float) -> tuple[float, float]:
        return self.start * duration, self.end * duration


def schedule(duration: float) -> list[Fault]:
    """The faults of a run of `duration` seconds (the provider outage is 30 s at most)."""
    down = min(30.0, 0.15 * duration) / duration
    return [
        Fault("429 storm on alpha-k0", 0.10, 0.30, "alpha", ("alpha-k0",), "rate_limited",
              (("retry_after_s", 2.0),)),
        Fault("alpha-k1 answers 500", 0.15, 0.35, "alpha", ("alpha-k1",), "error_500"),
        Fault("beta-k1 resets connections", 0.20, 0.40, "beta", ("beta-k1",), "reset"),
        Fault("redis-server killed", 0.30, 0.38),
        Fault("alpha-k2 hangs", 0.35, 0.50, "alpha", ("alpha-k2",), "hang"),
        Fault("alpha-k3 cuts streams mid-way", 0.42, 0.55, "alpha", ("alpha-k3",), "stream_cut"),
        Fault("provider beta down", 0.55, 0.55 + down, "beta", tuple(BETA_KEYS), "reset",
              grace_s=RECOVERY_S),
        Fault("postgres killed", 0.62, 0.86),
        Fault("gateway 1 restarted (database down)", 0.68, 0.76),
    ]  # fmt: skip
