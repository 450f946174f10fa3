import base64
import hashlib
import json
import random

import pytest
from pydantic import ValidationError

from loanstream.config import KafkaSettings
from loanstream.contracts import DeadLetter, RetrainRequest
from loanstream.deadletters import MAX_LETTER_BYTES, RAW_VALUE_LIMIT, error_text, field_paths
from loanstream.errors import InvalidRecord
from loanstream.spec import load_spec
from loanstream.validation import ApplicationValidator
from tests.helpers import application_json

SPEC = load_spec()
VALIDATOR = ApplicationValidator(SPEC)
SALARY, INCOME = 98765.43, 12345678.9  # values that must not leave the record


def bad_application() -> bytes:
    """A valid application with a salary it may not have, an income above the spec's range and
    an age sent as a string."""
    message = json.loads(application_json(SPEC, 1, random.Random(1)))
    message["features"].update(salary=SALARY, income=INCOME, age="77")
    return json.dumps(message).encode()


def letter_of(value: bytes, error: str | BaseException, raw: bool = False) -> DeadLetter:
    return DeadLetter.of(
        source_topic="loan.applications",
        partition=3,
        offset=41,
        key=b"app-0000001",
        value=value,
        reason="invalid",
        error=error,
        service="scorer",
        raw=raw,
    )


def assert_no_feature_values(letter: DeadLetter) -> None:
    data = letter.to_json().decode()
    for quoted in ("98765", "12345678", '"77"', "'77'", "salary': ", "input_value"):
        assert quoted not in data, f"{quoted!r} in {data}"


def test_a_validation_error_gives_its_field_paths_and_no_feature_value() -> None:
    value = bad_application()
    with pytest.raises(ValidationError) as caught:
        VALIDATOR.model.model_validate_json(value)
    assert str(SALARY) in str(caught.value)  # pydantic's own text quotes it
    letter = letter_of(value, caught.value)
    assert_no_feature_values(letter)
    assert letter.field_paths == ["features.income", "features.age", "features.salary"]
    assert letter.error == (
        "3 validation errors for LoanApplication: "
        "features.income: Input should be less than or equal to 10000000 "
        "[type=less_than_equal]; "
        "features.age: Input should be a valid integer [type=int_type]; "
        "features.salary: Extra inputs are not permitted [type=extra_forbidden]"
    )
    assert (letter.key(), letter.value(), letter.value_bytes) == (b"app-0000001", None, len(value))
    assert letter.value_sha256 == hashlib.sha256(value).hexdigest()
    assert DeadLetter.from_json(letter.to_json()) == letter


def test_the_validators_invalid_record_keeps_its_paths_and_drops_what_came() -> None:
    value = bad_application()
    with pytest.raises(InvalidRecord) as caught:
        VALIDATOR.parse(value)
    assert str(SALARY) not in str(caught.value) and str(INCOME) in str(caught.value)
    letter = letter_of(value, caught.value)
    assert_no_feature_values(letter)
    assert letter.field_paths == ["features.income", "features.age", "features.salary"]
    assert letter.error == (
        "features.income must be within [0, 10000000]; "
        "features.age must be an integer; "
        "features.salary is not a field of the feature spec 'loan-application'"
    )


def test_error_strings_as_callers_pass_them_today_are_redacted_too() -> None:
    value = bad_application()
    with pytest.raises(ValidationError) as caught:
        VALIDATOR.model.model_validate_json(value)
    letter = letter_of(value, str(caught.value)[:300])  # cut inside a quoted value, as callers do
    assert_no_feature_values(letter)
    assert letter.field_paths is None
    assert letter.error.startswith(
        "3 validation errors for LoanApplication\n"
        "features.income\n"
        "  Input should be less than or equal to 10000000 [type=less_than_equal]\n"
    )
    with pytest.raises(InvalidRecord) as invalid:
        VALIDATOR.parse(value)
    assert (
        letter_of(value, str(invalid.value)).error == "features.income must be within [0, 10000000]"
    )


