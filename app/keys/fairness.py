"""Weighted fair waiting: who gets the next free key turn when several requests wait for one.

Start-time fair queuing (SFQ; the VTC scheduler for LLM serving is the same idea): a request of
user u with weight w gets the virtual start tag s = max(V, finish[u]) and finish[u] = s + cost/w;
each freed turn goes to the waiting request with the smallest s, and V becomes that s. A user
who bursts 100 requests stamps them 1/w apart, so another user arriving later slots in between
instead of waiting behind all of them; a user returning after idling starts at V, with no credit
saved up. Within one user, requests keep their arrival order. Anonymous requests share one queue.

Admission is decided at once: a request that cannot be served before its deadline, at the pool's
turn rate and its fair share of it, is refused (429 with Retry-After) rather than left to time
out. The wait estimate is the fluid one, O(1): the k-th request of a user whose weight is w out
of the waiting users' total W starts after about k·W/(w·rate) seconds, and never later than
everything waiting would take.

Every operation is O(log n) (a heap; cancelled entries are dropped lazily and compacted when
they are half the heap). Pure and single-threaded: the async gate that parks waiters on futures
lives with the caller and passes a turn on when a waiter is cancelled after it was chosen.
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass, field
from typing import Literal

ANONYMOUS = ""
MAX_PER_USER = 50  # Kubernetes APF's queue length: one user cannot fill the gateway's memory
TicketState = Literal["waiting", "admitted", "cancelled", "expired"]


@dataclass(eq=False, slots=True)
class Ticket:
    """One waiting request. `start` is its virtual start tag; smaller goes first."""

    user: str
    weight: float
    deadline: float
    start: float
    finish: float
    seq: int
    queue: str = field(repr=False, default=ANONYMOUS)
    state: TicketState = "waiting"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request may not wait, and when trying again makes sense."""

    reason: Literal["deadline", "user_queue_full", "standing_queue"]
    retry_after_s: float


