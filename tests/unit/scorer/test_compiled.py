"""The compiled input step gives the very same probabilities, or is not used."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import numpy as np
import pytest

from loanstream.models import LoadedModel
from loanstream.spec import load_spec
from loanstream.validation import ApplicationValidator
from scorer.compiled import FastOrdinal, compile_model, probe_frame
from scorer.core import score_batch
from tests.helpers import application_json
from tests.scorer_model import small_model

SPEC = load_spec()
NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def hgb() -> LoadedModel:
    return small_model(candidate="hgb")


def test_a_tree_model_is_compiled_and_scores_identically(hgb: LoadedModel) -> None:
    compiled = compile_model(hgb)
    assert compiled is not hgb
    steps = compiled.model.calibrated_classifiers_[0].estimator.estimator.steps
    assert isinstance(steps[0][1], FastOrdinal)
    validator = ApplicationValidator(SPEC)
    rng = random.Random(3)
    apps = [validator.parse(application_json(SPEC, i, rng)) for i in range(400)]
    before = score_batch(hgb, apps, NOW, NOW)
    after = score_batch(compiled, apps, NOW, NOW)
    assert [p.probability for p in after] == [p.probability for p in before]
    assert [p.reasons for p in after] == [p.reasons for p in before]
    # the original is left untouched: a failed swap can fall back on it
    assert not isinstance(
        hgb.model.calibrated_classifiers_[0].estimator.estimator.steps[0][1], FastOrdinal
    )


def test_unknown_and_missing_values_encode_as_in_scikit_learn(hgb: LoadedModel) -> None:
    probe = probe_frame(hgb)
    assert (probe["loan_purpose"] == "not-a-known-value").any()
    assert probe["loan_purpose"].isna().any() and probe["income"].isna().any()
    prepare = hgb.model.calibrated_classifiers_[0].estimator.estimator.steps[0][1]
    fast = compile_model(hgb).model.calibrated_classifiers_[0].estimator.estimator.steps[0][1]
    expected = np.asarray(prepare.transform(probe), dtype=float)
    assert np.isnan(expected[:, 0]).any()
    assert np.array_equal(fast.transform(probe), expected, equal_nan=True)


def test_a_pipeline_of_another_shape_is_left_as_it_is() -> None:
    logistic = small_model()
    assert compile_model(logistic) is logistic


def test_a_compiled_step_that_disagrees_is_refused(
    hgb: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    def off_by_one(self: FastOrdinal, X: object) -> np.ndarray:
        out = original(self, X)
        out[:, 0] = np.where(np.isnan(out[:, 0]), np.nan, (out[:, 0] + 1) % 8)
        return out

    original = FastOrdinal.transform
    monkeypatch.setattr(FastOrdinal, "transform", off_by_one)
    assert compile_model(hgb) is hgb
