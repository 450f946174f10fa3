"""When to ask for a new model, and when to ask again: the retrain policy that the monitor, the
trainer and the event-time engine share.

A *trigger* says which confirmed drift signals ask for a retrain (the monitor's pipeline debounces
them with its cooldown). A *retry* keeps the loop from stalling: when a challenger loses while the
drift that asked for it still stands, the first window often began before the onset and mixed two
regimes. The follow-up asks for a window that starts at the drift's confirmation (or where the
losing window started, if later), and waits until it holds at least as many labelled rows as the
losing round trained on. Attempts are bounded.

>>> from datetime import UTC, datetime
>>> t = datetime(2026, 3, 1, tzinfo=UTC)
>>> first = RetrainRequest(request_id="retrain-drift-1", model_name="m", reason="concept drift",
...     requested_by="monitor", window_start=t, drift_event_id="drift-1",
...     drift_confirmed_at=datetime(2026, 3, 4, tzinfo=UTC), requested_at=t)
>>> again = RetryPolicy(max_attempts=2).follow_up(first, promoted=False, drift_stands=True,
...     rows_used=2900, min_rows=2858, now=datetime(2026, 3, 6, tzinfo=UTC))
>>> again.request_id, again.attempt, again.window_start.day, again.min_rows
('retrain-drift-1-attempt-2', 2, 4, 2900)
>>> RetryPolicy(max_attempts=2).follow_up(again, False, True, 3000, 2858, t) is None
True
>>> late = first.model_copy(update={"window_start": datetime(2026, 3, 5, tzinfo=UTC)})
>>> RetryPolicy().follow_up(late, False, True, 2900, 2858, t).window_start.day  # not before it
5
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from loanstream.contracts import DriftSignal, RetrainRequest

RETRY_BY = "retry-policy"


class Trigger(StrEnum):
    """Which confirmed drift signals ask for a retrain."""

    ANY = "any"  # data, prediction, concept or segment performance
    PERFORMANCE = "performance"  # only signals that the model itself is wrong now
    NEVER = "never"


TRIGGER_SIGNALS: dict[Trigger, frozenset[DriftSignal]] = {
    Trigger.ANY: frozenset(DriftSignal),
    Trigger.PERFORMANCE: frozenset({DriftSignal.CONCEPT, DriftSignal.PERFORMANCE}),
    Trigger.NEVER: frozenset(),
}


@dataclass(frozen=True)
class RetryPolicy:
    """Ask again, at most ``max_attempts`` times in all per drift, after a lost round."""

    max_attempts: int = 3

    def follow_up(
        self,
        request: RetrainRequest,
        promoted: bool,
        drift_stands: bool,
        rows_used: int,
        min_rows: int,
        now: datetime,
    ) -> RetrainRequest | None:
        """The next request after a round on ``request`` that trained on ``rows_used`` rows, or
        None: it was promoted, the drift no longer stands (another model serves now), the
        request came from no drift, or the attempts are spent."""
        if promoted or not drift_stands or request.drift_event_id is None:
            return None
        if request.attempt >= self.max_attempts:
            return None
        attempt = request.attempt + 1
        base = request.request_id.rsplit("-attempt-", 1)[0]
        # from the confirmation on, never before the window that lost: labels come out of order,
        # so the confirming label's application can be older than the drift's first evidence
        starts = [t for t in (request.drift_confirmed_at, request.window_start) if t is not None]
        start = max(starts) if starts else None
        return RetrainRequest(
            request_id=f"{base}-attempt-{attempt}"[:128],
            model_name=request.model_name,
            reason=(
                f"attempt {attempt} of {self.max_attempts}: the challenger of attempt "
                f"{request.attempt} lost; train on labels from the confirmation on"
            ),
            requested_by=RETRY_BY,
            window_start=start,
            window_end=None,
            drift_event_id=request.drift_event_id,
            drift_confirmed_at=request.drift_confirmed_at,
            attempt=attempt,
            min_rows=max(min_rows, rows_used),
            requested_at=now,
        )
