"""Reasons of adverse decisions: at most four, in the spec's words, never a protected feature.

The model here is fitted on seeded loan applications relabelled so that age moves repayment
more than anything else: for most declined or reviewed applicants, age is the feature that
lowers the score most. The loan spec marks age protected, so it must never be given.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from loanstream.contracts import Decision, LoanApplication, Prediction
from loanstream.models import LoadedModel
from loanstream.spec import FeatureSpec, load_spec, parse_spec
from scorer.compiled import CompiledModel, compile_model
from scorer.core import MAX_REASONS, score_batch
from tests.trainer_data import history
from trainer.data import labelled_frame, time_split
from trainer.train import TrainingOptions, train

SPEC = load_spec()
NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)


def with_protected(spec: FeatureSpec, protected: set[str]) -> FeatureSpec:
    document = spec.model_dump(mode="json")
    document["features"] = [
        {**f, "protected": f["name"] in protected} for f in document["features"]
    ]
    return parse_spec(document)


UNPROTECTED = with_protected(SPEC, set())


@pytest.fixture(scope="module")
def age_model() -> LoadedModel:
    """A calibrated logistic regression whose strongest input is age (then credit score)."""
    frame, spec = history(4000, seed=5)
    good, _ = labelled_frame(frame, spec)
    age, score = good["age"].to_numpy(float), good["credit_score"].to_numpy(float)
    logit = 2.5 + 4.0 * (age - 40) / 12 + 0.8 * (score - 680) / 60
    rng = np.random.default_rng(5)
    good[spec.target_column] = (rng.random(len(good)) < 1 / (1 + np.exp(-logit))).astype(int)
    options = TrainingOptions(seed=5, candidates=("logistic",), search_candidates=2)
    result = train(time_split(good, spec), spec, options)
    return LoadedModel(
        result.model, "aged", "1", "0" * 64, result.bands, result.reference, spec.feature_names
    )


@pytest.fixture(scope="module")
def applications() -> list[LoanApplication]:
    frame, spec = history(500, seed=9)
    return [
        LoanApplication(
            application_id=f"a{i}",
            event_time=NOW,
            features={k: None if v != v else v for k, v in row.items()},  # NaN -> missing
        )
        for i, row in enumerate(frame[spec.feature_names].to_dict("records"))
    ]


def features(predictions: list[Prediction]) -> list[list[str]]:
    return [[r.feature for r in p.reasons] for p in predictions]


def test_age_lowers_the_score_most_yet_is_never_given_as_a_reason(
    age_model: LoadedModel, applications: list[LoanApplication]
) -> None:
    unprotected = score_batch(age_model, applications, NOW, NOW, spec=UNPROTECTED)
    protected = score_batch(age_model, applications, NOW, NOW, spec=SPEC)
    adverse = [i for i, p in enumerate(protected) if p.decision != Decision.APPROVE]
    assert len(adverse) > 100
    # Without `protected`, age would be the first reason of most adverse decisions...
    firsts = [unprotected[i].reasons[0].feature for i in adverse if unprotected[i].reasons]
    assert firsts.count("age") > len(adverse) // 2
    # ... with it, age is never given, and the next features move up in the same order.
    assert all("age" not in reasons for reasons in features(protected))
    refilled = 0
    for before, after in zip(features(unprotected), features(protected), strict=True):
        rest = [f for f in before if f != "age"]
        assert after[: len(rest)] == rest and len(after) <= MAX_REASONS
        refilled += len(after) > len(rest)
    assert refilled > 50  # a fifth feature took age's place among the four
    # Decisions and probabilities are the model's own: protection changes only the reasons.
    assert [p.probability for p in protected] == [p.probability for p in unprotected]


def test_the_compiled_model_gives_the_same_reasons(
    age_model: LoadedModel, applications: list[LoanApplication]
) -> None:
    compiled = compile_model(age_model)
    assert isinstance(compiled.model, CompiledModel)
    for spec in (SPEC, UNPROTECTED):
        fast = score_batch(compiled, applications, NOW, NOW, spec=spec)
        batch = score_batch(age_model, applications, NOW, NOW, spec=spec)
        assert features(fast) == features(batch)
        assert [[r.text for r in p.reasons] for p in fast] == [
            [r.text for r in p.reasons] for p in batch
        ]
    assert all("age" not in f for f in features(score_batch(compiled, applications, NOW, NOW)))


def test_up_to_four_reasons_most_harmful_first_in_the_specs_words(
    age_model: LoadedModel, applications: list[LoanApplication]
) -> None:
    predictions = score_batch(age_model, applications, NOW, NOW)  # the default spec: loan
    counts = [len(p.reasons) for p in predictions if p.decision != Decision.APPROVE]
    assert max(counts) == MAX_REASONS == 4
    for p in predictions:
        if p.decision == Decision.APPROVE:
            assert p.reasons == []
            continue
        contributions = [r.contribution for r in p.reasons]
        assert contributions == sorted(contributions) and all(c < 0 for c in contributions)
        assert [r.text for r in p.reasons] == [
            SPEC.feature(r.feature).description for r in p.reasons
        ]
        assert Prediction.from_json(p.to_json()) == p
    texts = {r.feature: r.text for p in predictions for r in p.reasons}
    assert texts["credit_score"] == "bureau score (FICO range)"


def test_a_spec_without_descriptions_gives_reasons_without_text(
    age_model: LoadedModel, applications: list[LoanApplication]
) -> None:
    document = SPEC.model_dump(mode="json")
    document["features"] = [{**f, "description": ""} for f in document["features"]]
    bare = parse_spec(document)
    predictions = score_batch(age_model, applications, NOW, NOW, spec=bare)
    reasons = [r for p in predictions for r in p.reasons]
    assert reasons and all(r.text is None for r in reasons)
    assert "age" not in {r.feature for r in reasons}  # still protected


def test_when_every_feature_is_protected_decisions_come_without_reasons(
    age_model: LoadedModel, applications: list[LoanApplication]
) -> None:
    everything = with_protected(SPEC, set(SPEC.feature_names))
    predictions = score_batch(age_model, applications, NOW, NOW, spec=everything)
    assert {p.decision for p in predictions} == set(Decision)
    assert all(p.reasons == [] for p in predictions)
