"""Weighted fair waiting: per-user FIFO, weighted shares, at-once refusal, cancellation."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.keys.fairness import ANONYMOUS, FairQueue, Refusal, Ticket

T0 = 1_000.0
FAR = T0 + 3_600


def admit(queue: FairQueue, n: int, now: float = T0) -> list[str]:
    order = []
    for _ in range(n):
        ticket = queue.next(now)
        assert ticket is not None
        order.append(ticket.user)
    return order


def enqueue(
    queue: FairQueue, user: str | None, weight: float = 1.0, deadline: float = FAR
) -> Ticket:
    ticket = queue.enqueue(user, weight, deadline, T0)
    assert isinstance(ticket, Ticket)
    return ticket


class TestOrder:
    def test_a_burst_does_not_starve_a_later_user(self):
        queue = FairQueue()
        for _ in range(20):
            enqueue(queue, "bursty")
        enqueue(queue, "polite")
        # the polite user's one request goes second, not 21st
        assert admit(queue, 2) == ["bursty", "polite"]

    def test_weights_set_the_shares(self):
        queue = FairQueue()
        for _ in range(30):
            enqueue(queue, "free", 1.0)
            enqueue(queue, "enterprise", 4.0)
        served = Counter(admit(queue, 25))
        assert served == {"enterprise": 20, "free": 5}

    def test_each_user_keeps_arrival_order(self):
        queue = FairQueue()
        tickets = [enqueue(queue, user) for user in ("a", "b", "a", "b", "a")]
        served = [queue.next(T0) for _ in tickets]
        assert [t.seq for t in served if t and t.user == "a"] == [0, 2, 4]

    def test_anonymous_requests_share_one_queue(self):
        queue = FairQueue()
        for _ in range(3):
            enqueue(queue, None)
        enqueue(queue, "named")
        assert admit(queue, 4) == [ANONYMOUS, "named", ANONYMOUS, ANONYMOUS]

    def test_a_returning_user_gets_no_saved_credit(self):
        queue = FairQueue()
        for _ in range(10):
            enqueue(queue, "steady")
        admit(queue, 5)
        for _ in range(5):
            enqueue(queue, "returning")
        # after idling, "returning" starts at the current virtual time and then alternates with
        # "steady" instead of taking its 5 turns in a row
        assert admit(queue, 6) == ["returning", "steady"] * 3

    def test_unfair_mode_is_first_come_first_served(self):
        queue = FairQueue(fair=False)
        for user in ["a"] * 5 + ["b"]:
            enqueue(queue, user, 4.0 if user == "b" else 1.0)
        assert admit(queue, 6) == ["a"] * 5 + ["b"]


class TestAdmission:
    def test_a_deadline_that_cannot_be_met_is_refused_at_once(self):
        queue = FairQueue()
        for _ in range(10):
            assert isinstance(queue.enqueue("a", 1.0, FAR, T0, turn_rate=1.0), Ticket)
        refusal = queue.enqueue("a", 1.0, T0 + 5, T0, turn_rate=1.0)
        assert isinstance(refusal, Refusal)
        assert refusal.reason == "deadline"
        assert refusal.retry_after_s == pytest.approx(11.0)

    def test_another_user_still_fits_thanks_to_its_share(self):
        queue = FairQueue()
        for _ in range(10):
            queue.enqueue("a", 1.0, FAR, T0, turn_rate=1.0)
        # b gets half the turns: its first turn comes after ~2 s, not after a's 10
        assert queue.expected_wait("b", 1.0, 1.0) == pytest.approx(2.0)
        assert isinstance(queue.enqueue("b", 1.0, T0 + 5, T0, turn_rate=1.0), Ticket)

    def test_an_empty_queue_waits_one_turn(self):
        assert FairQueue().expected_wait("a", 1.0, 4.0) == pytest.approx(0.25)
        assert FairQueue().expected_wait("a", 1.0, 0.0) == math.inf

    def test_per_user_bound(self):
        queue = FairQueue(max_per_user=2)
        enqueue(queue, "a")
        enqueue(queue, "a")
        refusal = queue.enqueue("a", 1.0, FAR, T0)
        assert isinstance(refusal, Refusal)
        assert refusal.reason == "user_queue_full"
        assert isinstance(queue.enqueue("b", 1.0, FAR, T0), Ticket)

    def test_unknown_turn_rate_admits(self):
        assert isinstance(FairQueue().enqueue("a", 1.0, T0, T0, turn_rate=None), Ticket)


class TestExcess:
    """Who a standing queue sheds: the user with the longest queue, never one within its share."""

    def test_the_flood_is_the_excess_not_the_user_with_one_waiting(self):
        queue = FairQueue()
        for user in ["heavy"] * 3 + [f"light{i}" for i in range(5)]:
            enqueue(queue, user)
        assert queue.sends_excess("heavy")
        assert not queue.sends_excess("light0")  # its next request is within its share
        assert not queue.sends_excess("newcomer")

    def test_a_lone_user_is_the_excess_from_two_waiting(self):
        queue = FairQueue()
        enqueue(queue, "solo")
        assert not queue.sends_excess("solo")
        enqueue(queue, "solo")
        assert queue.sends_excess("solo")

    def test_the_request_holding_the_turn_is_still_in_line(self):
        # A flood with one request booking its key and one waiting has two in line: its next
        # is the excess. A light user whose one request holds the turn is not.
        queue = FairQueue()
        enqueue(queue, "solo")
        assert queue.sends_excess("solo", holder="solo")
        assert not queue.sends_excess("light", holder="light")
        enqueue(queue, "light")
        assert not queue.sends_excess("light", holder="solo")

    def test_a_holder_with_more_in_line_is_the_longer_queue(self):
        queue = FairQueue()
        for user in ["heavy", "heavy", "other", "other"]:
            enqueue(queue, user)
        assert queue.sends_excess("other")
        assert not queue.sends_excess("other", holder="heavy")  # heavy has three in line
        assert queue.sends_excess("heavy", holder="heavy")

    def test_weight_counts(self):
        queue = FairQueue()
        for _ in range(3):
            enqueue(queue, "enterprise", weight=4.0)
        for _ in range(2):
            enqueue(queue, "free")
        assert queue.sends_excess("free")  # 2 per unit of weight against 0.75
        assert not queue.sends_excess("enterprise")

    def test_first_come_first_served_still_tells_users_apart(self):
        queue = FairQueue(fair=False)
        for user in ["heavy"] * 3 + ["light"]:
            enqueue(queue, user)
        assert queue.sends_excess("heavy")
        assert not queue.sends_excess("light")


class TestCancel:
    def test_cancelled_waiters_are_skipped_and_free_their_place(self):
        queue = FairQueue(max_per_user=1)
        first = enqueue(queue, "a")
        enqueue(queue, "b")
        queue.cancel(first)
        assert len(queue) == 1
        assert isinstance(queue.enqueue("a", 1.0, FAR, T0), Ticket)
        assert admit(queue, 2) == ["b", "a"]
        assert queue.next(T0) is None

    def test_cancel_after_admission_is_a_no_op(self):
        queue = FairQueue()
        ticket = enqueue(queue, "a")
        assert queue.next(T0) is ticket
        queue.cancel(ticket)
        assert (ticket.state, len(queue)) == ("admitted", 0)

    def test_expired_waiters_are_dropped(self):
        queue = FairQueue()
        late = enqueue(queue, "a", deadline=T0 + 1)
        enqueue(queue, "b")
        served = queue.next(T0 + 2)
        assert served is not None
        assert served.user == "b"
        assert late.state == "expired"
        assert len(queue) == 0

    def test_many_cancellations_keep_the_heap_small(self):
        queue = FairQueue()
        tickets = [enqueue(queue, f"u{i}") for i in range(200)]
        for ticket in tickets[:190]:
            queue.cancel(ticket)
        assert len(queue) == 10
        assert len(queue._heap) <= 40
        assert len(admit(queue, 10)) == 10


class TestMemory:
    def test_tags_of_idle_users_are_forgotten(self):
        queue = FairQueue()
        for i in range(100):
            enqueue(queue, f"u{i}")
            assert queue.next(T0) is not None
        for _ in range(3):  # virtual time moves past the idle users' tags
            enqueue(queue, "last")
        admit(queue, 3)
        assert set(queue._finish) <= {"last"}


ops = st.lists(
    st.one_of(
        st.tuples(st.just("enqueue"), st.sampled_from("abcd"), st.sampled_from([1.0, 2.0, 4.0])),
        st.tuples(st.just("next"), st.just(""), st.just(0.0)),
        st.tuples(st.just("cancel"), st.just(""), st.integers(0, 50).map(float)),
    ),
    max_size=120,
)


@settings(max_examples=300)
@given(ops)
def test_invariants_under_any_sequence(operations):
    """Counts stay exact, per-user order is kept, every ticket ends in one state, and each
    admission goes to the smallest start tag waiting."""
    queue = FairQueue()
    tickets: list[Ticket] = []
    served: dict[str, list[int]] = {}
    for op, user, value in operations:
        if op == "enqueue":
            tickets.append(enqueue(queue, user, value))
        elif op == "next":
            waiting = [t for t in tickets if t.state == "waiting"]
            ticket = queue.next(T0)
            assert (ticket is None) == (not waiting)
            if ticket is not None:
                assert ticket.start == min(t.start for t in waiting)
                served.setdefault(ticket.user, []).append(ticket.seq)
        elif tickets:
            queue.cancel(tickets[int(value) % len(tickets)])
        assert len(queue) == sum(t.state == "waiting" for t in tickets)
    for seqs in served.values():
        assert seqs == sorted(seqs)


@settings(max_examples=100)
@given(st.lists(st.sampled_from([1.0, 2.0, 4.0]), min_size=2, max_size=4), st.integers(20, 200))
def test_backlogged_users_get_turns_in_proportion_to_their_weights(weights, turns):
    queue = FairQueue(max_per_user=1_000)
    users = [f"u{i}" for i in range(len(weights))]
    for _ in range(turns):
        for user, weight in zip(users, weights, strict=True):
            enqueue(queue, user, weight)
    served = Counter(admit(queue, turns))
    # start-time fair queuing's bound for backlogged users i, j (unit costs):
    # |served_i / w_i - served_j / w_j| <= 1 / w_i + 1 / w_j
    for i, wi in zip(users, weights, strict=True):
        for j, wj in zip(users, weights, strict=True):
            assert abs(served[i] / wi - served[j] / wj) <= 1 / wi + 1 / wj + 1e-9
