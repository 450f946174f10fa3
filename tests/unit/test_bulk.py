"""loanstream.bulk: batches taken from a stream's queue at once, with the stream's bookkeeping."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from faust.events import Event
from faust.types.tuples import ConsumerMessage, Message
from mode.utils.queues import FlowControlEvent, ThrowableQueue

from loanstream.bulk import bulk_take


class FlowControl:
    def __init__(self) -> None:
        self.active = True

    def is_active(self) -> bool:
        return self.active


class Stream:
    """What bulk_take uses of a Faust stream: its channel's queue, app state and sensors."""

    def __init__(self) -> None:
        self.should_stop = False
        queue = ThrowableQueue(flow_control=FlowControlEvent())  # a Faust channel's queue
        self.channel = type("Channel", (), {"queue": queue})()
        self.app: Any = type("App", (), {})()
        self.app.flow_control = FlowControl()
        self.app.consumer_generation_id = 7
        self.app.topics = type("Topics", (), {"acking_topics": {"apps"}})()
        self.app.consumer = type("Consumer", (), {"unacked": set()})()
        self.came_in: list[int] = []
        self.sensed: list[int] = []

    def _on_message_in(self, tp: Any, offset: int, message: Message) -> None:
        self.came_in.append(offset)

    def _on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        self.sensed.append(offset)

    def put(self, *offsets: int, generation: int = 7) -> list[Event]:
        events = [event(self.app, offset, generation) for offset in offsets]
        for e in events:
            self.channel.queue.put_nowait(e)
        return events


def event(app: Any, offset: int, generation: int) -> Event:
    message = ConsumerMessage(  # what the Kafka consumer makes: tracked once a stream takes it
        "apps", 0, offset, 0.0, 0, None, None, b"v", None, generation_id=generation
    )
    return Event(app, None, b"v", None, message)


def offsets(batch: list[Any]) -> list[int]:
    return [e.message.offset for e in batch]


def test_a_backlog_comes_in_batches_of_at_most_max_size() -> None:
    async def scenario() -> None:
        stream = Stream()
        stream.put(*range(7))
        batches = bulk_take(stream, max_size=3, within_s=0.5)
        began = time.monotonic()
        got = [offsets(await anext(batches)) for _ in range(2)]
        assert got == [[0, 1, 2], [3, 4, 5]]
        assert time.monotonic() - began < 0.25  # full batches do not wait for more
        assert offsets(await anext(batches)) == [6]  # the rest, after waiting within_s
        assert time.monotonic() - began >= 0.5

    asyncio.run(scenario())


def test_a_batch_that_is_not_full_waits_within_s_from_its_first_event() -> None:
    async def scenario() -> None:
        stream = Stream()
        batches = bulk_take(stream, max_size=10, within_s=0.2)
        pending = asyncio.ensure_future(anext(batches))
        await asyncio.sleep(0.05)
        assert not pending.done()  # nothing queued: it waits for a first event
        stream.put(1)
        await asyncio.sleep(0.05)
        stream.put(2, 3)  # within 0.2 s of the first: same batch
        assert offsets(await pending) == [1, 2, 3]

    asyncio.run(scenario())


def test_events_are_tracked_unacked_and_stale_ones_dropped() -> None:
    async def scenario() -> None:
        stream = Stream()
        stream.put(1, 2, generation=6)  # fetched before a rebalance: they will come again
        fresh = stream.put(3, 4)
        batch = await anext(bulk_take(stream, max_size=10, within_s=0.01))
        assert batch == fresh
        assert stream.app.consumer.unacked == {e.message for e in fresh}
        assert all(e.message.tracked for e in fresh)
        assert stream.came_in == [3, 4] and stream.sensed == [3, 4]

    asyncio.run(scenario())


def test_nothing_is_admitted_while_faust_has_suspended_its_flow() -> None:
    async def scenario() -> None:
        stream = Stream()
        stream.app.flow_control.active = False
        stream.put(1)
        batches = bulk_take(stream, max_size=10, within_s=0.01)
        pending = asyncio.ensure_future(anext(batches))
        await asyncio.sleep(0.05)
        assert not pending.done()  # the dropped event makes no batch
        stream.app.flow_control.active = True
        stream.put(2)
        assert offsets(await pending) == [2]
        assert stream.came_in == [2]  # the dropped one was never tracked

    asyncio.run(scenario())


def test_the_batches_end_when_faust_ends_the_channel() -> None:
    async def scenario() -> None:
        stream = Stream()
        batches = bulk_take(stream, max_size=10, within_s=0.01)
        stream.put(1)
        assert offsets(await anext(batches)) == [1]
        pending = asyncio.ensure_future(anext(batches))
        await asyncio.sleep(0.02)
        stream.channel.queue._throw(StopAsyncIteration())  # as a stopping worker does
        with pytest.raises(StopAsyncIteration):  # the end of the iteration, not a crash
            await pending

    asyncio.run(scenario())


def test_max_size_must_be_positive() -> None:
    async def scenario() -> None:
        with pytest.raises(ValueError, match="at least 1"):
            await anext(bulk_take(Stream(), max_size=0, within_s=0.01))

    asyncio.run(scenario())
