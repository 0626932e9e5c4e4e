"""The async fair gate: waiters wake in fair order, time out on their deadline, pass turns on."""

from __future__ import annotations

import asyncio

import pytest

from app.chat.fair_gate import FairGate
from app.keys.codel import StandingQueue
from app.keys.fairness import FairQueue, Refusal, Ticket


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def ticket_of(entry: Ticket | Refusal) -> Ticket:
    assert isinstance(entry, Ticket)
    return entry


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


class TestFairGate:
    async def test_turns_go_to_waiters_in_fair_order(self):
        gate = FairGate(FairQueue(), Clock())
        woken: list[str] = []

        async def waiter(user: str) -> None:
            ticket = ticket_of(gate.enter(user, 1.0, 2_000.0, None))
            assert await gate.wait(ticket)
            woken.append(user)

        tasks = [asyncio.create_task(waiter(u)) for u in ["bursty"] * 3 + ["polite"]]
        await settle()
        for _ in range(4):
            assert gate.turn_available() == 1
            await settle()
        await asyncio.gather(*tasks)
        assert woken == ["bursty", "polite", "bursty", "bursty"]

    async def test_hopeless_deadline_is_refused_without_waiting(self):
        gate = FairGate(FairQueue(), Clock())
        for _ in range(5):
            ticket_of(gate.enter("a", 1.0, 2_000.0, 1.0))
        refusal = gate.enter("a", 1.0, 1_002.0, 1.0)
        assert isinstance(refusal, Refusal)
        assert refusal.retry_after_s == pytest.approx(6.0)

    async def test_a_deadline_ends_the_wait(self):
        clock = Clock()
        gate = FairGate(FairQueue(), clock)
        ticket = ticket_of(gate.enter("a", 1.0, clock.now + 0.01, None))
        assert await gate.wait(ticket) is False
        assert len(gate) == 0
        assert gate.turn_available() == 0

    async def test_a_cancelled_chosen_waiter_passes_its_turn_on(self):
        gate = FairGate(FairQueue(), Clock())
        first = ticket_of(gate.enter("a", 1.0, 2_000.0, None))
        second = ticket_of(gate.enter("b", 1.0, 2_000.0, None))
        waiting_first = asyncio.create_task(gate.wait(first))
        waiting_second = asyncio.create_task(gate.wait(second))
        await settle()
        waiting_first.cancel()  # the client of "a" leaves...
        assert gate.turn_available() == 1  # ...just as "a" is chosen, before it could run
        with pytest.raises(asyncio.CancelledError):
            await waiting_first
        assert await asyncio.wait_for(waiting_second, 1.0) is True

    async def test_a_waiter_cancelled_while_queued_leaves_the_queue(self):
        gate = FairGate(FairQueue(), Clock())
        ticket = ticket_of(gate.enter("a", 1.0, 2_000.0, None))
        task = asyncio.create_task(gate.wait(ticket))
        await settle()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert len(gate) == 0
        assert gate.turn_available() == 0

    async def test_a_standing_queue_sheds_the_excess_early(self):
        clock = Clock()
        gate = FairGate(FairQueue(), clock, StandingQueue(target_s=0.5, interval_s=5.0))
        tickets = [ticket_of(gate.enter("bulk", 1.0, clock.now + 60, 1.0)) for i in range(20)]
        waits = [asyncio.create_task(gate.wait(t)) for t in tickets]
        await settle()
        for _ in range(7):  # one turn a second, each after a wait of seconds; more keep coming
            clock.now += 1.0
            gate.turn_available()
            more = gate.enter("bulk", 1.0, clock.now + 60, 1.0)
            if isinstance(more, Ticket):
                tickets.append(more)
                waits.append(asyncio.create_task(gate.wait(more)))
        refusal = gate.enter("bulk", 1.0, clock.now + 60, 1.0)
        assert isinstance(refusal, Refusal)
        assert refusal.reason == "standing_queue"
        assert refusal.retry_after_s >= 1
        # A user with nothing waiting is not the excess: it gets its fair share, not a 429.
        other = ticket_of(gate.enter("newcomer", 1.0, clock.now + 60, 1.0))
        tickets.append(other)
        waits.append(asyncio.create_task(gate.wait(other)))
        await settle()
        gate.turn_available(len(tickets))
        assert all(await asyncio.gather(*waits))
        assert isinstance(gate.enter("later", 1.0, clock.now + 60, 1.0), Ticket)  # drained


