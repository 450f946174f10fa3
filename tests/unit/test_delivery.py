"""Our Faust transport: fetches tuned for batches, and the prompt hand-over of fetched messages
(same results as Faust's wait_first, fewer tasks)."""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

import faust
import pytest

from loanstream.delivery import PromptConsumer, advance, resume, use_transport


async def returns_at_once(value: int) -> int:
    return value


async def waits_for(future: asyncio.Future[int], then: int) -> int:
    return await future + then


async def sleeps_then(value: int) -> int:
    await asyncio.sleep(0)
    return value


def test_advance_returns_what_a_coroutine_that_never_waits_returns() -> None:
    assert advance(returns_at_once(7)) == (True, 7)


def test_resume_finishes_a_coroutine_stopped_at_its_first_wait() -> None:
    async def main() -> tuple[int, int]:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        coro = waits_for(future, 1)
        done, waiting_on = advance(coro)
        assert not done and waiting_on is future
        asyncio.get_running_loop().call_later(0.01, future.set_result, 41)
        slept = sleeps_then(5)
        done, waiting_on = advance(slept)
        assert (done, waiting_on) == (False, None)  # a bare yield
        return await resume(coro, future), await resume(slept, None)

    assert asyncio.run(main()) == (42, 5)


def test_an_exception_or_a_cancellation_reaches_the_resumed_coroutine() -> None:
    seen: list[str] = []

    async def records(future: asyncio.Future[int]) -> int:
        try:
            return await future
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        except ValueError as err:
            seen.append(f"raised {err}")
            return -1

    async def main() -> int:
        loop = asyncio.get_running_loop()
        failing: asyncio.Future[int] = loop.create_future()
        coro = records(failing)
        _, waiting_on = advance(coro)
        failing.set_exception(ValueError("bad"))
        result = await resume(coro, waiting_on)
        hanging: asyncio.Future[int] = loop.create_future()
        coro = records(hanging)
        _, waiting_on = advance(coro)
        task = asyncio.ensure_future(resume(coro, waiting_on))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return result

    assert asyncio.run(main()) == -1
    assert seen == ["raised bad", "cancelled"]


def consumer_of(app: faust.App) -> Any:
    use_transport(app)
    consumer = app.consumer  # built, not started: no broker is needed
    assert isinstance(consumer, PromptConsumer)
    return consumer


def test_a_delivery_that_does_not_wait_makes_no_task_and_leaves_no_warning() -> None:
    app = faust.App("prompt-test", broker="kafka://127.0.0.1:1")

    async def main() -> Any:
        consumer = consumer_of(app)
        before = len(asyncio.all_tasks())
        flow = asyncio.Event()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "coroutine ... was never awaited" would fail here
            results = await consumer.wait_first(returns_at_once(3), flow.wait())
        assert len(asyncio.all_tasks()) == before
        return results

    results = asyncio.run(main())
    assert results.results == [3] and not results.stopped


def test_a_delivery_that_waits_is_still_cut_short_when_the_flow_is_suspended() -> None:
    """As in Faust: the suspend-flow event wins over a delivery stuck on a full buffer."""
    app = faust.App("prompt-test", broker="kafka://127.0.0.1:1")

    async def main() -> tuple[Any, Any, bool]:
        consumer = consumer_of(app)
        loop = asyncio.get_running_loop()
        never: asyncio.Future[int] = loop.create_future()
        flow = asyncio.Event()
        loop.call_later(0.01, flow.set)
        suspended = flow.wait()
        cut = await consumer.wait_first(waits_for(never, 1), suspended)
        ready: asyncio.Future[int] = loop.create_future()
        loop.call_later(0.01, ready.set_result, 10)
        waited = await consumer.wait_first(waits_for(ready, 1), asyncio.Event().wait())
        return cut, waited, never.cancelled()

    cut, waited, cancelled = asyncio.run(main())
    assert cut.done[0] is not None and cut.results == [True]  # the event's wait() won
    assert cancelled  # the stuck delivery was cancelled, as Faust's wait_first does
    assert waited.results == [11]


@pytest.mark.parametrize("prompt", [True, False])
def test_the_worker_consumer_fetches_with_the_transport_s_sizes(prompt: bool) -> None:
    """Faust hard-codes fetch_max_wait_ms=1500 and fetch.min.bytes 1; ours come from settings,
    with or without the prompt hand-over."""
    app = faust.App(f"fetch-test-{prompt}", broker="kafka://127.0.0.1:1")
    use_transport(app, prompt=prompt, fetch_min_bytes=32768, fetch_max_wait_ms=10)

    async def main() -> tuple[int, int]:
        thread = app.consumer._thread  # built, not started: no broker is needed
        consumer = thread._create_worker_consumer(app.transport)
        return consumer._fetch_min_bytes, consumer._fetch_max_wait_ms

    assert asyncio.run(main()) == (32768, 10)
    assert isinstance(app.consumer, PromptConsumer) is prompt


def test_without_tuning_the_worker_consumer_fetches_as_faust_does() -> None:
    app = faust.App("fetch-test-default", broker="kafka://127.0.0.1:1")
    use_transport(app)

    async def main() -> tuple[int, int]:
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        return consumer._fetch_min_bytes, consumer._fetch_max_wait_ms

    assert asyncio.run(main()) == (1, 1500)
