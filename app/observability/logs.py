"""Log setup (LOG_FORMAT=text|json), the request id every line carries, and change-once logging.

A request's id lives in a contextvar set by the edge middleware (api/edge.py), so any log line
written while serving it (and in tasks it starts) carries it without passing it around.
"""

from __future__ import annotations

import logging
import os
import random
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

from app.observability.requestlog import request_log

request_id_var: ContextVar[str | None] = ContextVar("keypool_request_id", default=None)

# LogRecord attributes that are not "extra" fields given by the caller.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
    "request_id",
    "color_message",  # uvicorn's ANSI-coloured twin of the message
}


class RequestIdFilter(logging.Filter):
    """Stamps `record.request_id` from the contextvar (None outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, then any extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        for name, value in vars(record).items():
            if name not in _STANDARD and not name.startswith("_"):
                entry[name] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["exc_type"] = record.exc_info[0].__name__  # the type only: text may hold payloads
        return orjson.dumps(entry, default=str).decode()


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def make_handler(log_format: str) -> logging.StreamHandler[Any]:
    handler: logging.StreamHandler[Any] = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    return handler


def configure(level: str, log_format: str = "text") -> None:
    """Install one root handler unless the host (pytest, an embedding app) already has one.

    Our formats never show the caller's file and line or the process id, so the logging module
    is told not to look them up (the documented optimisations: a stack walk and a getpid system
    call per record, on a line written per request)."""
    root = logging.getLogger()
    if root.handlers:
        return
    logging._srcfile = None
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = make_handler(log_format)
    root.addHandler(handler)
    root.setLevel(level.upper())
    request_log.install(handler, log_format)  # the request line skips `logging` (same shape)


ID_BLOCK = 64  # ids drawn at once: one PRNG call and one hex formatting for 64 requests
_ids: list[str] = []
os.register_at_fork(after_in_child=_ids.clear)  # a forked worker never reuses its parent's


def new_request_id() -> str:
    """32 hex digits. A correlation id, not a secret: the process's PRNG, no system call.

    Drawn ID_BLOCK at a time (one 8,192-bit draw cut into ids): per request that is a list pop
    instead of a 128-bit draw and its formatting, on a path every request takes."""
    ids = _ids
    if not ids:
        block = f"{random.getrandbits(128 * ID_BLOCK):0{32 * ID_BLOCK}x}"
        ids.extend([block[i : i + 32] for i in range(0, 32 * ID_BLOCK, 32)])
    return ids.pop()


class TransitionLog:
    """Logs a key's state change or a breaker transition once, however often it is reported.

    Pure dedupe state: `subject` (e.g. a key fingerprint or "breaker:<provider>") maps to the
    last state logged; a report of the same state again writes nothing.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("keypool.state")
        self._last: dict[str, str] = {}

    def log_transition(
        self, kind: str, subject: str, state: str, *, reason: str | None = None
    ) -> bool:
        """`kind` is "key" or "circuit"; returns whether a line was written."""
        previous = self._last.get(subject)
        if previous == state:
            return False
        self._last[subject] = state
        if previous is None and state in ("active", "closed"):
            return False  # the normal starting state is not news
        bad = state in ("failed", "open", "disabled")
        self.logger.log(
            logging.WARNING if bad else logging.INFO,
            "%s %s: %s -> %s%s",
            kind,
            subject,
            previous or "active" if kind == "key" else previous or "closed",
            state,
            f" ({reason})" if reason else "",
            extra={
                "event": f"{kind}_state",
                "subject": subject,
                "state": state,
                "previous": previous,
            },
        )
        return True


def utc_now_iso(clock: Any = time.time) -> str:
    return datetime.fromtimestamp(clock(), UTC).isoformat().replace("+00:00", "Z")
