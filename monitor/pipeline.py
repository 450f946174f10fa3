"""The pure detection pipeline: predictions and labelled examples in, drift events out.

It ties the monitor's parts together for one model version: data and prediction drift on every
prediction (no label needed), concept drift and windowed performance on every labelled example,
and the label-free estimate beside the realized figures. Each confirmed detection becomes one
``DriftEvent`` with its evidence; a ``RetrainRequest`` follows unless one was asked for within the
cooldown (event time, so a replay at any speed debounces alike). The Faust service, the report
and the detection benchmark all run this same object; it never touches Kafka.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import methodcaller
from typing import Any

from loanstream.contracts import (
    Decision,
    DriftEvent,
    DriftSignal,
    LabelledExample,
    Prediction,
    RetrainRequest,
)
from loanstream.spec import FeatureSpec
from monitor.datadrift import DataDrift, DataDriftMonitor
from monitor.labeltest import DELTAS, LabelDrift, LabelDriftTest, Regions, null_threshold
from monitor.performance import (
    PerformanceTracker,
    WindowResult,
    epoch_seconds,
    epoch_seconds_many,
)

RING = 1 << 13  # event times remembered per stream, to date a detection's first position
# 2: the label test replaced the segment CUSUMs and error-stream detectors; 3: its regions
# are deciles, their levels learnt without a tolerance; 4: the levels are solved in stages;
# 5: the label test relearns the model's calibration first
STATE_FORMAT = 5
BATCH = 1024  # events per step of the batch methods: the ring dates each of them
APPROVE = Decision.APPROVE  # looked up once: an enum member lookup costs 0.1 us per event


@dataclass(frozen=True)
class PipelineConfig:
    """How sensitive the monitor is and how often it may ask for a new model."""

    drift_window: int = 2000
    drift_step: int = 500
    target_run_length: int = 10_000_000
    min_psi: float = 0.1
    cooldown: timedelta = timedelta(days=14)
    retrain_on: frozenset[DriftSignal] = frozenset(
        {DriftSignal.CONCEPT, DriftSignal.DATA, DriftSignal.PREDICTION, DriftSignal.PERFORMANCE}
    )
    segment: str = "loan_purpose"


@dataclass(frozen=True)
class Detections:
    """What one event caused: usually nothing."""

    events: tuple[DriftEvent, ...] = ()
    requests: tuple[RetrainRequest, ...] = ()
    windows: tuple[WindowResult, ...] = ()


NOTHING = Detections()


class _Times:
    """Event time (epoch seconds) by stream position, for the last ``RING`` positions."""

    def __init__(self, seconds: list[float] | None = None) -> None:
        self.seconds = seconds if seconds is not None else [0.0] * RING

    def put(self, position: int, seconds: float) -> None:
        self.seconds[position % RING] = seconds

    def put_many(self, first: int, seconds: list[float]) -> None:
        """Positions ``first``, ``first + 1``... (at most ``RING`` of them)."""
        start = first % RING
        end = start + len(seconds)
        if end <= RING:
            self.seconds[start:end] = seconds
        else:
            self.seconds[start:] = seconds[: RING - start]
            self.seconds[: end - RING] = seconds[RING - start :]

    def at(self, position: int, fallback: datetime) -> datetime:
        known = self.seconds[position % RING]
        return datetime.fromtimestamp(known, UTC) if known else fallback


@dataclass
class Cooldown:
    """At most one retrain request per ``cooldown`` of event time (counts what it skipped)."""

    last_request: datetime | None = None
    skipped: int = 0

    def allows(self, at: datetime, cooldown: timedelta) -> bool:
        if self.last_request is not None and at - self.last_request < cooldown:
            self.skipped += 1
            return False
        self.last_request = at
        return True


@dataclass
class _Positions:
    predictions: int = -1
    labelled: int = -1
    times: dict[str, _Times] = field(
        default_factory=lambda: {"predictions": _Times(), "labelled": _Times()}
    )


class DetectionPipeline:
    """Everything the monitor watches for one model version."""

    def __init__(
        self,
        model_name: str,
        model_version: str,
        reference: Mapping[str, Any],
        spec: FeatureSpec,
        config: PipelineConfig | None = None,
    ) -> None:
        self.model_name = model_name
        self.model_version = model_version
        self.config = config or PipelineConfig()
        self._segment_name = self.config.segment  # read on every event
        self.spec = spec
        self.data = DataDriftMonitor(
            dict(reference),
            spec,
            size=self.config.drift_window,
            step=self.config.drift_step,
            target_run_length=self.config.target_run_length,
            min_psi=self.config.min_psi,
        )
        self.regions = Regions.from_reference(reference, spec)
        self.labels = LabelDriftTest(
            self.regions, label_threshold(self.regions, reference, self.config.target_run_length)
        )
        # One pipeline sees one model version: a version dimension would only repeat "all".
        self.performance = PerformanceTracker(segment=self.config.segment, versions=False)
        self.cooldown = Cooldown()
        self.positions = _Positions()
        self.events: list[DriftEvent] = []

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state: a restored pipeline carries on exactly where this one stands."""
        return {
            "format": STATE_FORMAT,
            "model": [self.model_name, self.model_version],
            "data": self.data.to_dict(),
            "labels": self.labels.to_dict(),
            "performance": self.performance.to_dict(),
            "cooldown": {
                "last_request": self.cooldown.last_request.isoformat()
                if self.cooldown.last_request
                else None,
                "skipped": self.cooldown.skipped,
            },
            "positions": {
                "predictions": self.positions.predictions,
                "labelled": self.positions.labelled,
                "times": {k: v.seconds for k, v in self.positions.times.items()},
            },
        }

    @classmethod
    def from_dict(
        cls,
        state: Mapping[str, Any],
        reference: Mapping[str, Any],
        spec: FeatureSpec,
        config: PipelineConfig | None = None,
    ) -> DetectionPipeline:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(
                f"pipeline state format must be {STATE_FORMAT}, got {state.get('format')!r}"
            )
        name, version = state["model"]
        pipeline = cls(name, version, reference, spec, config)
        pipeline.data = DataDriftMonitor.from_dict(state["data"], dict(reference), spec)
        pipeline.labels = LabelDriftTest.from_dict(state["labels"], pipeline.regions)
        pipeline.performance = PerformanceTracker.from_dict(state["performance"])
        last = state["cooldown"]["last_request"]
        pipeline.cooldown = Cooldown(
            datetime.fromisoformat(last) if last else None, int(state["cooldown"]["skipped"])
        )
        positions = state["positions"]
        pipeline.positions = _Positions(
            int(positions["predictions"]),
            int(positions["labelled"]),
            {k: _Times([float(x) for x in v]) for k, v in positions["times"].items()},
        )
        return pipeline

    def on_prediction(self, prediction: Prediction) -> Detections:
        """Data and prediction drift, and the label-free estimate, from one scored application."""
        fields = vars(prediction)  # faster than attributes on a pydantic model (see join.py)
        positions = self.positions
        position = positions.predictions = positions.predictions + 1
        seconds = epoch_seconds(fields["event_time"])
        positions.times["predictions"].put(position, seconds)
        features, probability = fields["features"], fields["probability"]
        segment = features.get(self._segment_name)
        self.performance.update_estimate(
            probability,
            fields["decision"] == APPROVE,
            seconds,
            fields["model_version"],
            segment if isinstance(segment, str) else None,
        )
        drifts = self.data.update(features, probability)
        if not drifts:
            return NOTHING
        return self._publish([self._data_event(d, prediction.event_time) for d in drifts])

    def on_labelled(self, example: LabelledExample) -> Detections:
        """Windowed performance and concept drift from one prediction joined with its label."""
        fields = vars(example)
        positions = self.positions
        position = positions.labelled = positions.labelled + 1
        seconds = epoch_seconds(fields["event_time"])
        positions.times["labelled"].put(position, seconds)
        segment = fields["features"].get(self._segment_name)
        if not isinstance(segment, str):
            segment = None
        p, y = fields["probability"], fields["label"]
        windows = self.performance.update(
            p, y, fields["decision"] == APPROVE, seconds, fields["model_version"], segment
        )
        changes = self.labels.update([p], [y], [fields["features"]], position, [seconds])
        if not changes:
            return Detections(windows=tuple(windows)) if windows else NOTHING
        events = [self._label_event(c, example.event_time) for c in changes]
        published = self._publish(events)
        return Detections(published.events, published.requests, tuple(windows))

    def on_prediction_batch(self, predictions: Sequence[Prediction]) -> Detections:
        """`on_prediction` for many predictions in arrival order, for less per event: the same
        state and the same detections, together."""
        if len(predictions) > BATCH:
            return _together([self.on_prediction_batch(c) for c in _chunks(predictions)])
        if not predictions:
            return NOTHING
        fields = [vars(p) for p in predictions]  # see on_prediction
        features = [f["features"] for f in fields]
        probabilities = [f["probability"] for f in fields]
        seconds = epoch_seconds_many([f["event_time"] for f in fields])
        self.performance.update_estimate_batch(
            probabilities,
            [f["decision"] == APPROVE for f in fields],
            seconds,
            [f["model_version"] for f in fields],
            self._segments(features),
        )
        positions = self.positions
        positions.times["predictions"].put_many(positions.predictions + 1, seconds)
        positions.predictions += len(predictions)
        found = self.data.update_batch(features, probabilities)
        if not found:
            return NOTHING
        return self._publish(
            [self._data_event(d, predictions[i].event_time) for i, drifts in found for d in drifts]
        )

    def on_labelled_batch(self, examples: Sequence[LabelledExample]) -> Detections:
        """`on_labelled` for many examples in arrival order (see `on_prediction_batch`); a batch
        with an invalid probability or label changes nothing."""
        if len(examples) > BATCH:
            return _together([self.on_labelled_batch(c) for c in _chunks(examples)])
        if not examples:
            return NOTHING
        fields = [vars(x) for x in examples]
        p, y = [f["probability"] for f in fields], [f["label"] for f in fields]
        seconds = epoch_seconds_many([f["event_time"] for f in fields])
        segments = self._segments([f["features"] for f in fields])
        windows = self.performance.update_batch(
            p,
            y,
            [f["decision"] == APPROVE for f in fields],
            seconds,
            [f["model_version"] for f in fields],
            segments,
        )
        positions = self.positions
        first = positions.labelled + 1
        positions.times["labelled"].put_many(first, seconds)
        positions.labelled += len(examples)
        changes = self.labels.update(p, y, [f["features"] for f in fields], first, seconds)
        events = [
            self._label_event(c, examples[c.confirmed_position - first].event_time)
            for c in changes
        ]
        if not events:
            return Detections(windows=tuple(windows)) if windows else NOTHING
        published = self._publish(events)
        return Detections(published.events, published.requests, tuple(windows))

    def _segments(self, features: Sequence[Mapping[str, Any]]) -> list[str | None]:
        values = map(methodcaller("get", self._segment_name), features)
        return [s if isinstance(s, str) else None for s in values]

    def _publish(self, events: list[DriftEvent]) -> Detections:
        self.events.extend(events)
        requests = []
        for event in events:
            if event.signal in self.config.retrain_on and self.cooldown.allows(
                event.confirmed_event_time, self.config.cooldown
            ):
                requests.append(request_for(self.model_name, event))
        return Detections(tuple(events), tuple(requests))

    def _event(
        self,
        signal: DriftSignal,
        subject: str,
        first_event_time: datetime,
        confirmed_event_time: datetime,
        **evidence: Any,
    ) -> DriftEvent:
        """One DriftEvent of this model version. The same detection (signal, subject, position)
        gets the same id, so a replayed one is recognised downstream."""
        key = (
            f"{self.model_name}:{self.model_version}:{signal.value}:{subject}:"
            f"{evidence['confirmed_position']}"
        )
        return DriftEvent(
            event_id=f"drift-{hashlib.sha256(key.encode()).hexdigest()[:20]}",
            signal=signal,
            first_event_time=first_event_time,
            confirmed_event_time=confirmed_event_time,
            model_name=self.model_name,
            model_version=self.model_version,
            **evidence,
        )

    def _data_event(self, drift: DataDrift, now: datetime) -> DriftEvent:
        signal = DriftSignal.PREDICTION if drift.signal == "prediction" else DriftSignal.DATA
        times = self.positions.times["predictions"]
        return self._event(
            signal,
            drift.feature,
            times.at(drift.first_position, now),
            times.at(drift.confirmed_position, now),
            detector=f"psi[{drift.band}]",
            feature=None if signal == DriftSignal.PREDICTION else drift.feature,
            statistic=drift.statistic,
            threshold=drift.threshold,
            p_value=min(1.0, drift.p_value),
            window_size=drift.window_size,
            first_position=drift.first_position,
            confirmed_position=drift.confirmed_position,
        )

    def _label_event(self, drift: LabelDrift, now: datetime) -> DriftEvent:
        """Labels that stopped keeping the model's promise in one region (everyone: "all");
        ``statistic`` is the CUSUM of log-likelihood ratios that crossed, in nats."""
        return self._event(
            DriftSignal.CONCEPT,
            drift.region,
            datetime.fromtimestamp(drift.first_seconds, UTC),
            now,
            detector=f"label-cusum[{drift.shift:+g}]",
            feature=None if drift.region == "all" else drift.region,
            statistic=drift.statistic,
            threshold=drift.threshold,
            window_size=drift.events,
            first_position=drift.first_position,
            confirmed_position=drift.confirmed_position,
            expected_rate=_rate(drift.expected_rate),
            observed_rate=_rate(drift.observed_rate),
        )


