import hashlib
import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry

from loanstream.config import KafkaSettings
from loanstream.contracts import DeadLetter, Decision, Prediction
from loanstream.models import LoadedModel, repaid_probability
from loanstream.spec import load_spec
from loanstream.validation import ApplicationValidator
from scorer.app import BatchScorer
from scorer.compiled import attribution_model
from scorer.core import score_batch, typical_values
from scorer.holder import ModelHolder
from scorer.metrics import ScorerMetrics
from scorer.settings import ScorerSettings
from tests.helpers import application_json
from tests.scorer_model import small_model

SPEC = load_spec()
VALIDATOR = ApplicationValidator(SPEC, max_bytes=4096)
NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    return small_model()


def applications(n: int, seed: int = 0) -> list:  # type: ignore[type-arg]
    rng = random.Random(seed)
    return [VALIDATOR.parse(application_json(SPEC, i, rng)) for i in range(n)]


def test_one_prediction_per_application_in_order_with_bands_and_reasons(
    model: LoadedModel,
) -> None:
    apps = applications(300)
    predictions = score_batch(model, apps, NOW, NOW, with_reasons=True)
    typical = typical_values(model.reference)
    [typical_p] = score_batch(
        model,
        [
            VALIDATOR.validate(
                {
                    "application_id": "t",
                    "event_time": "2026-01-01T00:00:00Z",
                    "features": {n: typical[n] for n in SPEC.feature_names},
                }
            )
        ],
        NOW,
        NOW,
    )
    assert [p.application_id for p in predictions] == [a.application_id for a in apps]
    for p in predictions:
        assert p.decision == model.bands.decide(p.probability)
        assert p.model_version == "1" and p.received_at == NOW
        if p.decision == Decision.APPROVE:
            assert p.reasons == []
        else:  # reasons are the features worse than the typical applicant's
            assert len(p.reasons) <= 4
            assert all(r.contribution < 0 for r in p.reasons)
            assert all(r.text == SPEC.feature(r.feature).description for r in p.reasons)
            assert all(r.feature != "age" for r in p.reasons)  # protected in the loan spec
            if p.probability < typical_p.probability - 0.01:
                assert p.reasons
            assert [r.contribution for r in p.reasons] == sorted(r.contribution for r in p.reasons)
        assert Prediction.from_json(p.to_json()) == p  # valid against the contract
    assert {p.decision for p in predictions} == set(Decision)


def test_a_reason_names_the_feature_that_hurts(model: LoadedModel) -> None:
    typical = typical_values(model.reference)
    base = {name: typical[name] for name in SPEC.feature_names}
    app = VALIDATOR.validate(
        {
            "application_id": "a",
            "event_time": "2026-01-01T00:00:00Z",
            "features": {**base, "credit_score": 420},
        }
    )
    [p] = score_batch(model, [app], NOW, NOW)
    assert p.decision != Decision.APPROVE
    assert p.reasons[0].feature == "credit_score"
    assert p.reasons[0].text == "bureau score (FICO range)"


def test_an_applicant_worse_on_five_features_gets_the_four_that_hurt_most(
    model: LoadedModel,
) -> None:
    typical = typical_values(model.reference)
    worse = {
        "credit_score": 420,
        "debt_to_income": 1.2,
        "interest_rate": 30.0,
        "employment_length": 0.0,
        "income": 8000.0,
    }
    app = VALIDATOR.validate(
        {
            "application_id": "a",
            "event_time": "2026-01-01T00:00:00Z",
            "features": {**{n: typical[n] for n in SPEC.feature_names}, **worse},
        }
    )
    [p] = score_batch(model, [app], NOW, NOW)
    # What each worse value costs on its own, before calibration (as reasons are measured).
    raw = attribution_model(model.model)
    rows = [app.features] + [{**app.features, name: typical[name]} for name in worse]
    own, *typical_one = repaid_probability(raw, pd.DataFrame(rows, columns=SPEC.feature_names))
    cost = dict(zip(worse, own - np.array(typical_one), strict=True))
    assert all(c < 0 for c in cost.values())
    assert [r.feature for r in p.reasons] == sorted(worse, key=cost.get)[:4]
    assert [r.contribution for r in p.reasons] == [
        float(f"{cost[r.feature]:.4g}") for r in p.reasons
    ]


