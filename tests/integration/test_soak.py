"""The CI soak: 60 s of mixed traffic through two gateways while keys, a provider, a private
PostgreSQL and a private Redis fail on the schedule of `make soak` (bench/soak/faults.py).

It asserts the invariants, never latencies: the machine running `make test` may be busy.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest

from bench.soak.report import markdown, summarise
from bench.soak.run import soak
from bench.soak.services import postgres_bin

CI_DURATION_S = 60.0
CI_RATE = 6.0


def _require_binaries() -> None:
    missing = [
        name
        for name, found in (
            ("PostgreSQL (initdb, pg_ctl)", postgres_bin()),
            ("redis-server", shutil.which("redis-server")),
        )
        if found is None
    ]
    if not missing:
        return
    message = f"the soak needs {', '.join(missing)}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: a missing service is a failure)")
    pytest.skip(message)


@pytest.mark.long(70)
def test_a_minute_of_faults_loses_nothing_and_answers_every_client(tmp_path: Path) -> None:
    _require_binaries()
    summary = summarise(asyncio.run(soak(CI_DURATION_S, CI_RATE, tmp_path)))
    (tmp_path / "soak.json").write_text(json.dumps(summary, indent=1, default=str))
    report = markdown(summary)
    failed = [name for name, holds in summary["invariants"].items() if not holds]
    assert failed == [], f"{report}\nviolations: {summary['violation_examples']}"
    # What a user of the gateway would notice, spelled out:
    assert summary["violations"] == 0  # no client error while a healthy key existed
    assert summary["stats_lost"] == 0  # every upstream request counted, across the restart
    assert summary["stored_requests"] == summary["upstream_requests"] > 0
    assert summary["upstream_connections_open_after_stop"] == 0
