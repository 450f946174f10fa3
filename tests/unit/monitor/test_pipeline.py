"""The whole pure detection pipeline on seeded streams from the producer's world.

The model is trained on stable data; the streams then drift as the producer's scenarios say,
from application 20,000 on. Positions are exact for these seeds.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import islice

import pytest

from loanstream.contracts import DriftEvent, DriftSignal, RetrainRequest
from loanstream.models import LoadedModel
from monitor.pipeline import DetectionPipeline, Detections
from monitor.simulate import Scored, scored_stream
from tests.scorer_model import small_model
from tests.trainer_data import history

ONSET = 20_000


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    return small_model(seed=3)


def stream(model: LoadedModel, scenario: str, rows: int, seed: int = 21) -> Iterator[Scored]:
    frame, spec = history(rows, seed=seed, scenario=scenario)
    return scored_stream(model, frame, spec)


def run(
    pipeline: DetectionPipeline, scored: Iterator[Scored], chunk: int = 1000
) -> tuple[list[DriftEvent], list[RetrainRequest]]:
    """Every application's prediction, then its label, in chunks through the batch methods
    (the same detections as one by one: see the batch test below, and the services' path)."""
    events: list[DriftEvent] = []
    requests: list[RetrainRequest] = []
    while part := list(islice(scored, chunk)):
        for detections in (
            pipeline.on_prediction_batch([s.prediction for s in part]),
            pipeline.on_labelled_batch([s.labelled for s in part if s.labelled is not None]),
        ):
            events.extend(detections.events)
            requests.extend(detections.requests)
    return events, requests


def fresh(model: LoadedModel) -> DetectionPipeline:
    _, spec = history(1)
    return DetectionPipeline(model.name, model.version, model.reference, spec)


def test_a_million_stable_applications_raise_no_drift(model: LoadedModel) -> None:
    pipeline = fresh(model)
    events, requests = run(pipeline, stream(model, "stable", 1_000_000, seed=5))
    assert events == [] and requests == []
    assert pipeline.positions.labelled == 999_999


def test_an_abrupt_concept_drift_is_confirmed_within_500_labelled_events(
    model: LoadedModel,
) -> None:
    events, requests = run(fresh(model), stream(model, "concept-drift", 30_000))
    # once, by the label test, in the region it hits hardest (debt consolidation)
    assert [(e.signal, e.detector, e.first_position, e.confirmed_position) for e in events] == [
        (DriftSignal.CONCEPT, "label-cusum[-2]", 20_006, 20_074),
    ]
    first = events[0]
    assert first.feature == "loan_purpose=debt_consolidation"
    assert first.window_size == 39 and first.statistic >= first.threshold
    # its effect: 13 of 39 repaid, where the model (as recalibrated by the test) promised 74%
    assert first.observed_rate == pytest.approx(13 / 39)
    assert first.expected_rate == pytest.approx(0.7440, abs=1e-4)
    assert all(e.confirmed_position - ONSET <= 500 for e in events)
    (request,) = requests
    assert request.drift_event_id == events[0].event_id
    assert request.window_start == events[0].first_event_time


def test_an_income_shift_raises_data_drift_for_income_and_no_other_feature(
    model: LoadedModel,
) -> None:
    events, requests = run(fresh(model), stream(model, "income-shift", 30_000))
    data = [(e.feature, e.first_position, e.confirmed_position) for e in events]
    assert data == [("income", 21_999, 22_499)]
    assert events[0].confirmed_position - ONSET <= 5_000
    assert events[0].p_value is not None and events[0].statistic >= events[0].threshold
    assert len(requests) == 1


def test_retrain_requests_are_debounced_by_the_cooldown(model: LoadedModel) -> None:
    events, requests = run(fresh(model), stream(model, "covariate-shift+concept-drift", 30_000))
    assert {e.signal for e in events} >= {DriftSignal.CONCEPT, DriftSignal.DATA}
    assert len(requests) == 1  # all within 14 days of event time of the first
    assert len(events) > len(requests)


def test_a_restart_in_the_middle_of_a_drift_neither_misses_it_nor_fires_twice(
    model: LoadedModel,
) -> None:
    scored = list(stream(model, "concept-drift", 30_000))
    straight, _ = run(fresh(model), iter(scored))
    first = fresh(model)
    before, _ = run(first, iter(scored[: ONSET + 60]))  # the label test's run is under way here
    state = json.loads(json.dumps(first.to_dict()))  # as it goes through the changelog
    _, spec = history(1)
    restored = DetectionPipeline.from_dict(state, model.reference, spec)
    after, _ = run(restored, iter(scored[ONSET + 60 :]))
    assert before == []
    assert [e.event_id for e in after] == [e.event_id for e in straight]
    assert [e.confirmed_position for e in after] == [20_074]


def test_performance_is_tracked_overall_and_per_segment_not_per_version(
    model: LoadedModel,
) -> None:
    pipeline = fresh(model)  # one pipeline serves one model version: that scope would repeat "all"
    run(pipeline, stream(model, "stable", 1_000))
    scopes = pipeline.performance.scopes
    assert scopes[0] == "all" and len(scopes) > 2
    assert all(scope.startswith("loan_purpose=") for scope in scopes[1:])


def test_batches_give_the_same_detections_and_state_as_events_one_by_one(
    model: LoadedModel,
) -> None:
    """The service hands the pipeline a batch at a time: its predictions, then the examples they
    and the batch's outcomes completed. Fed that way, or one by one in the same order, the
    pipeline finds the same events at the same positions and ends in the same state."""
    scored = list(stream(model, "covariate-shift+concept-drift", 30_000))
    one, batched = fresh(model), fresh(model)
    found: dict[str, list[Detections]] = {"one": [], "batched": []}
    start, sizes = 0, [1, 999, 1_500, 37, 1_000]  # 1,500 is past the pipeline's own step
    while start < len(scored):
        chunk = scored[start : start + sizes[start % len(sizes)]]
        start += len(chunk)
        predictions = [s.prediction for s in chunk]
        examples = [s.labelled for s in chunk if s.labelled is not None]
        found["one"] += [one.on_prediction(p) for p in predictions]
        found["one"] += [one.on_labelled(x) for x in examples]
        found["batched"] += [
            batched.on_prediction_batch(predictions),
            batched.on_labelled_batch(examples),
        ]
    # all but the wall-clock time each was made at
    events = {
        k: [e.model_dump(exclude={"detected_at"}) for d in v for e in d.events]
        for k, v in found.items()
    }
    requests = {
        k: [r.model_dump(exclude={"requested_at"}) for d in v for r in d.requests]
        for k, v in found.items()
    }
    windows = {k: [w for d in v for w in d.windows] for k, v in found.items()}
    assert events["batched"] == events["one"]
    assert {e["signal"] for e in events["one"]} >= {DriftSignal.CONCEPT, DriftSignal.DATA}
    assert requests["batched"] == requests["one"] and len(requests["one"]) == 1
    assert windows["batched"] == windows["one"] and len(windows["one"]) > 20
    assert json.dumps(batched.to_dict()) == json.dumps(one.to_dict())
    assert batched.on_prediction_batch([]) == batched.on_labelled_batch([]) == Detections()


def test_a_batch_with_an_invalid_label_is_refused_before_any_state_changes(
    model: LoadedModel,
) -> None:
    scored = [s for s in stream(model, "stable", 400) if s.labelled is not None]
    pipeline = fresh(model)
    pipeline.on_labelled_batch([s.labelled for s in scored[:200]])  # type: ignore[misc]
    before = json.dumps(pipeline.to_dict())
    examples = [s.labelled for s in scored[200:]]
    bad = examples[50].model_copy(update={"label": 3})  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="label must be 0 or 1, got 3"):
        pipeline.on_labelled_batch([*examples[:50], bad, *examples[51:]])  # type: ignore[list-item]
    assert json.dumps(pipeline.to_dict()) == before
