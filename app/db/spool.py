"""A local JSON-lines file for what could not be written when the process stopped.

Stats and new users wait in memory while the database is down; at shutdown whatever is still
unwritten goes here (`STATS_SPOOL_PATH`), and the next start takes it back into memory, from
where the usual background writers save it. Off the request path: used only at start and stop.
Each line is `{"kind": ..., "record": {...}}`; one file serves several kinds.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import orjson

_log = logging.getLogger(__name__)


class Spool:
    def __init__(self, path: str | Path, logger: logging.Logger = _log) -> None:
        self.path = Path(path)
        self._logger = logger

    def put(self, kind: str, records: list[dict[str, Any]]) -> bool:
        """Append `records`; False (and one ERROR line) when the file cannot be written."""
        if not records:
            return True
        lines = b"".join(orjson.dumps({"kind": kind, "record": r}) + b"\n" for r in records)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("ab") as file:
                file.write(lines)
                file.flush()
                os.fsync(file.fileno())
        except OSError as exc:
            self._logger.error(
                "spool: cannot write %d %s records to %s (%s)",
                len(records),
                kind,
                self.path,
                type(exc).__name__,
            )
            return False
        self._logger.warning("spool: %d %s records kept in %s", len(records), kind, self.path)
        return True

    def take(self, kind: str) -> list[dict[str, Any]]:
        """Remove and return the records of `kind`; other kinds stay in the file."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            self._logger.error("spool: cannot read %s (%s)", self.path, type(exc).__name__)
            return []
        taken: list[dict[str, Any]] = []
        kept: list[bytes] = []
        for line in raw.splitlines():
            try:
                entry = orjson.loads(line)
                mine = entry.get("kind") == kind and isinstance(entry.get("record"), dict)
            except (orjson.JSONDecodeError, AttributeError):
                self._logger.warning("spool: unreadable line dropped from %s", self.path)
                continue
            if mine:
                taken.append(entry["record"])
            else:
                kept.append(line)
        self._rewrite(kept)
        if taken:
            self._logger.info(
                "spool: %d %s records taken back from %s", len(taken), kind, self.path
            )
        return taken

    def _rewrite(self, lines: list[bytes]) -> None:
        try:
            if not lines:
                self.path.unlink(missing_ok=True)
                return
            temporary = self.path.with_name(self.path.name + ".tmp")
            temporary.write_bytes(b"".join(line + b"\n" for line in lines))
            temporary.replace(self.path)
        except OSError as exc:
            self._logger.error("spool: cannot rewrite %s (%s)", self.path, type(exc).__name__)