class TestStandingQueueVictims:
    async def test_a_light_user_with_one_request_waiting_is_not_shed_beside_a_flood(self):
        clock = Clock()
        gate = FairGate(FairQueue(), clock, StandingQueue())
        rate, far = 20.0, clock.now + 30
        waiting = [ticket_of(gate.enter("heavy", 1.0, far, rate)) for _ in range(4)]
        waiting += [ticket_of(gate.enter(f"light{i}", 1.0, far, rate)) for i in range(3)]
        tasks = [asyncio.create_task(gate.wait(t)) for t in waiting]
        await settle()
        for _ in range(20):  # each turn waited longer than the one before: a queue stands
            clock.now += 0.05  # ... and the flood keeps coming, a request between two turns
            if _ % 2:
                gate.turn_available()
            more = gate.enter("heavy", 1.0, far, rate)
            if isinstance(more, Ticket):
                tasks.append(asyncio.create_task(gate.wait(more)))
        await settle()
        shed = gate.enter("heavy", 1.0, far, rate, ahead_s=0.05)
        assert isinstance(shed, Refusal)
        assert shed.reason == "standing_queue"
        light = gate.enter("light2", 1.0, far, rate, ahead_s=0.05)  # its first still waits
        assert isinstance(light, Ticket)
        tasks.append(asyncio.create_task(gate.wait(light)))
        await settle()
        gate.turn_available(len(tasks))
        assert all(await asyncio.gather(*tasks))

    async def test_a_flood_keeps_no_more_than_one_request_behind_the_one_holding_the_turn(self):
        clock = Clock()
        standing = StandingQueue()
        gate = FairGate(FairQueue(), clock, standing)
        for step in range(40):  # turns that waited longer and longer: a queue stands
            standing.admit(step * 0.005, clock.now + step * 0.01)  # and demand still arrives
            standing.observe(step * 0.005, clock.now + step * 0.01)
        clock.now += 0.4
        rate, far = 160.0, clock.now + 30
        first = ticket_of(gate.enter(None, 1.0, far, rate, ahead_s=0.008))
        gate.start()  # it holds the turn now, booking its key
        assert gate.driving
        assert len(gate) == 0
        second = ticket_of(gate.enter(None, 1.0, far, rate, ahead_s=0.008))
        third = gate.enter(None, 1.0, far, rate, ahead_s=0.008)
        assert isinstance(third, Refusal)  # it would wait three turns: beyond the bound
        assert third.reason == "standing_queue"
        assert await gate.wait(first)
        gate.done()
        assert await gate.wait(second)


class TestHoldingTheTurn:
    async def test_one_waiter_holds_the_turn_and_hands_it_on_in_weighted_order(self):
        gate = FairGate(FairQueue(), Clock())
        order: list[str] = []
        release = asyncio.Event()

        async def waiter(user: str, weight: float) -> None:
            ticket = ticket_of(gate.enter(user, weight, 2_000.0, None))
            gate.start()
            assert await gate.wait(ticket)
            assert gate.driving
            order.append(user)
            await release.wait()
            gate.done()

        tasks = [asyncio.create_task(waiter("free", 1.0)) for _ in range(3)]
        await settle()
        tasks += [asyncio.create_task(waiter("enterprise", 4.0)) for _ in range(2)]
        await settle()
        assert order == ["free"]  # the first holds the turn; nobody else runs meanwhile
        release.set()
        await asyncio.gather(*tasks)
        assert order == ["free", "enterprise", "enterprise", "free", "free"]
        assert not gate.driving  # the last one let go: the next arrival starts at once

    async def test_a_chosen_waiter_that_is_cancelled_passes_the_turn_on(self):
        gate = FairGate(FairQueue(), Clock())
        first = ticket_of(gate.enter("a", 1.0, 2_000.0, None))
        gate.start()
        assert await gate.wait(first)
        second = ticket_of(gate.enter("b", 1.0, 2_000.0, None))
        gate.start()  # a no-op: "a" holds the turn
        waiting = asyncio.create_task(gate.wait(second))
        await settle()
        gate.done()  # "b" is chosen...
        waiting.cancel()  # ...and goes away before it could run
        try:
            if await waiting:  # Python 3.11's wait_for may hand the turn over anyway
                gate.done()
        except asyncio.CancelledError:
            pass
        assert not gate.driving  # either way the turn is not lost