def label_threshold(
    regions: Regions, reference: Mapping[str, Any], target_run_length: int
) -> float:
    """The label test's threshold for this model: simulated under its reference predictions,
    or, for a reference without them, Lorden's bound over every region and shift."""
    quantiles = (reference.get("prediction") or {}).get("quantiles")
    if quantiles:
        return null_threshold(regions, quantiles, target_run_length)
    return math.log(target_run_length * len(regions.names) * 2 * len(DELTAS))


def _rate(x: float) -> float | None:
    return None if math.isnan(x) else min(1.0, max(0.0, x))


def request_for(model_name: str, event: DriftEvent) -> RetrainRequest:
    """The retrain request a confirmed drift asks for: its window starts at the first evidence."""
    subject = f" of {event.feature}" if event.feature else ""
    return RetrainRequest(
        request_id=f"retrain-{event.event_id}",
        model_name=model_name,
        reason=f"{event.signal.value} drift{subject} confirmed by {event.detector}",
        requested_by="monitor",
        window_start=event.first_event_time,
        drift_event_id=event.event_id,
        drift_confirmed_at=event.confirmed_event_time,
        requested_at=event.detected_at,
    )


def _chunks(items: Sequence[Any]) -> list[Sequence[Any]]:
    return [items[i : i + BATCH] for i in range(0, len(items), BATCH)]


def _together(parts: list[Detections]) -> Detections:
    return Detections(
        tuple(e for d in parts for e in d.events),
        tuple(r for d in parts for r in d.requests),
        tuple(w for d in parts for w in d.windows),
    )


__all__ = ["Cooldown", "DetectionPipeline", "Detections", "PipelineConfig", "request_for"]
