"""Shadow scoring: the challenger scores the same batch after the champion, and changes nothing
the champion sends, even when it fails."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry

from loanstream.config import KafkaSettings
from loanstream.contracts import DeadLetter, Prediction
from loanstream.models import LoadedModel
from loanstream.spec import load_spec
from loanstream.validation import ApplicationValidator
from scorer.app import BatchScorer
from scorer.holder import ModelHolder
from scorer.metrics import ScorerMetrics
from scorer.settings import ScorerSettings
from tests.helpers import application_json
from tests.scorer_model import small_model

SPEC = load_spec()
VALIDATOR = ApplicationValidator(SPEC, max_bytes=4096)
NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)


@dataclass
class FakeMessage:
    value: bytes | None
    key: bytes | None = b"k"
    topic: str = "loan.applications"
    partition: int = 0
    offset: int = 0
    timestamp: float = 0.0


@pytest.fixture(scope="module")
def champion() -> LoadedModel:
    return small_model("1", seed=2)


@pytest.fixture(scope="module")
def challenger() -> LoadedModel:
    return small_model("2", seed=7, candidate="hgb")


def as_version(model: LoadedModel, version: str) -> LoadedModel:
    return LoadedModel(
        model.model,
        model.name,
        version,
        model.sha256,
        model.bands,
        model.reference,
        model.feature_names,
    )


def messages() -> list[FakeMessage]:
    """200 applications with a few hostile records among them, stamped like Kafka records."""
    rng = random.Random(11)
    values = [application_json(SPEC, i, rng) for i in range(200)]
    for i in (3, 50, 151):
        values[i] = b'{"application_id": "broken", '
    return [FakeMessage(v, offset=i, timestamp=1_700_000_000 + i) for i, v in enumerate(values)]


def scorer_with(
    champion: LoadedModel, challenger: LoadedModel | None, **settings: object
) -> tuple[BatchScorer, ScorerMetrics]:
    holder = ModelHolder()
    holder.offer(champion)
    holder.offer_challenger(challenger)
    metrics = ScorerMetrics(CollectorRegistry())
    scorer = BatchScorer(
        KafkaSettings(),
        ScorerSettings(max_message_bytes=4096, **settings),  # type: ignore[arg-type]
        holder,
        metrics,
        VALIDATOR,
        clock=lambda: NOW,
    )
    return scorer, metrics


def by_topic(out: list, topic: str) -> list:  # type: ignore[type-arg]
    return [o for o in out if o[0] == topic]


def letters(out: list) -> list[dict[str, object]]:  # type: ignore[type-arg]
    """The dead letters sent, but for when (wall clock) they were written."""
    return [
        DeadLetter.from_json(o[2]).model_dump(exclude={"failed_at"})
        for o in by_topic(out, "loan.dead-letter")
    ]


def test_the_holder_gives_a_batch_both_models_and_swaps_them_between_batches(
    champion: LoadedModel, challenger: LoadedModel
) -> None:
    holder = ModelHolder()
    holder.offer(champion)
    assert holder.take().challenger is None
    holder.offer_challenger(challenger)
    taken = holder.take()
    assert taken.model is champion and taken.challenger is challenger and not taken.swapped
    holder.offer(as_version(challenger, "2"))  # promoted: the champion's version is no shadow
    taken = holder.take()
    assert taken.model is not None and taken.model.version == "2" and taken.challenger is None
    holder.offer_challenger(None)
    holder.offer(champion)
    assert holder.take().challenger is None


def test_a_challenger_changes_no_byte_the_champion_sends_and_shadows_each_application(
    champion: LoadedModel, challenger: LoadedModel
) -> None:
    alone, _ = scorer_with(champion, None)
    shadowed, metrics = scorer_with(champion, challenger)
    without = alone.process(messages())
    with_shadow = shadowed.process(messages())
    served = by_topic(with_shadow, "loan.predictions")
    assert served == by_topic(without, "loan.predictions")  # topic, key, bytes, timestamp
    assert letters(with_shadow) == letters(without) and len(letters(without)) == 3
    assert len(served) == 197 and by_topic(without, "loan.shadow-predictions") == []
    shadow = by_topic(with_shadow, "loan.shadow-predictions")
    assert [(o[1], o[3]) for o in shadow] == [(o[1], o[3]) for o in served]
    own = [Prediction.from_json(o[2]) for o in served]
    theirs = [Prediction.from_json(o[2]) for o in shadow]
    assert {p.model_version for p in own} == {"1"} and {p.model_version for p in theirs} == {"2"}
    assert all(p.reasons == [] for p in theirs)
    assert all(p.decision == challenger.bands.decide(p.probability) for p in theirs)
    assert [p.probability for p in own] != [p.probability for p in theirs]  # another model
    assert metrics.shadow_scored.labels("2")._value.get() == 197
    assert metrics.scored.labels("approve", "2", "stream")._value.get() == 0  # decides nothing
    assert metrics.shadow._value["version"] == "2"


def test_a_failing_challenger_changes_nothing_for_the_champion(champion: LoadedModel) -> None:
    class Broken:
        def predict_proba(self, frame: object) -> None:
            raise RuntimeError("boom")

    broken = LoadedModel(
        Broken(),
        "loan-repayment",
        "3",
        "0" * 64,
        champion.bands,
        champion.reference,
        champion.feature_names,
    )
    alone, _ = scorer_with(champion, None)
    shadowed, metrics = scorer_with(champion, broken)
    without, out = alone.process(messages()), shadowed.process(messages())
    assert by_topic(out, "loan.predictions") == by_topic(without, "loan.predictions")
    assert by_topic(out, "loan.shadow-predictions") == []
    assert letters(out) == letters(without)  # no application dead-lettered for the challenger
    assert [d["reason"] for d in letters(out)] == ["malformed_json"] * 3
    assert len(out) == 200
    assert metrics.shadow_failures._value.get() == 1


def test_shadow_scoring_can_be_switched_off(champion: LoadedModel, challenger: LoadedModel) -> None:
    scorer, _ = scorer_with(champion, challenger, shadow=False)
    out = scorer.process(messages())
    assert by_topic(out, "loan.shadow-predictions") == []
    assert len(by_topic(out, "loan.predictions")) == 197
