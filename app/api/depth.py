"""Refuse JSON nested deeper than any chat request needs, before it reaches validation.

orjson reads up to 1,024 levels but writes only 254: a body nested in between parses, is
relayed (/v1 keeps extra fields) or echoed (a websocket `id`), then fails to serialise as a 500.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# Content parts, tool schemas and response formats nest a dozen levels; 64 leaves room.
MAX_JSON_DEPTH = 64


def too_deep(raw: bytes | str, data: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether `data` (parsed from `raw`) nests containers more than `limit` levels deep."""
    opened = (
        raw.count(b"[") + raw.count(b"{")
        if isinstance(raw, bytes)
        else raw.count("[") + raw.count("{")
    )
    if opened <= limit:
        return False  # cannot nest deeper than it has brackets: the common case costs two scans
    level: list[tuple[Any, int]] = [(data, 1)]
    while level:
        node, depth = level.pop()
        children: Iterable[Any]
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        level.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False
