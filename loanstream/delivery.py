"""Faust's Kafka transport with fetches tuned for batches and a cheaper hand-over of each
fetched message to the streams.

**Fetches.** Faust asks the broker for records with ``fetch.min.bytes`` 1 (a fetch returns as
soon as one record is there) and aiokafka sends the next fetch only once the last one is
consumed. At 2,000 applications/s the scorer's consumer thread made ~170 fetches/s of ~12
records each, and spent 27% of a core on them (the event loop 42%). :class:`TunedConsumerThread`
lets the broker gather ``fetch_min_bytes`` or wait ``fetch_max_wait_ms``, whichever comes first
(32 KiB, 10 ms by default): the consumer thread fell to 10%, the event loop to 34%, and the
longest scoring pause in the hot-swap test from 115-187 ms to 39-93 ms, as the two cores this
machine shares between broker, producer and scorer stopped running out. The scorer fetches so
(``LOANSTREAM_SCORER_FETCH_MIN_BYTES`` / ``_FETCH_MAX_WAIT_MS``); the monitor keeps Faust's own
fetches. Fetch sizes decide how records arrive, not which are handled: with 32 KiB / 10 ms the
monitor's restart test resumes at exactly the offsets its last snapshot covers, as with Faust's.

**Hand-over.**
Faust's fetch loop hands every message to its streams through ``Service.wait_first(deliver,
suspend_flow.wait())``, so that a rebalance can cut short a delivery that waits (a full stream
buffer, suspended flow). ``wait_first`` wraps each of its arguments, and the service's stopped
and crashed events, in a task, waits for the first to finish and cancels the others: four tasks
and at least two turns of the event loop per message, even though a delivery almost never waits.

:class:`PromptConsumer` runs the delivery at once instead, up to its first wait. If it finishes
without waiting, as it nearly always does, that is the first to finish, and no task is made. If
it does wait, what is left of it goes to Faust's own ``wait_first`` beside the other waits, so a
rebalance still cuts it short as before. Everything else (fetching, acking, committing) is
Faust's. ``python -m bench.scorer`` runs the scorer with both hand-overs in the same run;
``LOANSTREAM_KAFKA_FAUST_PROMPT_DELIVERY=false`` turns this one off.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Coroutine
from typing import Any, cast

import faust
from faust.transport.drivers import aiokafka as driver
from mode.services import WaitArgT, WaitResults


class TunedConsumerThread(driver.AIOKafkaConsumerThread):
    """Faust's aiokafka consumer thread, with the fetch sizes of its (tuned) transport."""

    def _create_worker_consumer(self, transport: driver.Transport) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Faust passes fetch_max_wait_ms=1500 and no fetch_min_bytes, and offers no setting for
        # either; aiokafka hands both to its fetcher when the consumer starts. Only a
        # TunedConsumer makes this thread, and only a TunedTransport makes that consumer.
        tuning = cast(TunedTransport, transport).fetch_tuning
        consumer._fetch_min_bytes, consumer._fetch_max_wait_ms = tuning
        return consumer


class TunedConsumer(driver.Consumer):
    def _new_consumer_thread(self) -> TunedConsumerThread:
        return TunedConsumerThread(self, loop=self.loop, beacon=self.beacon)


def advance(coro: Coroutine[Any, Any, Any], exc: BaseException | None = None) -> tuple[bool, Any]:
    """Run ``coro`` to its next wait, sending None or throwing ``exc`` in, as the event loop's
    task would: (True, what it returned) or (False, what it waits on)."""
    try:
        return False, coro.send(None) if exc is None else coro.throw(exc)
    except StopIteration as returned:
        return True, returned.value


async def resume(coro: Coroutine[Any, Any, Any], waiting_on: Any) -> Any:
    """Go on running ``coro``, stopped at a wait for ``waiting_on`` (a future, or None for a
    bare yield), until it returns; an exception or a cancellation reaches it as in a task."""
    while True:
        try:
            if waiting_on is None:
                await asyncio.sleep(0)
            else:  # as a task does with a future its coroutine yields: it takes over the wait
                waiting_on._asyncio_future_blocking = False
                await waiting_on
        except BaseException as exc:
            done, waiting_on = advance(coro, exc)
        else:
            done, waiting_on = advance(coro)
        if done:
            return waiting_on


class PromptConsumer(TunedConsumer):
    """Faust's aiokafka consumer, whose ``wait_first`` tries its first awaitable at once.

    In this class, ``wait_first`` is called by the fetch loop alone, with the delivery first.
    """

    async def wait_first(self, *coros: WaitArgT, timeout: Any = None) -> WaitResults:
        first, rest = coros[0] if coros else None, coros[1:]
        stopping = self._stopped.is_set() or self._crashed.is_set()
        if timeout is not None or stopping or not inspect.iscoroutine(first):
            return await super().wait_first(*coros, timeout=timeout)
        done, value = advance(first)
        if done:
            for other in rest:  # never started: close them, or Python warns they were not awaited
                if inspect.iscoroutine(other):
                    other.close()
            return WaitResults([first], [value], False)
        return await super().wait_first(resume(first, value), *rest)


class TunedTransport(driver.Transport):
    Consumer = TunedConsumer
    fetch_tuning: tuple[int, int] = (1, 1500)  # (fetch_min_bytes, fetch_max_wait_ms): Faust's


class PromptTransport(TunedTransport):
    Consumer = PromptConsumer


def use_transport(
    app: faust.App, prompt: bool = True, fetch_min_bytes: int = 1, fetch_max_wait_ms: int = 1500
) -> None:
    """Give ``app`` the tuned transport (with the prompt hand-over unless ``prompt`` is false);
    call it before the app's topics or agents exist. The defaults are Faust's own fetches."""
    transport = (PromptTransport if prompt else TunedTransport)(app.conf.broker_consumer, app)
    transport.fetch_tuning = (fetch_min_bytes, fetch_max_wait_ms)
    app.transport = transport
