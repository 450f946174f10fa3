"""Bounds on the times a record may carry, so one careless timestamp cannot move a clock.

An outcome dated 9999-12-31 (a common "no date" value) would otherwise move the monitor's
label clock to the year 9999 and expire every prediction waiting for its label. Live services
refuse (dead-letter) event and outcome times outside a window around their wall clock; the
event-time engine of backtests takes its times from the history itself and needs none.

>>> from datetime import UTC, datetime, timedelta
>>> bounds = TimeWindow(past=timedelta(days=3650), future=timedelta(days=1))
>>> now = datetime(2026, 12, 7, tzinfo=UTC)
>>> print(bounds.problem("outcome_time", datetime(9999, 12, 31, tzinfo=UTC), now))
... # doctest: +NORMALIZE_WHITESPACE
outcome_time 9999-12-31T00:00:00+00:00 is outside [2016-12-09T00:00:00+00:00,
2026-12-08T00:00:00+00:00] (now - 3650 days, now + 1 day)
>>> bounds.problem("event_time", now, now) is None
True
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import BaseModel, Field

from loanstream.errors import InvalidRecord

OUT_OF_BOUNDS = "time_out_of_bounds"  # the dead-letter reason


def _days(span: timedelta) -> str:
    days = span / timedelta(days=1)
    shown = f"{days:g}"
    return f"{shown} day" if shown == "1" else f"{shown} days"


@dataclass(frozen=True)
class TimeWindow:
    """Times from ``past`` before now to ``future`` after now are plausible."""

    past: timedelta
    future: timedelta

    def problem(self, name: str, time: datetime, now: datetime) -> str | None:
        """What is wrong with ``time`` as ``name`` at ``now``, or None when it is plausible."""
        earliest, latest = now - self.past, now + self.future
        if earliest <= time <= latest:
            return None
        return (
            f"{name} {time.isoformat()} is outside [{earliest.isoformat()}, {latest.isoformat()}]"
            f" (now - {_days(self.past)}, now + {_days(self.future)})"
        )

    def check(self, name: str, time: datetime, now: datetime) -> None:
        """Raise InvalidRecord (reason ``time_out_of_bounds``) for an implausible ``time``."""
        problem = self.problem(name, time, now)
        if problem is not None:
            raise InvalidRecord([problem], OUT_OF_BOUNDS)


class TimeWindowSettings(BaseModel):
    """The window's settings, shared by the live services' settings classes (each with its own
    env prefix: ``LOANSTREAM_SCORER_TIME_PAST_DAYS``, ``LOANSTREAM_MONITOR_TIME_PAST_DAYS``)."""

    time_past_days: float = Field(
        default=3650,
        gt=0,
        description="refuse (dead-letter) event and outcome times older than this; a replay of "
        "an older history needs more",
    )
    time_future_days: float = Field(
        default=1,
        ge=0,
        description="refuse (dead-letter) event and outcome times this far after the wall clock",
    )

    def time_window(self) -> TimeWindow:
        return TimeWindow(
            timedelta(days=self.time_past_days), timedelta(days=self.time_future_days)
        )
