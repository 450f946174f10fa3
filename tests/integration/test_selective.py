"""Selective labels on a real broker: the producer reads decisions from loan.predictions and sends
the outcomes of approved and explored applications only, each once, holding those whose
prediction comes late and counting those whose prediction never comes."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import numpy as np
from prometheus_client import CollectorRegistry

from loanstream.config import KafkaSettings
from loanstream.contracts import Decision, Outcome, Prediction
from loanstream.kafka.clients import IdempotentProducer
from loanstream.spec import load_spec
from loanstream.topics import OUTCOMES, PREDICTIONS, create_topics
from producer.decisions import SelectiveOutcomes
from producer.generator import Generator
from producer.live import produce_live
from producer.metrics import ProducerMetrics
from producer.outcomes import LabelPolicy
from producer.scenarios import load_scenario
from producer.selective import Fate, LabelsMode, Selection, fate_of
from producer.world import load_world
from tests.integration.consume import read_all

SPEC = load_spec()
COUNT, SEED, EXPLORATION, LATE_AFTER_S = 300, 13, 0.2, 2.5


def publish(kafka: KafkaSettings, decisions: dict[str, Decision]) -> None:
    now = datetime.now(UTC)
    with IdempotentProducer(kafka) as producer:
        for application_id, decision in decisions.items():
            prediction = Prediction(
                application_id=application_id,
                event_time=now,
                probability=0.8 if decision is Decision.APPROVE else 0.3,
                decision=decision,
                model_name="loan-repayment",
                model_version="1",
                features={},
                received_at=now,
                scored_at=now,
            )
            producer.produce(
                kafka.topic(PREDICTIONS), application_id.encode(), prediction.to_json()
            )


def test_outcomes_go_to_exactly_the_approved_and_explored_applications(
    kafka: KafkaSettings,
) -> None:
    create_topics(kafka)
    # every outcome is due 0.05 event days (0.24 s at 300/s x 60 s) after its application
    labels = LabelPolicy(median_days=0.05, sigma=0.0, unlabelled_fraction=0.0)
    world, scenario = load_world(None, SPEC), load_scenario("stable")
    generator = Generator(SPEC, world, scenario, seed=SEED, labels=labels)
    rows = generator.rows(0, COUNT)
    ids = rows[SPEC.id_column].tolist()
    choice = np.random.default_rng(SEED).choice(3, size=COUNT, p=[0.6, 0.2, 0.2])
    decisions = {i: list(Decision)[c] for i, c in zip(ids, choice, strict=True)}
    decisions[ids[0]] = Decision.APPROVE
    early, late, never = ids[:140], ids[140:280], ids[280:]  # never: no prediction at all

    publish(kafka, {ids[0]: Decision.DECLINE})  # another run's prediction: before the start
    selection = Selection(
        mode=LabelsMode.APPROVED, exploration=EXPLORATION, seed=SEED, decision_timeout_s=5.0
    )
    registry = CollectorRegistry()
    metrics = ProducerMetrics(registry)
    selective = SelectiveOutcomes(kafka, selection, metrics)
    selective.start()
    publish(kafka, {i: decisions[i] for i in early})

    def late_predictions() -> None:  # after their outcomes fell due: those must wait
        time.sleep(LATE_AFTER_S)
        publish(kafka, {i: decisions[i] for i in late})

    thread = threading.Thread(target=late_predictions)
    began = time.monotonic()
    thread.start()
    summary, interrupted = produce_live(
        kafka, generator, 300, metrics, count=COUNT, selective=selective
    )
    thread.join()
    assert not interrupted and summary.failed == 0
    assert time.monotonic() - began > LATE_AFTER_S

    fates = {i: fate_of(decisions[i], i, EXPLORATION, SEED) for i in early + late}
    expected = {i for i, f in fates.items() if f in (Fate.APPROVED, Fate.EXPLORED)}
    explored = {i for i, f in fates.items() if f is Fate.EXPLORED}
    assert ids[0] in expected  # approved in this run, whatever the older prediction said
    assert (len(expected), len(explored)) == (173 + 32, 32)  # and 75 withheld, 20 undecided

    messages = read_all(kafka, kafka.topic(OUTCOMES), len(expected))
    keys = [(m.key() or b"").decode() for m in messages]
    assert len(keys) == len(set(keys)) == len(expected)  # none lost, none twice
    assert set(keys) == expected
    truth = dict(zip(ids, rows[SPEC.target_column], strict=True))
    for message in messages:
        outcome = Outcome.from_json(message.value() or b"")
        assert outcome.label == truth[outcome.application_id]

    assert summary.labels == "approved"
    assert summary.outcomes == len(expected) and summary.explored == len(explored)
    assert summary.withheld == len(fates) - len(expected)
    assert (summary.undecided, summary.awaiting_decision) == (len(never), 0)
    assert set(summary.undecided_examples) <= set(never) and summary.undecided_examples
    assert summary.pending_outcomes == 0
    counted = {
        fate.value: registry.get_sample_value(
            "loanstream_producer_outcome_fates_total", {"fate": fate.value}
        )
        for fate in Fate
    }
    assert counted == {
        "approved": len(expected) - len(explored),
        "explored": len(explored),
        "withheld": summary.withheld,
        "undecided": len(never),
    }
    assert registry.get_sample_value("loanstream_producer_outcomes_awaiting_decision") == 0
