"""Which retrain requests the trainer takes: its own model's, with a window it can train on.

Anyone who can write loan.retrain-requests can ask for a round, so a request is checked before
it costs anything: another model's request, a window that ends before it starts, one that starts
or ends far in the future, one longer than ``max_window_days`` and one asking for more rows than
a round may hold are refused with the reason, and go to the dead-letter topic.

A window open at one end is not refused for its length, which only reading tells; the round
keeps the newest ``max_window_days`` of it (see :func:`bounded_window`).

>>> from datetime import UTC, datetime
>>> from trainer.settings import TrainerSettings
>>> now = datetime(2026, 12, 1, tzinfo=UTC)
>>> century = RetrainRequest(request_id="r", model_name="loan-repayment", reason="x",
...     requested_by="x", window_start=datetime(1926, 12, 1, tzinfo=UTC), window_end=now)
>>> refusal(century, TrainerSettings(), now).reason
'window_too_long'
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from loanstream.contracts import RetrainRequest
from trainer.settings import TrainerSettings


@dataclass(frozen=True)
class Refusal:
    """Why a request is not trained on: a low-cardinality code and what was expected."""

    reason: str
    error: str


@dataclass(frozen=True)
class Window:
    """An event-time window, [start, end); None is open at that end."""

    start: datetime | None
    end: datetime | None


def refusal(request: RetrainRequest, settings: TrainerSettings, now: datetime) -> Refusal | None:
    """Why ``request`` must not be trained on, or None when the trainer can take it."""
    if request.model_name != settings.model_name:
        return Refusal(
            "other_model",
            f"model_name must be {settings.model_name!r} (this trainer's model), "
            f"got {request.model_name[:128]!r}",
        )
    start, end = request.window_start, request.window_end
    if start is not None and end is not None and end <= start:
        return Refusal(
            "inverted_window",
            f"window_end must be after window_start, got {start.isoformat()} to {end.isoformat()}",
        )
    latest = now + timedelta(days=settings.max_future_days)
    for name, value in (("window_start", start), ("window_end", end)):
        if value is not None and value > latest:
            return Refusal(
                "future_window",
                f"{name} must be at most {settings.max_future_days:g} days after now "
                f"({latest.isoformat()}), got {value.isoformat()}",
            )
    longest = timedelta(days=settings.max_window_days)
    if start is not None and end is not None and end - start > longest:
        return Refusal(
            "window_too_long",
            f"the window must span at most {settings.max_window_days:g} days "
            f"(max_window_days), got {(end - start) / timedelta(days=1):.1f}",
        )
    if request.min_rows is not None and request.min_rows > settings.max_training_rows:
        return Refusal(
            "too_many_rows",
            f"min_rows must be at most {settings.max_training_rows} (max_training_rows), "
            f"got {request.min_rows}",
        )
    return None


def union_window(requests: list[RetrainRequest]) -> Window:
    """The smallest window covering every request's; open-ended if any request is."""
    starts = [r.window_start for r in requests]
    ends = [r.window_end for r in requests]
    start = None if any(s is None for s in starts) else min(s for s in starts if s)
    end = None if any(e is None for e in ends) else max(e for e in ends if e)
    return Window(start, end)


def bounded_window(window: Window, max_days: float) -> Window:
    """``window`` cut to its newest ``max_days`` when both ends are known (each request is
    bounded, but the union of two far apart is not)."""
    longest = timedelta(days=max_days)
    if window.start is None or window.end is None or window.end - window.start <= longest:
        return window
    return Window(window.end - longest, window.end)
