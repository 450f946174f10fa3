"""A compiled model scores as scikit-learn does, or is not used."""

from __future__ import annotations

import dataclasses
import pickle
import random
from datetime import UTC, datetime

import numpy as np
import pytest

from loanstream.models import LoadedModel
from loanstream.spec import load_spec
from loanstream.validation import ApplicationValidator
from scorer.compiled import (
    Block,
    CompiledModel,
    Fitted,
    Linear,
    Trees,
    compile_model,
    probe_frame,
    records,
)
from scorer.core import score_batch
from tests.helpers import application_json
from tests.scorer_model import small_model

SPEC = load_spec()
NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)
CANDIDATES = ["hgb", "logistic", "forest"]
KINDS = {
    "HistGradientBoostingClassifier": Trees,
    "LogisticRegression": Linear,
    "RandomForestClassifier": Fitted,
}


@pytest.fixture(scope="module", params=CANDIDATES)
def fitted(request: pytest.FixtureRequest) -> LoadedModel:
    return small_model(candidate=request.param)


def applications(n: int = 400) -> list:
    validator = ApplicationValidator(SPEC)
    rng = random.Random(3)
    return [validator.parse(application_json(SPEC, i, rng)) for i in range(n)]


def test_each_candidate_compiles_and_scores_as_scikit_learn(fitted: LoadedModel) -> None:
    compiled = compile_model(fitted)
    assert isinstance(compiled.model, CompiledModel)
    final = fitted.model.calibrated_classifiers_[0].estimator.estimator.steps[1][1]
    assert isinstance(compiled.model.estimator, KINDS[final.__class__.__name__])
    apps = applications()
    before = score_batch(fitted, apps, NOW, NOW)
    after = score_batch(compiled, apps, NOW, NOW)
    assert sum(p.reasons != [] for p in before) > 50  # the reason codes are compared too
    assert np.allclose(
        [p.probability for p in after], [p.probability for p in before], rtol=0, atol=1e-12
    )
    assert [p.decision for p in after] == [p.decision for p in before]
    assert [[r.feature for r in p.reasons] for p in after] == [
        [r.feature for r in p.reasons] for p in before
    ]
    assert fitted.model is not compiled.model  # the original is kept: a failed swap falls back


def test_a_compiled_model_scores_a_row_alike_in_any_batch(fitted: LoadedModel) -> None:
    """To the last bit, whatever batch it came in: the live scorer's batches depend on timing,
    and a backtest must not change with its batch size."""
    compiled = compile_model(fitted)
    apps = applications(10_000)
    whole = [p.probability for p in score_batch(compiled, apps, NOW, NOW, with_reasons=False)]
    cut, i, rng = [], 0, random.Random(5)
    while i < len(apps):
        size = rng.choice([1, 2, 3, 5, 37, 101])
        cut += [p.probability for p in score_batch(compiled, apps[i : i + size], NOW, NOW, False)]
        i += size
    assert cut == whole


def test_a_linear_model_sums_each_row_alike_in_any_batch() -> None:
    rng = np.random.default_rng(0)
    X, coef = rng.normal(size=(1000, 40)), rng.normal(size=(40, 1))
    linear = Linear(coef, np.array([0.3]))
    whole = linear.decision(X)
    for size in (1, 3, 37):
        cut = np.concatenate([linear.decision(X[i : i + size]) for i in range(0, 1000, size)])
        assert (cut == whole).all()  # X @ coef: 762, 670 and 18 of the 1,000 rows differ


def test_missing_and_unknown_values_encode_as_in_scikit_learn(fitted: LoadedModel) -> None:
    probe = probe_frame(fitted)
    assert (probe["loan_purpose"] == "not-a-known-value").any()
    assert probe["loan_purpose"].isna().any() and probe["income"].isna().any()
    compiled = compile_model(fitted).model
    pipeline = fitted.model.calibrated_classifiers_[0].estimator.estimator
    expected = pipeline.steps[0][1].transform(probe)
    expected = expected.toarray() if hasattr(expected, "toarray") else expected
    expected = np.asarray(expected, dtype=float)
    final = pipeline.steps[1][1]
    if getattr(final, "_preprocessor", None) is not None:  # HGB re-encodes its categoricals
        expected = final._preprocessor.transform(expected)
    assert np.array_equal(compiled.matrix(records(probe)), expected, equal_nan=True)


def test_the_compiled_model_survives_the_loader_process(fitted: LoadedModel) -> None:
    """The loader returns it pickled; lambdas or closures would not survive that."""
    compiled = compile_model(fitted).model
    assert isinstance(compiled, CompiledModel)
    copied = pickle.loads(pickle.dumps(compiled))
    X = compiled.matrix([a.features for a in applications(50)])
    # (a forest sums its trees on two threads, in either order: equal to the last bits only)
    assert np.allclose(copied.probability(X), compiled.probability(X), rtol=0, atol=1e-12)


def test_a_model_of_another_shape_is_left_as_it_is(fitted: LoadedModel) -> None:
    bare = dataclasses.replace(fitted, model=fitted.model.calibrated_classifiers_[0].estimator)
    bare = dataclasses.replace(bare, model=bare.model.estimator.steps[1][1])  # no input step
    assert compile_model(bare) is bare


def test_a_compiled_model_that_disagrees_is_refused(
    fitted: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = Block.encode

    def doubled_income(self: Block, values: list) -> np.ndarray:
        out = original(self, values)
        return out * 2 if self.feature == "income" else out

    monkeypatch.setattr(Block, "encode", doubled_income)
    assert compile_model(fitted) is fitted
