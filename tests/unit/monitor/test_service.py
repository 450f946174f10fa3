"""The monitor's per-message core without Faust: what it sends for each message, and its counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry

from loanstream.config import KafkaSettings
from loanstream.contracts import DeadLetter, Decision, LabelledExample, Outcome, Prediction
from loanstream.spec import load_spec
from loanstream.topics import DEAD_LETTER, LABELLED
from monitor.metrics import MonitorMetrics
from monitor.pipeline import NOTHING, Detections
from monitor.service import MonitorCore
from monitor.settings import MonitorSettings

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def core(data_dir: Path) -> MonitorCore:
    """No reference is known: messages are joined and sent, not monitored (no calibration)."""
    metrics = MonitorMetrics(CollectorRegistry())
    settings = MonitorSettings(data_dir=data_dir)
    kafka = KafkaSettings(topic_prefix="")
    return MonitorCore(kafka, settings, load_spec(), metrics, {}, {}, {})


def messages(c: MonitorCore, kind: str, result: str) -> float | None:
    labels = {"kind": kind, "result": result}
    return c.metrics.registry.get_sample_value("loanstream_monitor_messages_total", labels)


def test_a_joined_pair_goes_out_as_the_labelled_contract_and_every_message_is_counted(
    tmp_path: Path,
) -> None:
    c = core(tmp_path)
    prediction = Prediction(
        application_id="a1",
        event_time=T0,
        probability=0.8,
        decision=Decision.APPROVE,
        model_name="m",
        model_version="1",
        features={"income": 50_000.0, "loan_purpose": "car"},
        received_at=T0,
        scored_at=T0,
    )
    outcome = Outcome(application_id="a1", label=1, outcome_time=T0 + timedelta(days=30))
    assert messages(c, "prediction", "ok") == 0.0  # every series shows from the start
    assert c.on_prediction(prediction.to_json(), ("loan.predictions", 0, 5)) == []
    ((topic, key, value, timestamp),) = c.on_outcome(outcome.to_json(), ("loan.outcomes", 0, 7))
    expected = LabelledExample(
        application_id="a1",
        event_time=T0,
        outcome_time=T0 + timedelta(days=30),
        features={"income": 50_000.0, "loan_purpose": "car"},
        probability=0.8,
        decision=Decision.APPROVE,
        model_name="m",
        model_version="1",
        label=1,
    )
    assert (topic, key, value) == (LABELLED, b"a1", expected.to_json())
    assert timestamp == (T0 + timedelta(days=30)).timestamp()
    ((topic, _, letter, _),) = c.on_outcome(b'{"application_id": "a2"}', ("loan.outcomes", 1, 9))
    assert topic == DEAD_LETTER
    assert DeadLetter.from_json(letter).reason == "invalid_outcome"
    counts = [messages(c, k, r) for k in ("prediction", "outcome") for r in ("ok", "dead_letter")]
    assert counts == [1.0, 0.0, 1.0, 1.0]


def test_a_record_the_monitor_fails_on_is_dead_lettered_as_internal_with_its_position(
    tmp_path: Path,
) -> None:
    c = core(tmp_path)
    err = KeyError("segment")
    topic, key, value, _ = c.dead_letter_of(
        b'{"application_id": "a3"}', ("loan.predictions", 2, 41), "prediction", "internal", err
    )
    letter = DeadLetter.from_json(value)
    assert (topic, key) == (DEAD_LETTER, None)
    assert (letter.reason, letter.source_topic, letter.partition, letter.offset) == (
        "internal",
        "loan.predictions",
        2,
        41,
    )
    assert letter.error == "KeyError: 'segment'"
    assert letter.service == "monitor"
    assert messages(c, "prediction", "dead_letter") == 1.0


def labelled_total(c: MonitorCore, population: str) -> float | None:
    return c.metrics.registry.get_sample_value(
        "loanstream_monitor_labelled_total", {"population": population}
    )


def test_labelled_examples_are_counted_by_the_population_their_outcome_stands_on(
    tmp_path: Path,
) -> None:
    c = core(tmp_path)
    assert (labelled_total(c, "approved"), labelled_total(c, "explored")) == (0.0, 0.0)
    decisions = [Decision.APPROVE, Decision.REVIEW, Decision.APPROVE, Decision.DECLINE]
    for i, decision in enumerate(decisions):
        prediction = Prediction(
            application_id=f"a{i}",
            event_time=T0,
            probability=0.7,
            decision=decision,
            model_name="m",
            model_version="1",
            features={"income": 50_000.0},
            received_at=T0,
            scored_at=T0,
        )
        outcome = Outcome(application_id=f"a{i}", label=1, outcome_time=T0 + timedelta(days=9))
        if i % 2:  # the outcome first: joined when the prediction comes
            assert c.on_outcome(outcome.to_json(), ("loan.outcomes", 0, i)) == []
            assert len(c.on_prediction(prediction.to_json(), ("loan.predictions", 0, i))) == 1
        else:
            assert c.on_prediction(prediction.to_json(), ("loan.predictions", 0, i)) == []
            assert len(c.on_outcome(outcome.to_json(), ("loan.outcomes", 0, i))) == 1
    assert (labelled_total(c, "approved"), labelled_total(c, "explored")) == (2.0, 2.0)
    c.on_outcome(outcome.to_json(), ("loan.outcomes", 0, 9))  # a duplicate is not labelled again
    assert labelled_total(c, "explored") == 2.0


class RecordingPipeline:
    """Stands in for a model version's detection pipeline: which predictions reached it."""

    def __init__(self) -> None:
        self.predictions: list[str] = []

    def on_prediction_batch(self, predictions: list[Prediction]) -> Detections:
        self.predictions += [p.application_id for p in predictions]
        return NOTHING

    def on_labelled_batch(self, examples: list[LabelledExample]) -> Detections:
        return NOTHING


