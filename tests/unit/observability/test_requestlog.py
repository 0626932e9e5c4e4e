"""The request line written directly: same shape as the logging handler's, one write per loop
iteration, and through `logging` whenever another handler is listening."""

from __future__ import annotations

import asyncio
import io
import logging
import re

import orjson
import pytest

from app.observability import record
from app.observability.hub import Observability
from app.observability.logs import JsonFormatter, make_handler
from app.observability.record import RequestInfo, finish_record
from app.observability.requestlog import MAX_PENDING, RequestLog, _Clock

FIELDS = {
    "request_id": "req-1",
    "route": "/api/chat",
    "path": "B",
    "provider": "fake",
    "model": "fake-small",
    "key": "fake:0:abcd12",
    "status": 200,
    "latency_ms": 1.25,
    "attempts": 1,
    "user": "ann",
}
MESSAGE = "POST /api/chat 200 1.2 ms id=req-1 provider=fake key=fake:0:abcd12 user=ann"
WHEN = 1_700_000_000.25


def entry(**fields: object) -> dict[str, object]:
    """A request line as `RequestLog.emit` takes it: the head keys, then FIELDS (+ `fields`)."""
    head = {"time": WHEN, "level": "INFO", "logger": "keypool.request", "message": MESSAGE}
    return {**head, **FIELDS, **fields}


class Output(io.TextIOWrapper):
    """A stderr stand-in that counts the writes reaching the bytes layer."""

    def __init__(self) -> None:
        self.raw_bytes = io.BytesIO()
        super().__init__(self.raw_bytes, encoding="utf-8")

    def text(self) -> str:
        self.flush()
        return self.raw_bytes.getvalue().decode()


def installed(
    monkeypatch: pytest.MonkeyPatch, log_format: str, delay_s: float = 0
) -> tuple[RequestLog, Output]:
    """A RequestLog whose handler is the only root handler, as `logs.configure` leaves it."""
    out = Output()
    handler = make_handler(log_format)
    handler.setStream(out)
    monkeypatch.setattr(logging.root, "handlers", [handler])
    monkeypatch.setattr(logging.root, "level", logging.INFO)
    log = RequestLog()
    log.install(handler, log_format, delay_s)  # 0: flush on the next loop iteration
    return log, out


async def test_a_json_line_has_the_handlers_shape(monkeypatch: pytest.MonkeyPatch):
    log, out = installed(monkeypatch, "json")
    log.emit(entry())
    await asyncio.sleep(0)  # one loop iteration: the flush is due
    [line] = out.text().splitlines()
    direct = orjson.loads(line)
    record = logging.LogRecord("keypool.request", logging.INFO, __file__, 1, MESSAGE, (), None)
    record.__dict__.update(FIELDS)
    via_logging = orjson.loads(JsonFormatter().format(record))
    assert list(direct) == list(via_logging)  # same keys, same order
    assert {k: v for k, v in direct.items() if k != "time"} == {
        k: v for k, v in via_logging.items() if k != "time"
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z", direct["time"])


async def test_a_text_line_has_the_handlers_shape(monkeypatch: pytest.MonkeyPatch):
    log, out = installed(monkeypatch, "text")
    log.emit(entry())
    await asyncio.sleep(0)
    [line] = out.text().splitlines()
    pattern = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO keypool\.request: " + re.escape(MESSAGE)
    assert re.fullmatch(pattern, line)


async def test_lines_of_one_loop_iteration_are_one_write(monkeypatch: pytest.MonkeyPatch):
    log, out = installed(monkeypatch, "json")
    for index in range(50):
        log.emit(entry(request_id=f"req-{index}"))
    assert out.text() == ""  # nothing written on the request path itself
    await asyncio.sleep(0)
    lines = out.text().splitlines()
    assert [orjson.loads(line)["request_id"] for line in lines] == [f"req-{i}" for i in range(50)]
    assert log.buffer is not None
    assert log.buffer.writes == 1


def test_outside_a_loop_the_line_is_written_at_once(monkeypatch: pytest.MonkeyPatch):
    log, out = installed(monkeypatch, "json")
    log.emit(entry())
    assert orjson.loads(out.text())["request_id"] == "req-1"


def test_another_handler_gets_the_line_through_logging(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    out = Output()
    handler = make_handler("json")
    handler.setStream(out)
    log = RequestLog()
    log.install(handler, "json")  # but pytest's capture handler is on the root too
    with caplog.at_level(logging.INFO, "keypool.request"):
        log.emit(entry())
    [record] = [r for r in caplog.records if r.name == "keypool.request"]
    assert record.getMessage() == MESSAGE
    assert record.__dict__["user"] == "ann"
    assert out.text() == ""


async def test_a_full_buffer_is_written_without_waiting_for_the_timer(
    monkeypatch: pytest.MonkeyPatch,
):
    log, out = installed(monkeypatch, "json", delay_s=3600)
    for index in range(MAX_PENDING - 1):
        log.emit(entry(request_id=f"req-{index}"))
    assert out.text() == ""  # the timer has an hour to go
    log.emit(entry())
    assert len(out.text().splitlines()) == MAX_PENDING


def _record_one(hub: Observability) -> None:
    info = RequestInfo("req-7")
    info.model = "fake-small"
    answer = [(b"content-type", b"application/json"), (b"x-keypool-provider", b"fake"),
              (b"x-keypool-key-index", b"0"), (b"x-keypool-path", b"B")]  # fmt: skip
    finish_record(hub, info, "/api/chat", "POST", [(b"x-user-id", b"ann")], None,
                  1.0, 1.01, 1.02, 1_700_000_000.25, 200, answer, True, False, b"")  # fmt: skip


async def test_a_recorded_request_line_is_the_same_written_directly_or_through_logging(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    hub = Observability([], None)
    log, out = installed(monkeypatch, "json")
    monkeypatch.setattr(record, "request_log", log)
    _record_one(hub)  # the deployed path: written here, not through logging
    hub.flush()
    await asyncio.sleep(0)
    direct = orjson.loads(out.text())
    monkeypatch.setattr(logging.root, "handlers", [*logging.root.handlers, caplog.handler])
    with caplog.at_level(logging.INFO, "keypool.request"):  # another handler: through logging
        _record_one(hub)
        hub.flush()
    [entry] = [r for r in caplog.records if r.name == "keypool.request"]
    via_logging = orjson.loads(JsonFormatter().format(entry))
    assert list(direct) == list(via_logging)  # same keys, same order
    assert {k: v for k, v in direct.items() if k != "time"} == {
        k: v for k, v in via_logging.items() if k != "time"
    }
    assert direct["message"] == "POST /api/chat 200"
    assert (direct["user"], direct["latency_ms"], direct["provider"]) == ("ann", 20.0, "fake")


@pytest.mark.parametrize(
    "when",
    [1_700_000_000.0, 1_700_000_000.000123, 1_700_000_000.5, 1_700_000_000.999_999_7, 86_399.01],
)
def test_the_direct_time_is_the_formatters_time(when: float):
    """Leading zeros of the microseconds, a whole second (no fraction), a fraction that rounds
    up to the next second (kept in its second, as the formatter's datetime does)."""
    record = logging.LogRecord("keypool.request", logging.INFO, __file__, 1, "m", (), None)
    record.created = when
    expected = orjson.loads(JsonFormatter().format(record))["time"]
    assert _Clock().iso(when) == expected
