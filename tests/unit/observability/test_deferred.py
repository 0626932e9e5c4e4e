"""The observability batch: records wait for one timer where keypool writes its own log lines,
run at once elsewhere, and a reader's flush makes every answered request count."""

from __future__ import annotations

import asyncio
import logging

import pytest

from app.observability import deferred as deferred_module
from app.observability.deferred import Deferred
from app.observability.requestlog import request_log


@pytest.fixture
def direct(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(request_log, "direct", lambda: True)


async def test_calls_wait_for_the_batch_and_run_once_in_order(direct: None) -> None:
    batch = Deferred(delay_s=60)
    seen: list[int] = []
    for i in range(3):
        batch.call(seen.append, i)
    assert seen == []  # nothing recorded while requests are being answered
    batch.flush()
    assert seen == [0, 1, 2]
    batch.flush()
    assert seen == [0, 1, 2]
    assert batch.batches == 1


async def test_the_timer_runs_the_batch(direct: None) -> None:
    batch = Deferred(delay_s=0)
    done = asyncio.Event()
    batch.call(lambda: done.set())
    await asyncio.wait_for(done.wait(), 5)


async def test_a_full_batch_runs_at_once(direct: None) -> None:
    batch = Deferred(delay_s=60, max_pending=4)
    seen: list[int] = []
    for i in range(4):
        batch.call(seen.append, i)
    assert seen == [0, 1, 2, 3]


async def test_batches_that_fill_up_share_the_one_due_timer(direct: None) -> None:
    batch = Deferred(delay_s=60, max_pending=2)
    seen: list[int] = []
    batch.call(seen.append, 0)
    timer = batch._timer
    assert timer is not None
    for i in range(1, 5):  # two full batches, and one call left waiting
        batch.call(seen.append, i)
    assert seen == [0, 1, 2, 3]
    assert batch._timer is timer  # not one timer per batch
    timer.cancel()
    batch._due()  # what the timer does when it fires: the waiting call runs
    assert seen == [0, 1, 2, 3, 4]
    assert batch._timer is None
    batch.call(seen.append, 5)
    assert batch._timer is not None  # the next call arms a fresh timer
    batch._timer.cancel()


async def test_a_call_made_while_the_batch_runs_joins_it(direct: None) -> None:
    batch = Deferred(delay_s=60)
    seen: list[str] = []
    batch.call(lambda: batch.call(seen.append, "inner"))
    batch.flush()
    assert seen == ["inner"]


async def test_a_failing_record_is_logged_and_the_rest_still_run(
    direct: None, caplog: pytest.LogCaptureFixture
) -> None:
    batch = Deferred(delay_s=60)
    seen: list[int] = []

    def broken() -> None:
        raise RuntimeError("secret-looking text")

    batch.call(broken)
    batch.call(seen.append, 1)
    with caplog.at_level(logging.ERROR, logger=deferred_module.logger.name):
        batch.flush()
    assert seen == [1]
    assert "RuntimeError" in caplog.text
    assert "secret-looking" not in caplog.text


async def test_under_another_logging_setup_calls_run_at_once() -> None:
    batch = Deferred(delay_s=60)  # pytest's log capture: request_log is not direct
    seen: list[int] = []
    batch.call(seen.append, 1)
    assert seen == [1]


def test_without_an_event_loop_calls_run_at_once(direct: None) -> None:
    batch = Deferred(delay_s=60)
    seen: list[int] = []
    batch.call(seen.append, 1)
    assert seen == [1]


async def test_after_runs_once_after_each_batch_and_each_call_run_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[str] = []
    batch = Deferred(delay_s=60, after=lambda: seen.append("after"))
    monkeypatch.setattr(request_log, "direct", lambda: True)
    for i in range(3):
        batch.call(seen.append, str(i))
    batch.flush()
    assert seen == ["0", "1", "2", "after"]  # metrics fold once per batch, after it
    monkeypatch.setattr(request_log, "direct", lambda: False)
    batch.call(seen.append, "now")
    assert seen[-2:] == ["now", "after"]
