"""Asking Redis one request ahead: the next first attempt's key, and Path A's next turn.

The rules of when a grant asked ahead may be handed out are in `spares.py` (pure); this is the
async side, for `DegradingStore`: it posts the asks down the instance's one Redis connection,
keeps what comes back, lets a request that arrives while an ask is on its way wait for that
answer (one request per ask: keys are handed out in the order Redis chose them), and hands
back what may be stale. What it needs of the store's books, `Books`, is small: counting a grant
in and out, following a key list that changed, and learning that Redis is gone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from app.keys.model import Ask, Grant, Release
from app.state.redis import RedisStateStore
from app.state.spares import Spare, SpareGrants, ahead, keepable, news, teaches_limits


class Books(Protocol):
    """The degrading store's side: its grant counts, layouts and connection state."""

    def usable(self) -> bool:
        """Redis is up and the store is not closing."""
        ...

    def generation(self, provider: str) -> int: ...

    def follow(self, provider: str, index: int, generation: int) -> int | None: ...

    def asking(self, provider: str, delta: int) -> None:
        """An acquire left (+1) or was answered (-1): Redis may count it before its answer."""
        ...

    def granted(self, provider: str, index: int, at: float) -> None:
        """Count a grant asked at `at` as this instance's own."""
        ...

    def give_back(self, provider: str, index: int) -> None:
        """Hand a grant back unused (`Outcome.UNUSED`), uncounted."""
        ...

    def lost(self, exc: BaseException) -> None: ...


class Ahead:
    """One grant per unpaced provider and one Path A turn, asked a request ahead."""

    def __init__(
        self,
        shared: RedisStateStore,
        books: Books,
        ttl_s: float,
        clock: Callable[[], float],
        errors: tuple[type[BaseException], ...],
    ) -> None:
        self.shared = shared
        self.books = books
        self.clock = clock
        self.errors = errors  # what a lost Redis raises
        self.spares = SpareGrants(ttl_s)  # ttl 0: nothing is asked ahead
        self._asked: dict[str, asyncio.Future[None]] = {}  # per provider: its ask on its way
        self._joined: set[str] = set()  # providers whose ask on its way a request waits for
        self._turn: int | None = None  # a turn is a ticket: never stale
        self._turn_asked: asyncio.Future[None] | None = None
        self._turn_joined = False

    # Keys ------------------------------------------------------------------------------------

    def wanted(self, provider: str, ask: Ask, configured_pace: bool) -> bool:
        return self.books.usable() and self.spares.wanted(provider, ask, configured_pace)

    async def take(self, provider: str, ask: Ask) -> int | None:
        """The key of a grant made for this request ahead of it, or None (then `ask` after
        acquiring as usual). Either way the next one is asked for."""
        index = self._take(provider, ask)
        if index is None:
            index = await self._join(provider, ask)
        if index is not None:
            self.ask(provider, ask)
        return index

    def ask(self, provider: str, ask: Ask) -> None:
        """Ask Redis now for the key of the next request like `ask` (one ask at a time)."""
        spares = self.spares
        if not spares.should_ask(provider) or not self.books.usable():
            return
        generation, wanted = self.books.generation(provider), ahead(ask)
        spares.asking[provider] = wanted.preferred
        self.books.asking(provider, 1)
        asked_at, heard = self.clock(), spares.news[provider]
        done = self._asked[provider] = asyncio.get_running_loop().create_future()

        def answered(value: Grant | BaseException) -> None:
            try:
                keep(value)
            finally:
                if self._asked.get(provider) is done:
                    del self._asked[provider]
                done.set_result(None)

        def keep(value: Grant | BaseException) -> None:
            spares.asking.pop(provider, None)
            self.books.asking(provider, -1)
            if isinstance(value, BaseException):
                if isinstance(value, self.errors):
                    self.books.lost(value)
                return
            if value.index is None:
                return
            index = self.books.follow(provider, value.index, generation)
            if index is None:
                return  # its key left the list; the next heartbeat restates the counts
            self.books.granted(provider, index, asked_at)
            spare = Spare(index, wanted.preferred, asked_at, generation, heard)
            if (
                not keepable(value)
                or not spares.current(provider, spare)
                or not self.books.usable()
                or generation != self.books.generation(provider)
                or provider in spares.held
            ):
                self.books.give_back(provider, index)
                return
            spares.held[provider] = spare
            asyncio.get_running_loop().call_later(spares.ttl_s, self.expire)

        try:
            self.shared.post_acquire(provider, asked_at, wanted, answered)
        except self.errors as exc:
            answered(exc)

    def heard(self, done: Release) -> None:
        """A release of this instance: news of its provider makes the spares asked before it
        stale; limits learned end spares for the provider."""
        if news(done):
            if teaches_limits(done.signal):
                self.spares.paced.add(done.provider)
            self._give_back(self.spares.hear(done.provider))

    def switched(self, provider: str) -> None:
        """An admin switched one of the provider's keys here."""
        self._give_back(self.spares.hear(provider))

    def learned(self, provider: str) -> None:
        """The shared records show learned limits (another instance's answers taught them)."""
        self.spares.paced.add(provider)

    def drop(self, provider: str | None = None) -> None:
        """Hand back one provider's spare (its key list changes) or all (Redis lost, closing)."""
        self._give_back(self.spares.drop(provider))

    def expire(self) -> None:
        self._give_back(self.spares.expired(self.clock()))

    def _take(self, provider: str, ask: Ask) -> int | None:
        generation = self.books.generation(provider)
        index, stale = self.spares.take(provider, ask, generation, self.clock())
        if stale is not None:
            self._give_back([(provider, stale)])
        return index

    async def _join(self, provider: str, ask: Ask) -> int | None:
        """Wait for the ask already on its way rather than queue a second one behind it."""
        future = self._asked.get(provider)
        if future is None or provider in self._joined or not self.spares.joinable(provider, ask):
            return None
        self._joined.add(provider)
        try:
            await asyncio.shield(future)
        finally:
            self._joined.discard(provider)
        return self._take(provider, ask)

    def _give_back(self, spares: list[tuple[str, Spare]]) -> None:
        for provider, spare in spares:
            self.books.give_back(provider, spare.index)

    # Path A turns ----------------------------------------------------------------------------

    async def turn(self) -> int | None:
        """Path A's next rotation turn (1, 2, ...) taken ahead, or None (take it as usual,
        then `ask_turn`). The shared counter still hands every turn out once."""
        if not self.books.usable() or not self.spares.enabled:
            return None
        asked = self._turn_asked
        if self._turn is None and asked is not None and not self._turn_joined:
            self._turn_joined = True  # on its way, ahead of any new ask: one request waits
            try:
                await asyncio.shield(asked)
            finally:
                self._turn_joined = False
        turn, self._turn = self._turn, None
        if turn is not None:
            self.ask_turn()
        return turn

    def ask_turn(self) -> None:
        if (
            not self.spares.enabled
            or self._turn is not None
            or self._turn_asked is not None
            or not self.books.usable()
        ):
            return
        asked = self._turn_asked = asyncio.get_running_loop().create_future()

        def answered(value: object) -> None:
            self._turn_asked = None
            if isinstance(value, int) and self.books.usable():
                self._turn = value
            elif isinstance(value, self.errors):
                self.books.lost(value)
            asked.set_result(None)

        self.shared.post_turn(answered)
