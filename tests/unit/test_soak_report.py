"""The soak's judge: a client error counts as expected only while its target had no healthy key,
measured from when the harness really switched the fault, not when it planned to."""

from __future__ import annotations

from bench.soak.faults import schedule
from bench.soak.report import judge, windows
from bench.soak.traffic import Rec

DURATION = 60.0
FAULTS = schedule(DURATION)
BETA_DOWN = "provider beta down"


def beta_503(started: float) -> Rec:
    return Rec("rest", "beta", 2, started, 0.05, 503, "envelope", "all_keys_failed")


def test_a_late_off_keeps_the_outage_expected_until_it_really_ended() -> None:
    planned_end = windows(FAULTS, [], DURATION)[BETA_DOWN][1]
    grace = next(f.grace_s for f in FAULTS if f.name == BETA_DOWN)
    late_error = beta_503(planned_end + grace + 1.0)
    assert judge(late_error, FAULTS, windows(FAULTS, [], DURATION)) == "violation"
    # The gateway restart held the schedule: beta came back 14 s after its planned time.
    events = [
        {"at_s": 33.0, "fault": BETA_DOWN, "on": True},
        {"at_s": planned_end + 14.0, "fault": BETA_DOWN, "on": False},
    ]
    assert judge(late_error, FAULTS, windows(FAULTS, events, DURATION)) == "expected"


def test_errors_outside_every_window_stay_violations() -> None:
    events = [
        {"at_s": 33.0, "fault": BETA_DOWN, "on": True},
        {"at_s": 40.0, "fault": BETA_DOWN, "on": False},
    ]
    seen = windows(FAULTS, events, DURATION)
    grace = next(f.grace_s for f in FAULTS if f.name == BETA_DOWN)
    assert judge(beta_503(30.0), FAULTS, seen) == "violation"  # before the outage
    assert judge(beta_503(40.0 + grace + 0.5), FAULTS, seen) == "violation"  # after its grace
    assert judge(beta_503(40.0 + grace - 0.5), FAULTS, seen) == "expected"
    healthy_a = Rec("rest", "A", 1, 35.0, 0.05, 503, "envelope", "all_keys_failed")
    assert judge(healthy_a, FAULTS, seen) == "violation"  # Path A had alpha all along
