"""Batches of events taken from a Faust agent's channel queue in bulk, not one event at a time.

Faust's ``Stream.take`` and ``noack_take`` fill their buffer from a background task that
iterates the stream, and that iteration gives the event loop a turn (``await sleep(0)``) for
every event. In the scorer under 2,000 applications/s, beside the broker and a producer on 2
cores, the buffer gained only ~12 events per 5 ms window: batches stayed small, each batch paid
its fixed cost, and records waited 1-4 s in the stream buffer although the fetcher had them 0.1
s after they were sent (a probe of aiokafka's fetcher and the scorer's ``received_at``).

:func:`bulk_take` reads the same queue the stream would (``stream.channel.queue``, which
Faust's conductor fills as it fetches): it waits for one event, then takes every event already
queued, up to ``max_size``. Each event gets the bookkeeping the stream's own iterator gives it:

- an event from before a rebalance (another consumer generation), or one that arrives while
  Faust has suspended its flow, is dropped, as the stream drops it: it was not acked, so it
  comes again;
- the message is tracked as unacked, so Faust commits no offset past it until it is acked;
- the stream's sensors see it come in.

The caller acks each event with ``stream.ack(event)`` once its work is done, as after
``noack_take``. The batch size follows the backlog: one event when the stream is quiet, up to
``max_size`` when it is behind; ``within_s`` is how long a batch that is not full waits,
counted from its first event, for more.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from faust.types import EventT


def admit(stream: Any, event: Any) -> bool:
    """Give ``event`` the bookkeeping Faust's stream iterator does; False: drop it."""
    if not isinstance(event, EventT):
        return False  # a topic's channel only carries events
    app = stream.app
    message = event.message
    if not app.flow_control.is_active() or message.generation_id != app.consumer_generation_id:
        return False
    if message.topic in app.topics.acking_topics and not message.tracked:
        message.tracked = True
        app.consumer.unacked.add(message)
        stream._on_message_in(message.tp, message.offset, message)
    stream._on_stream_event_in(message.tp, message.offset, stream, event)
    return True


def take_queued(queue: Any, into: list[Any], max_size: int) -> None:
    """Move what ``queue`` holds into ``into`` until it has ``max_size``, without waiting."""
    while len(into) < max_size and not queue.empty():
        into.append(queue.get_nowait())


async def bulk_take(stream: Any, max_size: int, within_s: float) -> AsyncIterator[list[Any]]:
    """Yield lists of 1 to ``max_size`` admitted events from ``stream``'s channel queue."""
    if max_size < 1:
        raise ValueError(f"max_size must be at least 1, not {max_size}")
    queue = stream.channel.queue
    try:
        while not stream.should_stop:
            await asyncio.sleep(0)  # a turn for the fetch loop, which fills the queue
            taken = [await queue.get()]
            deadline = time.monotonic() + within_s
            take_queued(queue, taken, max_size)
            while len(taken) < max_size and (wait := deadline - time.monotonic()) > 0:
                await asyncio.sleep(wait)
                take_queued(queue, taken, max_size)
            events = [event for event in taken if admit(stream, event)]
            if events:
                yield events
    except StopAsyncIteration:  # thrown into the queue by Faust as its worker stops: the end
        return  # (what was taken and not yielded was not acked: it comes again)
