"""Keep the Kafka libraries' repeated complaints from flooding a service's log.

While the broker is down, aiokafka logs the same connection error for every attempt: ~65,000
ERROR lines in 20 s in the broker-outage fault test. :class:`Throttle` lets the first record of
each message template through, holds back the ones alike that follow within ``every_s``, and says
how many it held back on the next one it lets through.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

LIBRARIES = ("aiokafka", "faust", "mode")


class Throttle(logging.Filter):
    """At most one record per (logger, level, message template) every ``every_s`` seconds.

    >>> clock = iter([0.0, 1.0, 2.0, 11.0]).__next__
    >>> throttle = Throttle(every_s=10.0, clock=clock)
    >>> def record(msg):
    ...     return logging.LogRecord("aiokafka", logging.ERROR, "", 0, msg, ("node 1",), None)
    >>> records = [record("cannot reach %s") for _ in range(4)]
    >>> [throttle.filter(r) for r in records]
    [True, False, False, True]
    >>> records[-1].getMessage()
    'cannot reach node 1 [2 alike held back in the last 11 s]'
    """

    def __init__(
        self,
        every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        max_templates: int = 1000,
    ):
        super().__init__()
        self.every_s = every_s
        self.clock = clock
        self.max_templates = max_templates
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        last, held = self._seen.get(key, (None, 0))
        if last is not None and now - last < self.every_s:
            self._seen[key] = (last, held + 1)
            return False
        self._seen[key] = (now, 0)
        if len(self._seen) > self.max_templates:
            self._forget(now)
        if held and last is not None:
            record.msg = f"{record.msg} [{held} alike held back in the last {now - last:.0f} s]"
        return True

    def _forget(self, now: float) -> None:
        """Drop what no longer holds anything back: a library that logs formatted messages
        (f-strings) makes a template of every message, which would otherwise pile up."""
        self._seen = {
            key: (last, held)
            for key, (last, held) in self._seen.items()
            if held or now - last < self.every_s
        }


def throttle_library_logs(every_s: float = 10.0, libraries: Iterable[str] = LIBRARIES) -> Throttle:
    """Put one :class:`Throttle` on the loggers of ``libraries`` that exist now (call it once
    they are imported: a logger's filters see the records logged to it, not to its children)."""
    throttle = Throttle(every_s)
    prefixes = tuple(libraries)
    names = [n for n in logging.Logger.manager.loggerDict if n.split(".")[0] in prefixes]
    for name in {*prefixes, *names}:
        logging.getLogger(name).addFilter(throttle)
    return throttle