class FairQueue:
    """Waiting requests in weighted fair order. `fair=False` is plain first-come, first-served."""

    def __init__(self, *, fair: bool = True, max_per_user: int = MAX_PER_USER) -> None:
        self.fair = fair
        self.max_per_user = max_per_user
        self.virtual_time = 0.0
        self._heap: list[tuple[float, int, Ticket]] = []
        self._idle: list[tuple[float, str]] = []  # (finish tag, queue) of queues now empty
        self._finish: dict[str, float] = {}  # per queue: the last finish tag handed out
        self._waiting: dict[str, int] = {}  # per queue: how many wait
        self._per_user: dict[str, int] = {}  # per user (the bound), equal to queues when fair
        self._weights: dict[str, float] = {}  # per waiting queue: its weight
        self._weight_sum = 0.0
        self._count = 0
        self._seq = itertools.count()

    def __len__(self) -> int:
        return self._count

    def waiting(self, user: str | None) -> int:
        """How many requests of this user's queue wait now."""
        return self._waiting.get(self._queue_of(user), 0)

    def sends_excess(self, user: str | None, holder: str | None = None) -> bool:
        """Whether this user's queue is what a standing queue should shed (longest queue drop):
        it already holds two requests or more, and at least as many per unit of weight as any
        other user waiting. A user below that is within its fair share of the line, however
        long others make it wait: a light user whose one request is still waiting when its next
        arrives is not the excess, the user sending a flood is.

        `holder` is the user whose request holds the turn (chosen, still booking its key): it
        is in the line too. Not counting it let a flood keep one request more in line than the
        bound allows, which the admitted median paid for (a turn, ~6 ms at 160 req/s).
        """
        name = user or ANONYMOUS
        counts = self._per_user  # per user even first come, first served: who sends the flood
        mine = counts.get(name, 0) + (name == holder)
        if mine < 2:
            return False
        load = mine / self._weights.get(name, 1.0)
        lone_holder = holder is not None and holder != name and holder not in counts
        if lone_holder and load < 1.0 / self._weights.get(holder or ANONYMOUS, 1.0):
            return False  # the holder's one request weighs more than this user's line
        return all(
            load >= (count + (other == holder)) / self._weights.get(other, 1.0)
            for other, count in counts.items()
            if other != name
        )

    def expected_wait(self, user: str | None, weight: float, turn_rate: float) -> float:
        """Seconds until a request enqueued now would get its turn (fluid estimate)."""
        if turn_rate <= 0:
            return math.inf
        queue, weight = self._queue_of(user), self._weight_of(weight)
        own_ahead = self._waiting.get(queue, 0)
        total = self._weight_sum + (0.0 if own_ahead else weight)
        share = weight / total
        return min((own_ahead + 1) / (share * turn_rate), (self._count + 1) / turn_rate)

    def enqueue(
        self,
        user: str | None,
        weight: float,
        deadline: float,
        now: float,
        turn_rate: float | None = None,
        cost: float = 1.0,
    ) -> Ticket | Refusal:
        """Queue a request, or refuse it at once when its deadline cannot be met.

        `turn_rate` is how many key turns per second the pool hands out now (None: unknown,
        only the per-user bound applies). `cost` lets heavier requests count for more turns.
        """
        name = user or ANONYMOUS
        wait = self.expected_wait(user, weight, turn_rate) if turn_rate is not None else 0.0
        if self._per_user.get(name, 0) >= self.max_per_user:
            return Refusal("user_queue_full", wait)
        if now + wait > deadline:
            return Refusal("deadline", wait)
        queue, weight = self._queue_of(user), self._weight_of(weight)
        start = max(self.virtual_time, self._finish.get(queue, 0.0))
        finish = start + cost / weight
        ticket = Ticket(name, weight, deadline, start, finish, next(self._seq), queue)
        self._finish[queue] = finish
        self._join(queue, weight)
        self._per_user[name] = self._per_user.get(name, 0) + 1
        heapq.heappush(self._heap, (start, ticket.seq, ticket))
        return ticket

    def next(self, now: float) -> Ticket | None:
        """The request that gets the turn that just freed up (expired ones are skipped)."""
        while self._heap:
            _, _, ticket = heapq.heappop(self._heap)
            if ticket.state != "waiting":
                continue
            if ticket.deadline < now:
                ticket.state = "expired"
                self._leave(ticket)
                continue
            ticket.state = "admitted"
            self.virtual_time = max(self.virtual_time, ticket.start)
            self._leave(ticket)
            self._forget_idle()
            return ticket
        return None

    def peek(self) -> Ticket | None:
        """The request `next` would choose (ignoring deadlines), without choosing it."""
        while self._heap and self._heap[0][2].state != "waiting":
            heapq.heappop(self._heap)
        return self._heap[0][2] if self._heap else None

    def cancel(self, ticket: Ticket) -> None:
        """The waiter gave up (deadline, disconnect). A no-op once it was chosen or dropped."""
        if ticket.state != "waiting":
            return
        ticket.state = "cancelled"
        self._leave(ticket)
        if self._finish.get(ticket.queue) == ticket.finish:
            self._finish[ticket.queue] = ticket.start  # the newest leaves: give the tag back
        if len(self._heap) > 32 and len(self._heap) > 2 * self._count:
            self._heap = [entry for entry in self._heap if entry[2].state == "waiting"]
            heapq.heapify(self._heap)

    def _queue_of(self, user: str | None) -> str:
        return (user or ANONYMOUS) if self.fair else ANONYMOUS

    def _weight_of(self, weight: float) -> float:
        return weight if self.fair and weight > 0 else 1.0

    def _join(self, queue: str, weight: float) -> None:
        self._weight_sum += weight - self._weights.get(queue, 0.0)
        self._weights[queue] = weight
        self._waiting[queue] = self._waiting.get(queue, 0) + 1
        self._count += 1

    def _leave(self, ticket: Ticket) -> None:
        self._count -= 1
        left = self._waiting[ticket.queue] - 1
        users_left = self._per_user[ticket.user] - 1
        if users_left:
            self._per_user[ticket.user] = users_left
        else:
            del self._per_user[ticket.user]
        if left:
            self._waiting[ticket.queue] = left
            return
        del self._waiting[ticket.queue]
        self._weight_sum -= self._weights.pop(ticket.queue)
        if self._weight_sum < 1e-9:
            self._weight_sum = 0.0  # no float drift once nobody waits
        finish = self._finish.get(ticket.queue, 0.0)
        if finish <= self.virtual_time:
            self._finish.pop(ticket.queue, None)  # an idle queue's tag no longer matters
        else:
            heapq.heappush(self._idle, (finish, ticket.queue))

    def _forget_idle(self) -> None:
        """Drop the tags of idle queues that V has passed, so memory follows the waiting users."""
        idle = self._idle
        while idle and idle[0][0] <= self.virtual_time:
            finish, queue = heapq.heappop(idle)
            if queue not in self._waiting and self._finish.get(queue) == finish:
                del self._finish[queue]
