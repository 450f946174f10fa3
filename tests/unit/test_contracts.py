import hashlib
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from loanstream.contracts import (
    CONTRACTS,
    DeadLetter,
    Decision,
    DriftEvent,
    DriftSignal,
    LabelledExample,
    LoanApplication,
    ModelUpdate,
    Outcome,
    Prediction,
    ReasonCode,
    RetrainRequest,
)

T = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
FEATURES = {"income": 52000.0, "age": 41, "employment_length": None, "loan_purpose": "car"}

EXAMPLES = [
    LoanApplication(application_id="a-1", event_time=T, features=FEATURES),
    Prediction(
        application_id="a-1",
        event_time=T,
        probability=0.83,
        decision=Decision.APPROVE,
        model_name="loan",
        model_version="3",
        features=FEATURES,
        reasons=[ReasonCode(feature="credit_score", contribution=-0.12)],
        received_at=T,
        scored_at=T,
    ),
    Outcome(application_id="a-1", label=1, outcome_time=T),
    LabelledExample(
        application_id="a-1",
        event_time=T,
        outcome_time=T,
        features=FEATURES,
        probability=0.83,
        decision=Decision.REVIEW,
        model_name="loan",
        model_version="3",
        label=0,
    ),
    DriftEvent(
        event_id="e-1",
        signal=DriftSignal.DATA,
        detector="psi",
        feature="income",
        statistic=0.31,
        threshold=0.25,
        p_value=0.001,
        window_size=5000,
        first_position=120_000,
        confirmed_position=121_000,
        first_event_time=T,
        confirmed_event_time=T,
        model_name="loan",
        model_version="3",
        detected_at=T,
    ),
    RetrainRequest(
        request_id="r-1",
        model_name="loan",
        reason="concept drift",
        requested_by="monitor",
        window_start=T,
        window_end=T,
        requested_at=T,
    ),
    ModelUpdate(
        model_name="loan",
        version="4",
        run_id="abc",
        model_uri="models:/loan/4",
        sha256="0" * 64,
        metrics={"auc": 0.81},
        promoted_at=T,
    ),
    DeadLetter.of(
        source_topic="loan.applications",
        partition=2,
        offset=17,
        key=b"a-1",
        value=b"\xff not json",
        reason="malformed_json",
        error="not valid JSON",
        service="scorer",
    ),
]


def test_every_contract_has_an_example_that_survives_a_json_round_trip() -> None:
    assert {type(e).__name__ for e in EXAMPLES} == set(CONTRACTS)
    for example in EXAMPLES:
        data = example.to_json()
        assert b'"schema_version":1' in data
        assert type(example).from_json(data) == example


def test_dead_letters_keep_the_size_and_hash_of_the_raw_bytes_not_the_bytes() -> None:
    letter = DeadLetter.from_json(EXAMPLES[-1].to_json())
    assert (letter.key(), letter.value(), letter.value_bytes) == (b"a-1", None, 10)
    assert letter.value_sha256 == hashlib.sha256(b"\xff not json").hexdigest()


@pytest.mark.parametrize(
    ("model", "changes", "message"),
    [
        (Prediction, {"probability": float("nan")}, "Input should be a finite number"),
        (Prediction, {"probability": 1.2}, "Input should be less than or equal to 1"),
        (Prediction, {"decision": "maybe"}, "Input should be 'approve', 'review' or 'decline'"),
        (Outcome, {"label": 2}, "Input should be 0 or 1"),
        (Outcome, {"outcome_time": "2026-03-01T09:30:00"}, "Input should have timezone info"),
        (ModelUpdate, {"sha256": "xyz"}, "String should match pattern '^[0-9a-f]{64}$'"),
        (RetrainRequest, {"surprise": True}, "Extra inputs are not permitted"),
    ],
)
def test_contracts_refuse_bad_values(model: type, changes: dict[str, object], message: str) -> None:
    base = next(e for e in EXAMPLES if isinstance(e, model)).model_dump(mode="json")
    with pytest.raises(
        ValidationError,
        match=message.replace("(", r"\(")
        .replace("[", r"\[")
        .replace("^", r"\^")
        .replace("$", r"\$")
        .replace("{", r"\{"),
    ):
        model.model_validate({**base, **changes})


def test_contracts_are_frozen() -> None:
    with pytest.raises(ValidationError):
        EXAMPLES[2].label = 0  # type: ignore[misc]


def test_trusted_builds_what_validation_builds() -> None:
    values = dict(
        application_id="app-1",
        event_time=T,
        probability=0.25,
        decision=Decision.DECLINE,
        model_name="m",
        model_version="3",
        features={"income": 52000, "loan_purpose": "car"},
        received_at=T,
        scored_at=T,
    )
    trusted = Prediction.trusted(**values)
    validated = Prediction(**values)
    assert trusted == validated
    assert trusted.to_json() == validated.to_json()
    assert trusted.model_fields_set == validated.model_fields_set
    assert trusted.reasons == [] and trusted.reasons is not Prediction.trusted(**values).reasons
    with pytest.raises(TypeError, match="needs \\['scored_at'\\]"):
        Prediction.trusted(**{k: v for k, v in values.items() if k != "scored_at"})
    with pytest.raises(TypeError, match="got \\['score'\\]"):
        Prediction.trusted(**values, score=1)