def prediction(application_id: str, version: str = "1") -> bytes:
    return Prediction(
        application_id=application_id,
        event_time=T0,
        probability=0.7,
        decision=Decision.APPROVE,
        model_name="m",
        model_version=version,
        features={"income": 50_000.0},
        received_at=T0,
        scored_at=T0,
    ).to_json()


def test_a_repeated_prediction_reaches_the_drift_detectors_once(tmp_path: Path) -> None:
    c = core(tmp_path)
    pipeline = RecordingPipeline()
    c.pipelines["1"] = pipeline  # type: ignore[assignment]

    def outcome(application_id: str) -> bytes:
        return Outcome(
            application_id=application_id, label=1, outcome_time=T0 + timedelta(days=30)
        ).to_json()

    where = ("loan.predictions", 0, 1)
    c.on_prediction(prediction("a1"), where)
    c.on_prediction(prediction("a1"), where)  # again while it waits for its label
    assert len(c.on_outcome(outcome("a1"), ("loan.outcomes", 0, 1))) == 1
    c.on_prediction(prediction("a1"), where)  # again after the join
    c.on_outcome(outcome("a2"), ("loan.outcomes", 0, 2))  # an outcome before its prediction
    assert len(c.on_prediction(prediction("a2"), where)) == 1  # joined: not a repeat
    assert pipeline.predictions == ["a1", "a2"]
    assert c.joiner.duplicates == 2


class FailingPipeline(RecordingPipeline):
    """A pipeline with a bug: it fails on every labelled batch."""

    def on_labelled_batch(self, examples: list[LabelledExample]) -> Detections:
        raise ZeroDivisionError("a bug")


