"""What one REST request may cost the scorer: a body of at most so many bytes, read as it comes,
and a bounded number of scorings at once, each in a worker thread so the event loop stays free
to answer probes, refusals and the metrics scrape while the model works."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from loanstream.errors import LoanStreamError

T = TypeVar("T")


class BodyTooLarge(LoanStreamError):
    """A request body passed its cap; ``received`` is how many bytes were read when it did."""

    def __init__(self, max_bytes: int, received: int) -> None:
        self.max_bytes = max_bytes
        self.received = received
        super().__init__(f"body must be at most {max_bytes} bytes, got at least {received}")


class ScorerBusy(LoanStreamError):
    """Every scoring slot is taken: the caller should answer 429 now rather than queue."""

    def __init__(self, size: int) -> None:
        self.size = size
        super().__init__(f"at most {size} scorings run at once, all {size} are running")


async def read_capped(chunks: AsyncIterable[bytes], max_bytes: int) -> bytes:
    """The whole body, or ``BodyTooLarge`` as soon as it passes ``max_bytes``.

    Reads chunk by chunk, so a chunked body (no Content-Length) costs at most ``max_bytes``
    plus one chunk of memory, however long the client keeps sending.

    >>> async def chunks(n):
    ...     for _ in range(n):
    ...         yield b"x" * 10
    >>> len(asyncio.run(read_capped(chunks(3), 30)))
    30
    >>> asyncio.run(read_capped(chunks(1000), 25))
    Traceback (most recent call last):
    ...
    scorer.limits.BodyTooLarge: body must be at most 25 bytes, got at least 30
    """
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > max_bytes:
            raise BodyTooLarge(max_bytes, len(body))
    return bytes(body)


class ScoringSlots:
    """At most ``size`` pieces of work run at once, each in a worker thread; one more is refused
    with ``ScorerBusy`` at once, so an overloaded scorer answers 429 instead of queueing requests
    until their clients time out.

    A slot is given back when its thread ends, not when its caller stops waiting: a client that
    hangs up cannot free a slot while its scoring still runs. The count is kept on the event
    loop's thread only, so it needs no lock.

    >>> slots = ScoringSlots(2)
    >>> asyncio.run(slots.run(lambda: 6 * 7))
    42
    >>> slots.busy, slots.full
    (0, False)
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size}")
        self.size = size
        self.busy = 0
        self._threads: ThreadPoolExecutor | None = None

    @property
    def full(self) -> bool:
        return self.busy >= self.size

    async def run(self, work: Callable[[], T]) -> T:
        """``work()`` in a worker thread, or ``ScorerBusy`` if ``size`` are running already."""
        if self.full:
            raise ScorerBusy(self.size)
        if self._threads is None:
            self._threads = ThreadPoolExecutor(self.size, thread_name_prefix="rest-scoring")
        self.busy += 1
        # Submitted before the first await, so the work runs and its slot comes back whatever
        # happens to the caller; the shield keeps a cancelled caller from cancelling the future,
        # whose end is what gives the slot back.
        done = asyncio.get_running_loop().run_in_executor(self._threads, work)
        done.add_done_callback(self._give_back)
        return await asyncio.shield(done)

    def _give_back(self, _: asyncio.Future[T]) -> None:
        self.busy -= 1
