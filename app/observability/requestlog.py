"""The per-request log line, written without the logging module's per-record machinery.

One line per chat request is the busiest log line by far. Through `logging` it costs a
LogRecord, the handler's lock, a filter, a formatter walking the record's attributes and a
flushed write (a system call) per request: tens of microseconds on a path that otherwise costs
a few hundred. When `logs.configure` installed keypool's own root handler (the deployed case),
the line is built here in one step, in exactly the shape that handler would give it, appended
to a buffer and written with one flushed write every FLUSH_S (or at once past MAX_PENDING lines,
and at exit). Anywhere else (pytest's
log capture, an embedding app's handlers) `RequestLog.emit` goes through `logging` as before,
so whoever configured logging still sees every line.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import time
from datetime import UTC, datetime
from typing import IO, Any

import orjson

REQUEST_LOGGER = "keypool.request"
HEAD = frozenset({"time", "level", "logger", "message"})  # an entry's keys before its fields
# A line waits at most FLUSH_S (a tail -f hardly notices) or MAX_PENDING lines. A write costs
# ~60 us on the bench host however short it is (measured inline: 1.3 us a line at 64-line
# writes, 0.5 us at ~125-line ones), so writes are few; past ~128 KB (~300 JSON lines) the
# buffer would take fresh pages (mmap) every time.
FLUSH_S = 0.2
MAX_PENDING = 256
logger = logging.getLogger(REQUEST_LOGGER)


class LineBuffer:
    """Lines appended now, written to `stream` `delay_s` later in one flushed write (at once
    outside an event loop), under the handler's lock so a line never interleaves another's.

    Lines are copied into one bytearray as they come, not kept as a list of bytes: a JSON line
    is ~400 bytes, and keeping dozens of them alive made every `orjson.dumps` take fresh memory
    (measured 3.9 us a line kept, 0.7 us copied)."""

    def __init__(self, stream: IO[str], lock: Any = None, delay_s: float = FLUSH_S) -> None:
        self.stream = stream
        self.lock = lock
        self.delay_s = delay_s
        self._data = bytearray()
        self._lines = 0  # lines in `_data`
        self.writes = 0  # flushed writes so far (tests: batching)

    def append(self, line: bytes) -> None:
        self._data += line
        self._lines += 1
        count = self._lines
        if count == 1:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (a thread, shutdown): write now
                self.flush()
                return
            if self.delay_s > 0:
                loop.call_later(self.delay_s, self.flush)
            else:
                loop.call_soon(self.flush)
        elif count >= MAX_PENDING:
            self.flush()  # the timer still fires, and finds little or nothing

    def flush(self) -> None:
        if not self._lines:
            return
        data = self._data
        self._lines = 0
        if self.lock is not None:
            self.lock.acquire()
        try:
            buffer = getattr(self.stream, "buffer", None)
            if buffer is not None:
                self.stream.flush()  # whatever the text layer holds goes first
                buffer.write(data)
                buffer.flush()
            else:
                self.stream.write(data.decode())
                self.stream.flush()
            self.writes += 1
        except (OSError, ValueError):  # a closed or broken stream: logging would not raise either
            pass
        finally:
            data.clear()
            if self.lock is not None:
                self.lock.release()


class _Clock:
    """Timestamps as keypool's formatters write them, the date part formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._iso = ""
        self._text = ""

    def _at(self, now: float) -> int:
        second = int(now)
        if second != self._second:
            self._second = second
            self._iso = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return second

    def iso(self, now: float) -> str:
        """`JsonFormatter`'s time: ISO 8601 UTC, microseconds unless zero, `Z`."""
        second = self._at(now)
        micros = int((now - second) * 1_000_000 + 0.5)  # round(), at a third of its cost
        if micros >= 1_000_000:  # rounds up into the next second, as datetime's does
            return self.iso(second + 1)
        if not micros:
            return f"{self._iso}Z"
        # six digits with their leading zeros by slicing: 0.2 us less than `:06d` formatting
        return f"{self._iso}.{str(micros + 1_000_000)[1:]}Z"

    def text(self, now: float) -> str:
        """`logging.Formatter`'s asctime: local time, milliseconds after a comma."""
        millis = int((now - self._at(now)) * 1000)
        return f"{self._text},{millis:03d}"


class RequestLog:
    """Writes the request line directly (`direct`) or through `logging` (everywhere else)."""

    def __init__(self) -> None:
        self.handler: logging.Handler | None = None
        self.json = False
        self.buffer: LineBuffer | None = None
        self._clock = _Clock()

    def install(
        self, handler: logging.StreamHandler[Any], log_format: str, delay_s: float = FLUSH_S
    ) -> None:
        """Called by `logs.configure` with the root handler it installed."""
        self.handler = handler
        self.json = log_format == "json"
        self.buffer = LineBuffer(handler.stream, handler.lock, delay_s)
        atexit.register(self.buffer.flush)

    def enabled(self) -> bool:
        return logger.isEnabledFor(logging.INFO)

    def direct(self) -> bool:
        """True while lines are written here rather than through `logging`."""
        return self._direct() is not None

    def flush(self) -> None:
        if self.buffer is not None:
            self.buffer.flush()

    def _direct(self) -> LineBuffer | None:
        """The buffer while keypool's handler is still the only one that would see the line."""
        buffer = self.buffer
        if buffer is None or logger.handlers:
            return None
        handlers = logging.root.handlers
        if len(handlers) != 1 or handlers[0] is not self.handler:
            return None
        return buffer

    def emit(self, entry: dict[str, Any]) -> None:
        """One INFO line of logger `keypool.request`.

        `entry` is the JSON line itself, built by the caller in one dict literal (a second
        dict merged in cost a third of the line): first the `HEAD` keys, `time` holding when
        the request ended as a UNIX timestamp (a batched line is written a little later),
        `level` "INFO", `logger` REQUEST_LOGGER and `message`; then the fields, `request_id`
        first. The caller checks `enabled()` first."""
        buffer = self._direct()
        if buffer is None:
            extra = {name: value for name, value in entry.items() if name not in HEAD}
            logger.info("%s", entry["message"], extra=extra)
            return
        if self.json:
            entry["time"] = self._clock.iso(entry["time"])
            if not entry.get("request_id"):
                del entry["request_id"]
            line = orjson.dumps(entry, default=str, option=orjson.OPT_APPEND_NEWLINE)
        else:
            text = self._clock.text(entry["time"])
            line = f"{text} INFO {REQUEST_LOGGER}: {entry['message']}\n".encode()
        buffer.append(line)


request_log = RequestLog()
