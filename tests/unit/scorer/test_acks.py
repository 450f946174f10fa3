"""The scorer's acknowledger: a batch is acked only once delivered, in order, with back-pressure."""

from __future__ import annotations

import asyncio

from scorer.app import Acknowledger


class Stream:
    def __init__(self) -> None:
        self.acked: list[str] = []

    async def ack(self, event: str) -> bool:
        self.acked.append(event)
        return True


async def scenario() -> None:
    stream = Stream()
    delivered = [asyncio.Event() for _ in range(4)]
    seen: list[list[str]] = []
    acks = Acknowledger(stream, depth=2, on_acked=seen.append)
    task = asyncio.ensure_future(acks.run())
    await acks.put(["a1", "a2"], delivered[0].wait())
    await acks.put(["b1"], delivered[1].wait())
    await asyncio.sleep(0.01)
    assert stream.acked == []  # nothing delivered yet: nothing acked
    delivered[1].set()  # the second batch is in Kafka, the first is not: still nothing
    await asyncio.sleep(0.01)
    assert stream.acked == []
    await acks.put(["c1"], delivered[2].wait())  # a is being settled, b and c wait
    fourth = asyncio.ensure_future(acks.put(["d1"], delivered[3].wait()))
    await asyncio.sleep(0.01)
    assert not fourth.done()  # the queue is full: the scoring loop waits too
    delivered[0].set()
    await asyncio.sleep(0.01)
    assert stream.acked == ["a1", "a2", "b1"] and fourth.done()
    assert seen == [["a1", "a2"], ["b1"]]
    delivered[2].set()
    delivered[3].set()
    await asyncio.wait_for(acks.drain(), 1)
    assert stream.acked == ["a1", "a2", "b1", "c1", "d1"]
    task.cancel()


def test_batches_are_acked_once_delivered_in_order_with_back_pressure() -> None:
    asyncio.run(scenario())
