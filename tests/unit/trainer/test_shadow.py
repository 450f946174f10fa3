"""The shadow verdict on seeded live outcomes, the join of shadow predictions with labelled
records, and the ``shadow`` promotion policy in a training round on a real MLflow store."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from loanstream.contracts import Decision, LabelledExample, ModelUpdate, Prediction
from tests.trainer_data import history
from trainer.data import labelled_frame
from trainer.pipeline import options_from, training_round
from trainer.registry import Registry
from trainer.settings import TrainerSettings
from trainer.shadow import (
    SharedOutcomes,
    Verdict,
    champion_outcomes,
    decide_shadow,
    join_shadow,
    shadow_probabilities,
)

T = datetime(2026, 3, 1, tzinfo=UTC)


def live(n: int, challenger: str, seed: int = 0) -> SharedOutcomes:
    """``n`` outcomes drawn from a known P(repaid); the champion sees it through noise, the
    challenger as ``challenger`` says: the truth, noise, or the truth badly calibrated."""
    rng = np.random.default_rng(seed)
    truth = rng.uniform(0.05, 0.95, n)
    labels = (rng.uniform(size=n) < truth).astype(int)
    champion = np.clip(truth + rng.normal(0, 0.25, n), 0.01, 0.99)
    theirs = {
        "ahead": truth,
        "behind": rng.uniform(0.05, 0.95, n),
        "miscalibrated": truth**3,  # ranks as the truth does, but far too low
    }[challenger]
    return SharedOutcomes.of(
        [
            (f"a{i}", float(c), float(t), int(y))
            for i, (c, t, y) in enumerate(zip(champion, theirs, labels, strict=True))
        ]
    )


def test_a_challenger_ahead_on_enough_live_outcomes_is_promoted() -> None:
    verdict = decide_shadow(live(600, "ahead"), 500, 0.0, 0.05)
    assert verdict.verdict == Verdict.PROMOTE and verdict.outcomes == 600
    assert verdict.challenger_metrics["auc"] > verdict.champion_metrics["auc"] + 0.05
    assert verdict.challenger_metrics["ece"] <= 0.05
    assert verdict.reason.startswith("live AUC ") and "600 shared live outcomes" in verdict.reason


def test_a_challenger_behind_is_dropped_with_the_reason() -> None:
    verdict = decide_shadow(live(600, "behind"), 500, 0.0, 0.05)
    assert verdict.verdict == Verdict.DROP
    assert "short of the margin 0.0" in verdict.reason
    assert verdict.challenger_metrics["auc"] < verdict.champion_metrics["auc"]


def test_a_margin_the_challenger_does_not_reach_drops_it() -> None:
    shared = live(600, "ahead")
    gain = decide_shadow(shared, 500, 0.0, 0.05)
    auc_gain = gain.challenger_metrics["auc"] - gain.champion_metrics["auc"]
    assert decide_shadow(shared, 500, auc_gain + 0.001, 0.05).verdict == Verdict.DROP
    assert decide_shadow(shared, 500, auc_gain - 0.001, 0.05).verdict == Verdict.PROMOTE


def test_a_badly_calibrated_challenger_is_dropped_even_when_it_ranks_better() -> None:
    verdict = decide_shadow(live(600, "miscalibrated"), 500, 0.0, 0.05)
    assert verdict.verdict == Verdict.DROP
    assert verdict.challenger_metrics["auc"] > verdict.champion_metrics["auc"]
    assert "is above the bound 0.05" in verdict.reason


def test_too_few_or_one_sided_outcomes_wait() -> None:
    verdict = decide_shadow(live(499, "ahead"), 500, 0.0, 0.05)
    assert (verdict.verdict, verdict.reason) == (
        Verdict.WAIT,
        "499 of the 500 shared live outcomes a verdict needs",
    )
    repaid = SharedOutcomes.of([(f"a{i}", 0.8, 0.9, 1) for i in range(20)])
    assert decide_shadow(repaid, 10, 0.0, 0.05).verdict == Verdict.WAIT


def prediction(app: str, version: str, p: float, name: str = "loan-repayment") -> bytes:
    return Prediction(
        application_id=app,
        event_time=T,
        probability=p,
        decision=Decision.REVIEW,
        model_name=name,
        model_version=version,
        features={},
        received_at=T,
        scored_at=T,
    ).to_json()


def labelled(app: str, version: str, p: float, label: int) -> bytes:
    return LabelledExample(
        application_id=app,
        event_time=T,
        outcome_time=T,
        features={},
        probability=p,
        decision=Decision.REVIEW,
        model_name="loan-repayment",
        model_version=version,
        label=label,
    ).to_json()


def test_only_applications_both_versions_scored_and_with_an_outcome_are_joined() -> None:
    shadow = shadow_probabilities("loan-repayment", "2")
    for key, value in [
        (b"a", prediction("a", "2", 0.9)),
        (b"b", prediction("b", "2", 0.4)),
        (b"c", prediction("c", "2", 0.3)),  # no outcome yet
        (b"d", prediction("d", "3", 0.1)),  # another challenger
        (b"e", prediction("e", "2", 0.1, name="other-model")),
        (b"x", b"{}"),
        (b"y", b"\x80 not json"),
        (b"z", b" " * 70_000),
    ]:
        shadow(key, value)
    outcomes = champion_outcomes("loan-repayment", "1")
    for key, value in [
        (b"a", labelled("a", "1", 0.7, 1)),
        (b"b", labelled("b", "1", 0.6, 0)),
        (b"d", labelled("d", "1", 0.5, 1)),
        (b"f", labelled("f", "1", 0.5, 1)),  # not scored in shadow
        (b"g", labelled("g", "0", 0.5, 1)),  # scored by an older champion
        (b"h", b'{"application_id": "h", "label": 7}'),
    ]:
        outcomes(key, value)
    assert (shadow.invalid, outcomes.invalid) == (3, 1)
    shared = join_shadow(shadow.values, outcomes.values)
    assert shared.application_ids == ("a", "b")
    assert shared.champion.tolist() == [0.7, 0.6]
    assert shared.challenger.tolist() == [0.9, 0.4]
    assert shared.labels.tolist() == [1, 0]


@pytest.mark.parametrize("policy", ["shadow", "immediate"])
def test_the_shadow_policy_puts_a_winner_in_shadow_instead_of_promoting_it(
    policy: str, tmp_path: Path
) -> None:
    frame, spec = history(6000, seed=3)
    good, _ = labelled_frame(frame, spec)
    settings = TrainerSettings(
        data_dir=tmp_path, min_rows=300, promotion_policy=policy, promotion_margin=0.0
    )
    registry = Registry(settings)
    published: list[ModelUpdate] = []
    fast = options_from(settings, candidates=("logistic",), search_candidates=2)
    weak = training_round(good.iloc[:1500], spec, settings, registry, fast, published.append)
    assert weak.promoted and not weak.shadowing  # no champion yet: nothing to shadow against
    strong = training_round(
        good, spec, settings, registry, fast, published.append, tags={"requests": "r1,r2"}
    )
    aliases = {v["version"]: v["aliases"] for v in registry.list_versions()}
    shadowing = registry.challenger()
    if policy == "shadow":
        assert strong.shadowing and not strong.promoted
        assert strong.champion_version == weak.version.version
        assert [u.version for u in published] == [weak.version.version]
        assert aliases == {
            weak.version.version: ["champion"],
            strong.version.version: ["challenger"],
        }
        assert registry.champion().version == weak.version.version  # type: ignore[union-attr]
        assert shadowing is not None and shadowing.version.version == strong.version.version
        assert shadowing.tags["requests"] == "r1,r2"
        assert registry.clear_challenger() == strong.version.version
        assert registry.challenger() is None
    else:
        assert strong.promoted and not strong.shadowing
        assert aliases == {weak.version.version: [], strong.version.version: ["champion"]}
        assert shadowing is None