def test_a_batch_dead_letters_its_bad_records_and_a_failing_pipeline_loses_no_label(
    tmp_path: Path,
) -> None:
    c = core(tmp_path)
    pipeline = FailingPipeline()
    c.pipelines["1"] = pipeline  # type: ignore[assignment]

    outcomes = [
        Outcome(application_id=f"a{i}", label=1, outcome_time=T0 + timedelta(days=30)).to_json()
        for i in range(4)
    ]
    early = c.on_outcomes([(outcomes[0], ("loan.outcomes", 0, 0))])  # before its prediction
    assert early == []
    batch = [prediction("a0"), b"{not json", prediction("a1"), prediction("a2", version="9")]
    sent = c.on_predictions([(v, ("loan.predictions", 3, 10 + i)) for i, v in enumerate(batch)])
    letters = [DeadLetter.from_json(m[2]) for m in sent if m[0] == DEAD_LETTER]
    assert [(x.reason, x.partition, x.offset) for x in letters] == [
        ("invalid_prediction", 3, 11),
        ("internal", 3, 10),  # a0 completed its pair, and the pipeline failed on its label
    ]
    assert [m[1] for m in sent if m[0] == LABELLED] == [b"a0"]  # sent all the same
    assert pipeline.predictions == ["a0", "a1"]  # version 9 has no reference: not monitored
    sent = c.on_outcomes([(v, ("loan.outcomes", 0, 1 + i)) for i, v in enumerate(outcomes[1:])])
    assert sorted(m[1] or b"" for m in sent if m[0] == LABELLED) == [b"a1", b"a2"]
    letters = [DeadLetter.from_json(m[2]) for m in sent if m[0] == DEAD_LETTER]
    assert [(x.reason, x.source_topic, x.offset, x.error) for x in letters] == [
        ("internal", "loan.outcomes", 1, "ZeroDivisionError: a bug")  # a1's, version 1's batch
    ]
    assert c.joiner.counts().orphans_waiting == 1  # a3: its prediction has not come
    unmonitored = c.metrics.registry.get_sample_value(
        "loanstream_monitor_unmonitored_total", {"kind": "prediction"}
    )
    assert unmonitored == 1.0


def test_implausible_times_are_dead_lettered_and_cannot_move_the_label_clock(
    tmp_path: Path,
) -> None:
    c = core(tmp_path)
    now = datetime.now(UTC)
    waiting = Prediction(
        application_id="w1",
        event_time=now - timedelta(days=1),
        probability=0.8,
        decision=Decision.APPROVE,
        model_name="m",
        model_version="1",
        features={},
        received_at=now,
        scored_at=now,
    )
    assert c.on_prediction(waiting.to_json(), ("loan.predictions", 0, 1)) == []
    c.on_outcome(
        Outcome(application_id="x0", label=1, outcome_time=now).to_json(), ("loan.outcomes", 0, 0)
    )
    no_date = Outcome(application_id="x1", label=1, outcome_time=datetime(9999, 12, 31, tzinfo=UTC))
    ((topic, _, value, _),) = c.on_outcome(no_date.to_json(), ("loan.outcomes", 0, 1))
    letter = DeadLetter.from_json(value)
    assert topic == DEAD_LETTER and letter.reason == "time_out_of_bounds"
    assert "9999-12-31" in letter.error
    future = waiting.model_copy(
        update={"application_id": "f1", "event_time": now + timedelta(days=30)}
    )
    ((_, _, value, _),) = c.on_prediction(future.to_json(), ("loan.predictions", 0, 2))
    assert DeadLetter.from_json(value).reason == "time_out_of_bounds"
    c.tick(now)
    assert "w1" in c.joiner.predictions  # still waiting for its label
    early = Outcome(application_id="w1", label=0, outcome_time=now - timedelta(days=2))
    ((topic, _, value, _),) = c.on_outcome(early.to_json(), ("loan.outcomes", 0, 2))
    assert DeadLetter.from_json(value).reason == "outcome_before_application"


def test_one_outcome_far_ahead_moves_the_label_clock_by_a_bounded_step() -> None:
    from monitor.join import Joiner

    joiner = Joiner({}, {}, timedelta(days=30), timedelta(hours=1), clock_step=timedelta(days=1))
    joiner.on_outcome(Outcome(application_id="a", label=1, outcome_time=T0), T0)
    far = Outcome(application_id="b", label=1, outcome_time=T0 + timedelta(days=400))
    joiner.on_outcome(far, T0)
    assert joiner.label_clock == T0 + timedelta(days=1)