def test_other_errors_read_type_and_message_without_what_came() -> None:
    assert error_text(KeyError("segment")) == "KeyError: 'segment'"
    assert error_text(ValueError("amount must be positive, got -3")) == (
        "ValueError: amount must be positive"
    )
    assert field_paths(KeyError("segment")) is None
    with pytest.raises(ValidationError) as caught:
        RetrainRequest.from_json(b'{"request_id": "r-1", "salary": 98765.4')
    assert field_paths(caught.value) == []  # the record failed as a whole
    assert error_text(caught.value) == (
        "1 validation error for RetrainRequest: message: Invalid JSON: EOF while parsing an object "
        "at line 1 column 39 [type=json_invalid]"
    )


def test_a_750_kb_invalid_request_gives_a_small_dead_letter() -> None:
    request = {"request_id": "r-1", "model_name": "loan", "reason": "x" * 750_000}
    value = json.dumps(request).encode()
    with pytest.raises(ValidationError) as caught:
        RetrainRequest.from_json(value)
    letter = DeadLetter.of(
        source_topic="loan.retrain-requests",
        partition=0,
        offset=5,
        key=b"loan",
        value=value,
        reason="invalid",
        error=caught.value,
        service="trainer",
    )
    assert len(letter.to_json()) < 1024
    assert letter.field_paths == ["requested_by"]
    assert (letter.value_bytes, letter.value_sha256) == (
        len(value),
        hashlib.sha256(value).hexdigest(),
    )
    kept = letter_of(value, caught.value, raw=True)
    assert len(kept.to_json()) < MAX_LETTER_BYTES
    assert kept.value() == value[:RAW_VALUE_LIMIT] and kept.value_bytes == len(value)


def test_a_letter_with_every_part_at_its_worst_stays_under_the_bound() -> None:
    nasty = "\x01" * 2000  # JSON writes each as \u0001: six bytes a character
    fields = {f"{i}{nasty}": 1 for i in range(100)}  # distinct within the path cap
    with pytest.raises(ValidationError) as caught:
        RetrainRequest.model_validate(fields)
    letter = DeadLetter.of(
        source_topic=nasty,
        partition=0,
        offset=0,
        key=b"\xff" * 1_000_000,
        value=b"\xff" * 1_000_000,
        reason=nasty,
        error=caught.value,
        service=nasty,
        raw=True,
    )
    size = len(letter.to_json())
    assert size < MAX_LETTER_BYTES, size
    assert len(letter.field_paths or []) == 16 and len(letter.error) == 2000


def test_the_raw_setting_brings_the_bytes_back(monkeypatch: pytest.MonkeyPatch) -> None:
    assert KafkaSettings().dead_letter_raw is False
    monkeypatch.setenv("LOANSTREAM_KAFKA_DEAD_LETTER_RAW", "true")
    settings = KafkaSettings()
    assert settings.dead_letter_raw is True
    value = bad_application()
    letter = letter_of(value, "invalid", raw=settings.dead_letter_raw)
    assert DeadLetter.from_json(letter.to_json()).value() == value
    assert letter_of(value, "invalid").value() is None


def test_a_letter_written_before_these_fields_still_reads() -> None:
    old = (
        b'{"schema_version":1,"source_topic":"loan.applications","partition":2,"offset":17,'
        b'"key_b64":"YS0x","value_b64":"' + base64.b64encode(b"\xff not json") + b'",'
        b'"reason":"malformed_json","error":"not valid JSON","service":"scorer",'
        b'"failed_at":"2026-03-01T09:30:00Z"}'
    )
    letter = DeadLetter.from_json(old)
    assert (letter.key(), letter.value()) == (b"a-1", b"\xff not json")
    assert (letter.value_bytes, letter.value_sha256, letter.field_paths) == (None, None, None)
