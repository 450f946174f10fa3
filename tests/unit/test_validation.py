import json
import random
from typing import Any

import pytest

from loanstream.errors import InvalidRecord
from loanstream.spec import load_spec
from loanstream.validation import ApplicationValidator
from tests.helpers import application_json, sample_features

SPEC = load_spec()
VALIDATOR = ApplicationValidator(SPEC)
GOOD = sample_features(SPEC, random.Random(7))
PURPOSES = str(SPEC.feature("loan_purpose").values)  # type: ignore[union-attr]


def envelope(**features: Any) -> dict[str, Any]:
    merged = {**GOOD, **features}
    return {
        "application_id": "app-1",
        "event_time": "2026-01-31T12:00:00Z",
        "features": {k: v for k, v in merged.items() if v != "<absent>"},
    }


def test_a_valid_message_parses_into_a_loan_application() -> None:
    app = VALIDATOR.parse(application_json(SPEC, 3, random.Random(1)))
    assert app.application_id == "app-0000003"
    assert app.event_time.utcoffset() is not None
    assert list(app.features) == SPEC.feature_names


@pytest.mark.parametrize(
    ("features", "reason", "message"),
    [
        (
            {"credit_score": 9999},
            "out_of_range",
            "features.credit_score must be within [300, 850], got 9999",
        ),
        (
            {"income": -1.5},
            "out_of_range",
            "features.income must be within [0, 10000000], got -1.5",
        ),
        (
            {"income": float("nan")},
            "non_finite",
            "features.income must be a finite number, got nan",
        ),
        (
            {"income": float("inf")},
            "non_finite",
            "features.income must be a finite number, got inf",
        ),
        ({"income": "52000"}, "wrong_type", "features.income must be a number, got string '52000'"),
        ({"income": True}, "wrong_type", "features.income must be a number, got boolean True"),
        ({"age": 35.5}, "wrong_type", "features.age must be an integer, got number 35.5"),
        ({"age": "35"}, "wrong_type", "features.age must be an integer, got string '35'"),
        (
            {"loan_purpose": "yacht"},
            "out_of_range",
            f"features.loan_purpose must be one of {PURPOSES}, got string 'yacht'",
        ),
        (
            {"loan_purpose": 3},
            "out_of_range",
            f"features.loan_purpose must be one of {PURPOSES}, got integer 3",
        ),
        (
            {"incom": 5},
            "unknown_field",
            "features.incom is not a field of the feature spec 'loan-application'",
        ),
        ({"income": "<absent>"}, "missing_field", "features.income is required but missing"),
        ({"income": None}, "wrong_type", "features.income must not be null"),
    ],
)
def test_each_bad_feature_is_named_with_expected_and_actual(
    features: dict[str, Any], reason: str, message: str
) -> None:
    with pytest.raises(InvalidRecord) as caught:
        VALIDATOR.validate(envelope(**features))
    assert caught.value.problems == [message]
    assert caught.value.reason == reason


def test_nullable_features_may_be_null_or_absent_and_whole_floats_are_integers() -> None:
    app = VALIDATOR.validate(envelope(employment_length="<absent>", debt_to_income=None, age=35.0))
    assert app.features["employment_length"] is None
    assert app.features["debt_to_income"] is None
    assert app.features["age"] == 35 and isinstance(app.features["age"], int)


@pytest.mark.parametrize(
    ("raw", "reason", "first_problem"),
    [
        (
            b"{bad",
            "malformed_json",
            "message must be valid JSON: key must be a string at line 1 column 2",
        ),
        (
            b"\xff\xfe",
            "malformed_json",
            "message must be valid JSON: expected value at line 1 column 1",
        ),
        (b"[1, 2]", "wrong_type", "message must be a JSON object, got array [1, 2]"),
        (
            b"[" * 5000 + b"]" * 5000,
            "malformed_json",
            "message must be valid JSON: recursion limit exceeded at line 1 column 202",
        ),
        (
            json.dumps({**envelope(), "event_time": "2026-01-31T12:00:00"}).encode(),
            "wrong_type",
            "event_time must carry a UTC offset (e.g. 2026-01-31T12:00:00Z), got string "
            "'2026-01-31T12:00:00'",
        ),
        (
            json.dumps({**envelope(), "event_time": "yesterday"}).encode(),
            "wrong_type",
            "event_time must be an ISO 8601 time with offset, got string 'yesterday'",
        ),
        (
            json.dumps({**envelope(), "application_id": "a b"}).encode(),
            "invalid_value",
            "application_id: string should match pattern '^[A-Za-z0-9][A-Za-z0-9._:-]*$', "
            "got string 'a b'",
        ),
        (
            json.dumps({**envelope(), "schema_version": 2}).encode(),
            "unsupported_version",
            "schema_version must be 1, got integer 2",
        ),
        (
            json.dumps({**envelope(), "extra": 1}).encode(),
            "unknown_field",
            "extra is not a field of the contract",
        ),
        (
            json.dumps({**envelope(), "features": []}).encode(),
            "wrong_type",
            "features must be a JSON object, got array []",
        ),
        (
            b'{"application_id": "a", "event_time": "2026-01-31T12:00:00Z", '
            b'"features": {"income": NaN}}',
            "non_finite",
            "features.income must be a finite number, got nan",
        ),
    ],
)
def test_malformed_messages_are_refused_with_a_reason(
    raw: bytes, reason: str, first_problem: str
) -> None:
    with pytest.raises(InvalidRecord) as caught:
        VALIDATOR.parse(raw)
    assert caught.value.reason == reason
    assert caught.value.problems[0] == first_problem


def test_oversize_messages_are_refused_before_parsing() -> None:
    small = ApplicationValidator(SPEC, max_bytes=100)
    with pytest.raises(InvalidRecord) as caught:
        small.parse(b" " * 101)
    assert caught.value.reason == "oversize"
    assert str(caught.value) == "message must be at most 100 bytes, got 101"


def test_long_values_are_shortened_in_messages() -> None:
    with pytest.raises(InvalidRecord) as caught:
        VALIDATOR.validate(envelope(income="9" * 1000))
    assert len(caught.value.problems[0]) < 140
    assert caught.value.problems[0].endswith("...")


def test_the_json_schema_carries_the_spec() -> None:
    schema = VALIDATOR.model.model_json_schema()
    features = schema["$defs"]["Features"]
    assert features["properties"]["credit_score"]["minimum"] == 300
    assert features["properties"]["credit_score"]["maximum"] == 850
    assert set(features["required"]) == {f.name for f in SPEC.features if not f.nullable}
    assert features["additionalProperties"] is False


def test_a_live_validator_refuses_event_times_far_from_its_clock() -> None:
    from datetime import UTC, datetime, timedelta

    from loanstream.timebounds import TimeWindow

    live = ApplicationValidator(SPEC, times=TimeWindow(timedelta(days=3650), timedelta(days=1)))
    good = envelope()
    for when, refused in [
        (datetime.now(UTC), False),
        (datetime(9999, 12, 31, tzinfo=UTC), True),
        (datetime(1900, 1, 1, tzinfo=UTC), True),
    ]:
        raw = json.dumps({**good, "event_time": when.isoformat()})
        if refused:
            with pytest.raises(InvalidRecord) as caught:
                live.parse(raw)
            assert caught.value.reason == "time_out_of_bounds"
        else:
            assert live.parse(raw).event_time == when
        assert VALIDATOR.parse(raw).event_time == when  # a replay's validator has no window
