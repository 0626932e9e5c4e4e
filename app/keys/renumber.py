"""Key indices across layout changes: which index a key granted under an older layout has now.

A provider's key list can change while requests are in flight (a vault key added or deleted;
indices are positions, so a deletion moves the later keys down). Every change is one
generation; an attempt remembers the generation it was granted in, and its index is followed
through the changes since before it touches any state, so it never lands on another key.
"""

from __future__ import annotations

from collections.abc import Sequence


def follow(index: int, moved_from: Sequence[int | None]) -> int | None:
    """The new index of the key that was at `index` (None: it left the list)."""
    for new, old in enumerate(moved_from):
        if old == index:
            return new
    return None


class Renumbering:
    """The layout changes of every provider, in order; generation 0 is the starting layout."""

    def __init__(self) -> None:
        self._changes: dict[str, list[tuple[int | None, ...]]] = {}

    def generation(self, provider: str) -> int:
        return len(self._changes.get(provider, ()))

    def record(self, provider: str, moved_from: Sequence[int | None]) -> int:
        """A new layout; returns its generation."""
        changes = self._changes.setdefault(provider, [])
        changes.append(tuple(moved_from))
        return len(changes)

    def translate(self, provider: str, index: int, generation: int) -> int | None:
        """`index` as granted in `generation`, in the current layout (None: the key is gone)."""
        current: int | None = index
        for moved_from in self._changes.get(provider, ())[generation:]:
            if current is None:
                return None
            current = follow(current, moved_from)
        return current