@dataclass
class FakeMessage:
    value: bytes | None
    key: bytes | None = b"k"
    topic: str = "loan.applications"
    partition: int = 0
    offset: int = 0
    timestamp: float = 0.0


def test_a_batch_of_hostile_records_becomes_predictions_and_dead_letters(
    model: LoadedModel,
) -> None:
    holder = ModelHolder()
    holder.offer(model)
    metrics = ScorerMetrics(CollectorRegistry())
    scorer = BatchScorer(
        KafkaSettings(), ScorerSettings(max_message_bytes=4096), holder, metrics, VALIDATOR
    )
    good = [application_json(SPEC, i, random.Random(i)) for i in range(5)]
    bad_json = b'{"application_id": "x", '
    nan = (
        json.dumps({**json.loads(good[0]), "application_id": "nan-1"})
        .replace('"income": ', '"income": NaN, "x": ', 1)
        .encode()
    )
    huge = b" " * 10_000
    hostile = [bad_json, nan, huge, None, b"[]", "ü\u0000".encode()]
    messages = [FakeMessage(v, offset=i) for i, v in enumerate(good + hostile)]
    out = scorer.process(messages)
    predictions = [o for o in out if o[0] == "loan.predictions"]
    letters = [DeadLetter.from_json(o[2]) for o in out if o[0] == "loan.dead-letter"]
    assert len(predictions) == 5 and len(letters) == 6
    assert [o[1] for o in predictions] == [f"app-{i:07d}".encode() for i in range(5)]
    assert [d.reason for d in letters] == [
        "malformed_json",
        "non_finite",
        "oversize",
        "malformed_json",
        "wrong_type",
        "malformed_json",
    ]
    assert letters[2].error == "message must be at most 4096 bytes"
    assert letters[2].value_bytes == 10000 and letters[2].value() is None
    assert letters[0].value_sha256 == hashlib.sha256(bad_json).hexdigest()
    assert letters[0].value() is None and letters[0].offset == 5


def test_a_failing_model_dead_letters_the_batch_instead_of_losing_it(
    model: LoadedModel,
) -> None:
    class Broken:
        def predict_proba(self, frame: object) -> None:
            raise RuntimeError("boom")

    holder = ModelHolder()
    holder.offer(
        LoadedModel(Broken(), "m", "9", "0" * 64, model.bands, model.reference, model.feature_names)
    )
    scorer = BatchScorer(
        KafkaSettings(), ScorerSettings(), holder, ScorerMetrics(CollectorRegistry()), VALIDATOR
    )
    out = scorer.process([FakeMessage(application_json(SPEC, 1, random.Random(1)))])
    [letter] = [DeadLetter.from_json(o[2]) for o in out]
    assert letter.reason == "scoring_failed" and "boom" in letter.error


def test_the_holder_swaps_only_when_the_scorer_takes_the_next_batch(model: LoadedModel) -> None:
    holder = ModelHolder()
    taken = holder.take()
    assert (taken.model, taken.typical, taken.swapped) == (None, {}, False)
    assert not holder.ready.is_set()
    holder.offer(model)
    assert holder.ready.is_set() and holder.current is model
    newer = LoadedModel(
        model.model,
        model.name,
        "2",
        model.sha256,
        model.bands,
        model.reference,
        model.feature_names,
    )
    holder.offer(newer)
    assert holder.current is model  # the batch in flight keeps its model
    taken = holder.take()
    assert taken.model is newer and taken.swapped and taken.challenger is None
    assert holder.take().swapped is False
