"""Which retrain requests the trainer takes, and the windows it trains on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from loanstream.contracts import RetrainRequest
from trainer.requests import Refusal, Window, bounded_window, refusal, union_window
from trainer.settings import TrainerSettings

NOW = datetime(2026, 12, 1, tzinfo=UTC)
DAY = timedelta(days=1)
SETTINGS = TrainerSettings(max_window_days=365, max_future_days=1, max_training_rows=100_000)


def request(**fields: Any) -> RetrainRequest:
    values: dict[str, Any] = {
        "request_id": "r1",
        "model_name": "loan-repayment",
        "reason": "drift",
        "requested_by": "test",
        **fields,
    }
    return RetrainRequest(**values)


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"window_start": NOW - 365 * DAY, "window_end": NOW},
        {"window_start": datetime(1926, 1, 1, tzinfo=UTC)},  # open-ended: cut when read
        {"window_end": NOW + DAY},
        {"min_rows": 100_000},
    ],
)
def test_requests_for_this_model_with_a_bounded_window_are_taken(fields: dict[str, Any]) -> None:
    assert refusal(request(**fields), SETTINGS, NOW) is None


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"model_name": "someone-elses"},
            Refusal(
                "other_model",
                "model_name must be 'loan-repayment' (this trainer's model), got 'someone-elses'",
            ),
        ),
        (
            {"window_start": NOW, "window_end": NOW - DAY},
            Refusal(
                "inverted_window",
                "window_end must be after window_start, got 2026-12-01T00:00:00+00:00 to "
                "2026-11-30T00:00:00+00:00",
            ),
        ),
        (
            {"window_start": NOW, "window_end": NOW},
            Refusal(
                "inverted_window",
                "window_end must be after window_start, got 2026-12-01T00:00:00+00:00 to "
                "2026-12-01T00:00:00+00:00",
            ),
        ),
        (
            {"window_start": NOW - 36_525 * DAY, "window_end": NOW},
            Refusal(
                "window_too_long",
                "the window must span at most 365 days (max_window_days), got 36525.0",
            ),
        ),
        (
            {"window_start": datetime(9999, 12, 30, tzinfo=UTC)},
            Refusal(
                "future_window",
                "window_start must be at most 1 days after now (2026-12-02T00:00:00+00:00), "
                "got 9999-12-30T00:00:00+00:00",
            ),
        ),
        (
            {"window_start": NOW, "window_end": NOW + 2 * DAY},
            Refusal(
                "future_window",
                "window_end must be at most 1 days after now (2026-12-02T00:00:00+00:00), "
                "got 2026-12-03T00:00:00+00:00",
            ),
        ),
        (
            {"min_rows": 100_001},
            Refusal(
                "too_many_rows",
                "min_rows must be at most 100000 (max_training_rows), got 100001",
            ),
        ),
    ],
)
def test_requests_the_trainer_cannot_take_are_refused_with_the_reason(
    fields: dict[str, Any], expected: Refusal
) -> None:
    assert refusal(request(**fields), SETTINGS, NOW) == expected


def test_the_union_of_bounded_windows_is_cut_to_its_newest_days() -> None:
    old = request(window_start=NOW - 800 * DAY, window_end=NOW - 700 * DAY)
    new = request(window_start=NOW - 10 * DAY, window_end=NOW)
    union = union_window([old, new])
    assert union == Window(NOW - 800 * DAY, NOW)
    assert bounded_window(union, 365) == Window(NOW - 365 * DAY, NOW)
    assert bounded_window(Window(NOW - 365 * DAY, NOW), 365) == Window(NOW - 365 * DAY, NOW)
    assert bounded_window(Window(NOW - 800 * DAY, None), 365) == Window(NOW - 800 * DAY, None)
    assert union_window([old, request()]) == Window(None, None)


def test_settings_refuse_a_row_cap_below_what_a_round_needs() -> None:
    with pytest.raises(ValueError, match="max_training_rows must hold a window of min_rows=2000"):
        TrainerSettings(min_rows=2000, max_training_rows=2000)
    assert TrainerSettings(min_rows=700, max_training_rows=1000).max_training_rows == 1000
