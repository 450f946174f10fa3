"""loan.labelled records are checked before training, and a window is held in bounded memory."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pandas as pd
import pytest

from loanstream.errors import InvalidRecord
from loanstream.spec import load_spec
from loanstream.validation import ApplicationValidator
from trainer.labelled import WindowRows, check_labelled

SPEC = load_spec()
T = datetime(2026, 3, 1, tzinfo=UTC)
FEATURES = {
    "income": 52_000.0,
    "age": 35,
    "employment_length": None,
    "loan_amount": 12_000.0,
    "term_months": 36,
    "interest_rate": 11.5,
    "credit_score": 690,
    "debt_to_income": 0.31,
    "loan_purpose": "car",
    "home_ownership": "rent",
}


def record(i: int = 0, **changes: Any) -> dict[str, Any]:
    return {
        "application_id": f"a-{i}",
        "event_time": (T + timedelta(minutes=i)).isoformat(),
        "outcome_time": (T + timedelta(days=30, minutes=i)).isoformat(),
        "features": dict(FEATURES),
        "probability": 0.8,
        "decision": "approve",
        "model_name": "loan-repayment",
        "model_version": "1",
        "label": 1,
        **changes,
    }


def raw(value: dict[str, Any]) -> bytes:
    return orjson.dumps(value)


def problems(value: bytes) -> tuple[str, list[str]]:
    with pytest.raises(InvalidRecord) as caught:
        check_labelled(value, ApplicationValidator(SPEC))
    return caught.value.reason, caught.value.problems


def test_a_valid_record_becomes_a_training_row() -> None:
    row = check_labelled(raw(record()), ApplicationValidator(SPEC))
    assert row == ("a-0", T, *FEATURES.values(), 1)


def test_an_empty_record_names_every_missing_field() -> None:
    assert problems(b"{}") == (
        "missing_field",
        [
            f"{name} is required but missing"
            for name in (
                "application_id",
                "event_time",
                "outcome_time",
                "features",
                "probability",
                "decision",
                "model_name",
                "model_version",
                "label",
            )
        ],
    )


@pytest.mark.parametrize(
    ("value", "reason", "expected"),
    [
        (b"[1, 2]", "malformed_json", ["message must be a JSON object"]),
        (
            b"{nope",
            "malformed_json",
            [
                "message must be valid JSON: unexpected character, expected a string key: "
                "line 1 column 2 (char 1)"
            ],
        ),
        (b"x" * 70_000, "oversize", ["message must be at most 65536 bytes, got 70000"]),
        (raw(record(label=7)), "wrong_type", ["label: input should be 0 or 1"]),
        (
            raw(record(event_time="2026-03-01T00:00:00")),
            "wrong_type",
            ["event_time: input should have timezone info"],
        ),
        (
            raw(record(features={**FEATURES, "credit_score": 9999})),
            "out_of_range",
            ["features.credit_score must be within [300, 850], got 9999"],
        ),
        (
            raw(record(features={**FEATURES, "income": "52000"})),
            "wrong_type",
            ["features.income must be a number, got string '52000'"],
        ),
        (
            raw(record(features={k: v for k, v in FEATURES.items() if k != "age"})),
            "missing_field",
            ["features.age is required but missing"],
        ),
    ],
)
def test_a_record_that_breaks_the_contract_or_the_spec_says_why(
    value: bytes, reason: str, expected: list[str]
) -> None:
    assert problems(value) == (reason, expected)


def test_a_record_dated_after_the_latest_plausible_time_is_refused() -> None:
    latest = T + timedelta(days=40)
    validator = ApplicationValidator(SPEC)
    far = record(event_time="9999-12-31T00:00:00Z", outcome_time="9999-12-31T00:00:00Z")
    with pytest.raises(InvalidRecord) as caught:
        check_labelled(raw(far), validator, latest)
    assert (caught.value.reason, caught.value.problems) == (
        "time_out_of_bounds",
        ["event_time must be at most 2026-04-10T00:00:00+00:00, got 9999-12-31T00:00:00+00:00"],
    )
    assert check_labelled(raw(record()), validator, latest)[0] == "a-0"  # outcome in 30 days
    late = record(outcome_time="2026-05-01T00:00:00Z")
    with pytest.raises(InvalidRecord, match="outcome_time must be at most 2026-04-10"):
        check_labelled(raw(late), validator, latest)


def test_a_window_keeps_its_newest_valid_rows_and_hands_on_the_invalid() -> None:
    invalid: list[tuple[bytes | None, str]] = []
    rows = WindowRows(
        SPEC,
        T + timedelta(minutes=2),
        T + timedelta(minutes=9),
        limit=3,
        on_invalid=lambda key, value, err: invalid.append((key, err.reason)),
    )
    for i in (5, 0, 8, 2, 9, 6, 3):  # read in no particular order, as partitions interleave
        rows(f"a-{i}".encode(), raw(record(i)))
    rows(b"bad", b"{}")
    assert invalid == [(b"bad", "missing_field")]
    assert (rows.in_window, rows.dropped, rows.invalid) == (5, 2, 1)  # 0 and 9 are outside
    frame = rows.frame()
    assert frame["application_id"].tolist() == ["a-5", "a-6", "a-8"]
    assert frame["applied_at"].tolist() == [
        pd.Timestamp(T + timedelta(minutes=i)) for i in (5, 6, 8)
    ]
    assert frame.dtypes[["age", "employment_length", "repaid"]].astype(str).tolist() == [
        "float64",
        "float64",
        "int64",
    ]
    assert frame["loan_purpose"].tolist() == ["car"] * 3


def test_an_empty_window_is_an_empty_frame_with_the_training_columns() -> None:
    rows = WindowRows(SPEC, None, None, limit=10, on_invalid=lambda *_: None)
    frame = rows.frame()
    assert len(frame) == 0
    assert list(frame.columns) == [
        "application_id",
        "applied_at",
        *SPEC.feature_names,
        "repaid",
    ]
