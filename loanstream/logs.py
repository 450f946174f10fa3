"""Keep the Kafka libraries' repeated complaints from flooding a service's log.

While the broker is down, aiokafka logs the same connection error for every attempt: ~65,000
ERROR lines in 20 s in the broker-outage fault test. :class:`Throttle` lets the first record of
each message template through, holds back the ones alike that follow within ``every_s``, and says
how many it held back on the next one it lets through.

:func:`configure_logging` sets up the rest, once per process: the level and the format (text, or
one JSON object per line for a log collector) come from ``LOANSTREAM_LOG_LEVEL`` and
``LOANSTREAM_LOG_FORMAT``.
"""

from __future__ import annotations

import json
import logging
import logging.config
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings

from loanstream.config import settings_config

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


class LogSettings(BaseSettings):
    """How every LoanStream process logs (env prefix ``LOANSTREAM_LOG_``)."""

    model_config = settings_config("LOANSTREAM_LOG_")

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO", description="lowest level logged by LoanStream's own loggers"
    )
    format: Literal["text", "json"] = Field(
        default="text",
        description="text: one readable line per record; json: one JSON object per line "
        "(time, level, logger, message, exception), for log collectors",
    )

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: what log collectors parse without a pattern.

    >>> record = logging.LogRecord("scorer", logging.WARNING, "", 0, "slow %s", ("fetch",), None)
    >>> record.created = 0.0
    >>> JsonFormatter().format(record)
    '{"time":"1970-01-01T00:00:00.000Z","level":"WARNING","logger":"scorer","message":"slow fetch"}'
    """

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, tz=UTC)
        entry: dict[str, str] = {
            "time": moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, separators=(",", ":"))


def logging_config(settings: LogSettings) -> dict[str, Any]:
    """The :func:`logging.config.dictConfig` of ``settings``: one stderr handler on the root
    logger. Loggers that exist keep their filters (the :class:`Throttle`) and levels."""
    formatter: dict[str, Any] = (
        {"()": JsonFormatter} if settings.format == "json" else {"format": TEXT_FORMAT}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"loanstream": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "loanstream",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": settings.level, "handlers": ["stderr"]},
    }


def configure_logging(settings: LogSettings | None = None) -> LogSettings:
    """Configure logging for this process from ``settings`` (default: the environment and
    ``.env``); called once in each entry point."""
    settings = settings or LogSettings()
    logging.config.dictConfig(logging_config(settings))
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per health check otherwise
    return settings
