"""A token bucket: a sustained rate without a sleep per message.

>>> clock = iter([0.0, 0.01, 0.5]).__next__
>>> bucket = TokenBucket(rate=1000.0, clock=clock, sleep=lambda s: None)
>>> bucket.take(10_000)   # it starts with one token, so the average rate is exact
1
>>> bucket.take(10_000)   # 10 ms later: 10 tokens
10
>>> bucket.take(10_000)   # 0.5 s later: capped at the 50 ms burst
50
"""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """Tokens accrue at ``rate`` per second up to ``burst_s`` seconds' worth.

    A wait lasts at least ``min_wait_s``: at 2,000/s a wait per token (0.5 ms) woke the sender,
    and librdkafka's thread behind it, 2,000 times a second for one message each (~40% of a
    core); 2 ms waits send a few at a time at the same average rate.
    """

    def __init__(
        self,
        rate: float,
        burst_s: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        min_wait_s: float = 0.002,
    ) -> None:
        self.rate = rate
        self.min_wait_s = min_wait_s
        self.capacity = max(1.0, rate * burst_s)
        self.clock = clock
        self.sleep = sleep
        self._tokens: float | None = None
        self._last = 0.0

    def take(self, most: int) -> int:
        """Wait for at least one token; take and return up to ``most`` of those available."""
        while True:
            now = self.clock()
            if self._tokens is None:
                self._tokens, self._last = 1.0, now
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= 1 - 1e-9:  # float sums may fall a hair short of a whole token
                granted = max(1, min(most, int(self._tokens + 1e-9)))
                self._tokens -= granted
                return granted
            self.sleep(max(self.min_wait_s, (1 - self._tokens) / self.rate))
