"""The async side of fair waiting: parks requests that wait for a key turn, wakes them fairly.

`app/keys/fairness.FairQueue` decides the order; this gate owns the futures. A request that
found no free key `enter`s (refused at once when its deadline cannot be met), then `wait`s.
Whoever makes a turn available (a lease released, a cooldown over, a reserved turn started)
calls `turn_available`, which wakes the next waiter in fair order. A waiter cancelled or timed
out after it was chosen passes its turn on, so no turn is lost (CPython gh-90155's lesson).
One gate per provider and event loop: no lock, the loop serialises every call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from app.keys.codel import StandingQueue
from app.keys.fairness import FairQueue, Refusal, Ticket


class FairGate:
    """Fair admission of waiters to one provider's key turns."""

    def __init__(
        self,
        queue: FairQueue,
        clock: Callable[[], float],
        standing: StandingQueue | None = None,
    ) -> None:
        self.queue = queue
        self.clock = clock
        self.standing = standing  # sheds the excess early once a queue stands (None: never)
        self._futures: dict[int, asyncio.Future[None]] = {}
        self._entered: dict[int, float] = {}
        # One waiter at a time holds the turn (it books the next key turn, then hands the turn
        # on with `done`); the others sleep on their futures, so the store is not polled by many.
        self.driving = False
        self._holder: str | None = None  # whose request holds the turn (the last one woken)

    def __len__(self) -> int:
        return len(self.queue)

    def enter(
        self,
        user: str | None,
        weight: float,
        deadline: float,
        turn_rate: float | None,
        ahead_s: float = 0.0,
    ) -> Ticket | Refusal:
        """Join the queue, or a Refusal (answer 429 with its `retry_after_s`) right away.
        `ahead_s`: how long until the pool's next key turn, before anyone in this line gets one
        (turns already booked)."""
        now = self.clock()
        # While a queue stands, only the user sending the excess is shed (the longest queue,
        # fairness.sends_excess): one within its fair share is served whatever others send.
        if self.standing is not None and turn_rate is not None:
            expected = ahead_s + self.queue.expected_wait(user, weight, turn_rate)
            excess = self.queue.sends_excess(user, self._holder if self.driving else None)
            shed = self.standing.admit(expected, now, excess=excess)
            if shed is not None:
                return Refusal("standing_queue", float(shed.retry_after_s))
        entry = self.queue.enqueue(user, weight, deadline, now, turn_rate)
        if isinstance(entry, Ticket):
            self._futures[entry.seq] = asyncio.get_running_loop().create_future()
            self._entered[entry.seq] = now
        return entry

    async def wait(self, ticket: Ticket) -> bool:
        """Wait for this ticket's turn; False when its deadline passed first."""
        future = self._futures[ticket.seq]
        try:
            timeout = max(0.0, ticket.deadline - self.clock())
            await asyncio.wait_for(asyncio.shield(future), timeout)
            return True
        except TimeoutError:
            if future.done():
                return True  # chosen just as the deadline hit: take the turn, not waste it
            self._leave(ticket, future)
            return False
        except asyncio.CancelledError:
            self._leave(ticket, future)
            raise
        finally:
            self._futures.pop(ticket.seq, None)
            self._entered.pop(ticket.seq, None)

    def turn_available(self, turns: int = 1) -> int:
        """Wake up to `turns` waiters, in fair order; returns how many were woken."""
        woken, now = 0, self.clock()
        while woken < turns:
            ticket = self.queue.next(now)
            if ticket is None:
                if self.standing is not None:
                    self.standing.idle()  # nobody waits: no queue stands
                break
            future = self._futures.get(ticket.seq)
            if future is None or future.done():
                continue  # its waiter is already gone: the turn goes to the next one
            future.set_result(None)
            self._holder = ticket.user
            if self.standing is not None:
                self.standing.observe(now - self._entered.get(ticket.seq, now), now)
            woken += 1
        return woken

    def start(self) -> None:
        """After `enter`: when nobody holds the turn, give it to the first waiter in fair order."""
        if not self.driving:
            self.driving = True
            if not self.turn_available():
                self.driving = False

    def done(self) -> None:
        """The holder of the turn (a `wait` that returned True) is through: hand it on."""
        if not self.turn_available():
            self.driving = False

    def _leave(self, ticket: Ticket, future: asyncio.Future[None]) -> None:
        """Leave the queue; a turn already handed to this waiter goes to the next one."""
        chosen = future.done() and not future.cancelled()
        self.queue.cancel(ticket)  # a no-op once chosen
        future.cancel()
        if chosen:
            self._futures.pop(ticket.seq, None)
            self.done()
