"""The closed loop in event time: one process, no broker, the history's own clock.

Applications are released in event-time order and scored in micro-batches by the scorer's
``score_batch`` with the model serving at that event time; outcomes are released at their label
time, joined by the monitor's ``Joiner`` and fed to the same per-version ``DetectionPipeline``
the Faust monitor runs. A retrain request waits until the window it names holds enough labelled
rows, then the trainer's own training round runs (same MLflow registry, same champion/challenger
rule); its result is known ``training_latency`` later, and a promoted model serves from
``deploy_latency`` after that. A lost round is followed by the shared retry policy.

Nothing here reads the wall clock, and the batches are cut by the data alone (at the next
event of the other kind, at the next timer, and within a span shorter than the training
latency), so the same history and options give the same result on every run at any speed.

Ties: at one instant, timers (a training result, a swap) come first, then applications, then
outcomes, so an outcome is never joined before its own prediction.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from loanstream.contracts import DriftEvent, RetrainRequest
from loanstream.errors import LoanStreamError
from loanstream.models import LoadedModel
from loanstream.retraining import RetryPolicy
from loanstream.spec import FeatureSpec
from loop.models import ModelStore
from loop.timeline import Timeline
from monitor.join import Joiner
from monitor.pipeline import Cooldown, DetectionPipeline, Detections, PipelineConfig, request_for
from monitor.service import KEEP_VERSIONS, version_order
from producer.selective import Fate, LabelsMode, Selection, fate_of
from scorer.core import score_batch, typical_values
from trainer.data import rows_to_train
from trainer.service import Window, rows_needed, union_window

NEVER = np.iinfo(np.int64).max
MS = 1000.0


def moment(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / MS, UTC)


def ms_of(when: datetime) -> int:
    return round(when.timestamp() * MS)


@dataclass(frozen=True)
class Periodic:
    """A retrain every ``every`` of event time on the newest ``window`` of labels."""

    every: timedelta
    window: timedelta


@dataclass(frozen=True)
class LoopOptions:
    """How the loop runs in event time (every time is event time)."""

    training_latency: timedelta = timedelta(hours=12)  # request with its rows -> result known
    deploy_latency: timedelta = timedelta(hours=1)  # promotion -> first application it scores
    batch_size: int = 1000
    selection: Selection = field(default_factory=Selection)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    periodic: Periodic | None = None
    with_reasons: bool = False  # reason codes change no probability; they cost time
    drill_losing_rounds: int = 0  # the first N retrains train on shuffled labels (a drill)

    def check(self) -> None:
        if self.training_latency <= timedelta(0):
            raise LoanStreamError(
                f"the training latency must be positive, got {self.training_latency}"
            )
        if self.deploy_latency < timedelta(0):
            raise LoanStreamError(f"the deploy latency must be >= 0, got {self.deploy_latency}")
        if self.batch_size < 1:
            raise LoanStreamError(f"the batch size must be >= 1, got {self.batch_size}")


@dataclass
class Known:
    """A drift event and the event time (ms) at which its last piece of evidence was known."""

    event: DriftEvent
    known_ms: int


@dataclass
class Attempt:
    """One retrain request through its wait, training and result."""

    number: int
    requests: list[RetrainRequest]  # the one that opened it, then those merged while it waited
    requested_ms: int
    serving_at_request: str
    min_rows: int  # the trainer's, for a training split
    covered: list[str] = field(default_factory=list)  # ids merged into it or asked in flight
    started_ms: int | None = None
    done_ms: int | None = None
    rows: int = 0
    version: str | None = None
    promoted: bool | None = None
    reason: str = ""
    challenger_auc: float | None = None
    champion_auc: float | None = None
    swap_ms: int | None = None
    outcome: str = "waiting for labelled rows"

    @property
    def request(self) -> RetrainRequest:
        return self.requests[0]

    @property
    def window(self) -> Window:
        return union_window(self.requests)

    @property
    def needed(self) -> int:
        return rows_needed(self.requests, self.min_rows)


@dataclass
class Record:
    """What the loop did, position by position."""

    versions: list[str]  # index -> version name
    version_of: np.ndarray  # per application: index into versions
    probability: np.ndarray
    decision: np.ndarray  # per application: "approve" / "review" / "decline"
    costs: dict[str, tuple[float, float, float]]  # per version: its decision costs
    labelled_position: np.ndarray  # application positions joined, in label-time order
    labelled_ms: np.ndarray  # when each was joined (its label time)
    events: list[Known]
    attempts: list[Attempt]
    swaps: list[tuple[int, str, int]]  # (event time ms, version, first position it scored)
    covered_requests: int = 0


class EventTimeLoop:
    """Drives the pure cores of the services over one :class:`Timeline`."""

    def __init__(
        self,
        timeline: Timeline,
        spec: FeatureSpec,
        store: ModelStore,
        pipeline_config: PipelineConfig,
        label_ttl: timedelta,
        options: LoopOptions,
        on_progress: Callable[[int, int, int], None] = lambda done, total, ms: None,
    ) -> None:
        self.timeline = timeline
        self.spec = spec
        self.store = store
        # The engine asks for retrains itself, in the order detections became known (within a
        # slice, the pipelines see predictions before labels); the same trigger and cooldown.
        self.pipeline_config = replace(pipeline_config, retrain_on=frozenset())
        self.retrain_on = pipeline_config.retrain_on
        self.label_ttl = label_ttl
        self.options = options
        self.on_progress = on_progress
        self.calibration_s = 0.0  # building detectors for a new version (wall clock, benchmarks)

    # -- the run -------------------------------------------------------------------------
    def run(self) -> Record:
        self.options.check()
        t, n = self.timeline, len(self.timeline.app_ms)
        first = self.store.load()
        self.models: dict[str, LoadedModel] = {first.version: first}
        self.typical: dict[str, dict[str, Any]] = {first.version: typical_values(first.reference)}
        self.serving = first.version
        self.pipelines: dict[str, DetectionPipeline] = {}
        self.label_ms_by_version: dict[str, list[int]] = {}
        # A label comes weeks after its prediction: keep more of the pending ones parsed than the
        # service does (it parses the rest from its store again, ~20 us each).
        self.joiner = Joiner(
            {}, {}, label_ttl=self.label_ttl, orphan_ttl=timedelta(days=1), parsed_size=200_000
        )
        self.joined = 0
        self.record = Record(
            [first.version],
            np.full(n, -1, dtype=np.int32),
            np.full(n, np.nan),
            np.full(n, "", dtype=object),
            {first.version: decision_costs(first)},
            np.zeros(len(t.outcome_ms), dtype=np.int64),  # at most every outcome is joined
            np.zeros(len(t.outcome_ms), dtype=np.int64),
            [],
            [],
            [],
        )
        self.waiting: Attempt | None = None
        self.flight: Attempt | None = None
        self.swap: tuple[int, str] | None = None
        periodic = self.options.periodic
        self.next_periodic = (
            int(t.app_ms[0]) + _ms(periodic.every) if periodic is not None and n else NEVER
        )
        self.span = _ms(self.options.training_latency)
        self.cooldowns: dict[str, Cooldown] = {}
        self.found: list[tuple[int, int, str, DriftEvent]] = []  # this slice's, to be ordered
        i = j = 0
        n_out = len(t.outcome_ms)
        while i < n or j < n_out:
            t_app = int(t.app_ms[i]) if i < n else NEVER
            t_data = min(t_app, int(t.outcome_ms[j]) if j < n_out else NEVER)
            t_timer = self._next_timer()
            if t_timer <= t_data:
                self._fire(t_timer, data_left=True)
                continue
            end_ms = self._slice_end(t_data, t_timer, i)
            i_end = int(np.searchsorted(t.app_ms, end_ms, "left"))
            j_end = int(np.searchsorted(t.outcome_ms, end_ms, "left"))
            if i_end > i:
                self._score(i, i_end)
            if j_end > j:
                self._label(j, j_end)
            self._ask(end_ms - 1)
            i, j = i_end, j_end
            if i:
                self.on_progress(i, n, int(t.app_ms[i - 1]))
        self.next_periodic = NEVER  # no schedule past the history
        while (timer := self._next_timer()) != NEVER:
            self._fire(timer, data_left=False)
        self.record.labelled_position = self.record.labelled_position[: self.joined]
        self.record.labelled_ms = self.record.labelled_ms[: self.joined]
        return self.record

    def _slice_end(self, start_ms: int, timer_ms: int, i: int) -> int:
        """Where the slice from ``start_ms`` ends (exclusive): at the next timer, within a span
        shorter than the training latency, after at most ``batch_size`` applications. Within a
        slice applications are scored before outcomes are joined (an outcome is never earlier
        than its application), and what was detected is ordered by when it became known."""
        end = min(timer_ms, start_ms + self.span)
        apps = self.timeline.app_ms
        if i + self.options.batch_size < len(apps):
            end = min(end, int(apps[i + self.options.batch_size]))
        return max(end, start_ms + 1)

    # -- applications --------------------------------------------------------------------
    def _score(self, start: int, end: int) -> None:
        version = self.serving
        model = self.models[version]
        apps = self.timeline.applications(start, end, self.spec)
        at = moment(int(self.timeline.app_ms[end - 1]))
        predictions = score_batch(
            model, apps, at, at, self.options.with_reasons, self.typical[version], self.spec
        )
        record = self.record
        record.version_of[start:end] = record.versions.index(version)
        record.probability[start:end] = [p.probability for p in predictions]
        record.decision[start:end] = [p.decision.value for p in predictions]
        for prediction in predictions:
            self.joiner.on_prediction(prediction)
        pipeline = self._pipeline(version)
        if pipeline is not None:
            self._detected(pipeline.on_prediction_batch(predictions), version, "predictions")

    # -- outcomes ------------------------------------------------------------------------
    def _label(self, start: int, end: int) -> None:
        t, record = self.timeline, self.record
        selection = self.options.selection
        outcomes = t.outcomes(start, end, self.spec)
        positions = t.outcome_position[start:end].tolist()
        times = t.outcome_ms[start:end].tolist()
        by_version: dict[str, list[Any]] = {}
        for outcome, position, ms in zip(outcomes, positions, times, strict=True):
            if selection.mode is LabelsMode.APPROVED:
                fate = fate_of(
                    record.decision[position],
                    outcome.application_id,
                    selection.exploration,
                    selection.seed,
                )
                if fate is Fate.WITHHELD:
                    continue
            example = self.joiner.on_outcome(outcome, moment(ms))
            if example is None:
                continue
            record.labelled_position[self.joined] = position
            record.labelled_ms[self.joined] = ms
            self.joined += 1
            version = example.model_version
            by_version.setdefault(version, []).append(example)
            self.label_ms_by_version.setdefault(version, []).append(ms)
        clock = moment(int(t.outcome_ms[end - 1]))
        self.joiner.expire(clock)
        for version, examples in by_version.items():
            pipeline = self._pipeline(version)
            if pipeline is not None:
                self._detected(pipeline.on_labelled_batch(examples), version, "labelled")

    def _pipeline(self, version: str) -> DetectionPipeline | None:
        """The version's pipeline, made on its first event; the monitor keeps the newest
        ``KEEP_VERSIONS`` (and so does this)."""
        pipeline = self.pipelines.get(version)
        if pipeline is None:
            model = self.models.get(version)
            if model is None:
                return None
            began = time.perf_counter()
            pipeline = DetectionPipeline(
                self.store.settings.model_name,
                version,
                model.reference,
                self.spec,
                self.pipeline_config,
            )
            self.calibration_s += time.perf_counter() - began
            self.pipelines[version] = pipeline
            for old in sorted(self.pipelines, key=version_order)[:-KEEP_VERSIONS]:
                del self.pipelines[old]
                self.label_ms_by_version.pop(old, None)  # a new pipeline counts from 0
        return pipeline

    def _detected(self, found: Detections, version: str, stream: str) -> None:
        """Record each event at the event time its evidence was complete."""
        order = 0 if stream == "predictions" else 1
        for event in found.events:
            if stream == "labelled":
                ms = self.label_ms_by_version[version][event.confirmed_position]
            else:
                ms = ms_of(event.confirmed_event_time)
            self.record.events.append(Known(event, ms))
            self.found.append((ms, order, version, event))

    def _ask(self, until_ms: int) -> None:
        """The slice's detections in the order they became known: each may ask for a retrain
        (the trigger and the monitor's cooldown decide, as in ``DetectionPipeline``), and a
        waiting round may have started before it."""
        signals, cooldown = self.retrain_on, self.pipeline_config.cooldown
        for ms, _, version, event in sorted(self.found, key=lambda f: (f[0], f[1])):
            self._try_start(ms)
            gate = self.cooldowns.setdefault(version, Cooldown())
            if event.signal in signals and gate.allows(event.confirmed_event_time, cooldown):
                self._request(request_for(self.store.settings.model_name, event), ms)
        self.found.clear()
        self._try_start(until_ms)

    # -- retraining ----------------------------------------------------------------------
    def _request(self, request: RetrainRequest, at_ms: int) -> None:
        """A request known at ``at_ms``: covered by a round in flight, merged into the one
        waiting, or the one waiting now."""
        if self.flight is not None:
            self.flight.covered.append(request.request_id)
            self.record.covered_requests += 1
            return
        if self.waiting is not None:
            self.waiting.requests.append(request)
            self.waiting.covered.append(request.request_id)
            return
        self.waiting = Attempt(
            len(self.record.attempts) + 1,
            [request],
            at_ms,
            self.serving,
            self.store.settings.min_rows,
        )
        self.record.attempts.append(self.waiting)

    def _window_rows(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """(positions, label times) of the labelled rows whose event time is in ``window``."""
        t = self.timeline
        first = 0 if window.start is None else int(np.searchsorted(t.app_ms, ms_of(window.start)))
        last = len(t.app_ms)
        if window.end is not None:
            last = int(np.searchsorted(t.app_ms, ms_of(window.end)))
        positions = self.record.labelled_position[: self.joined]
        keep = (positions >= first) & (positions < last)
        return positions[keep], self.record.labelled_ms[: self.joined][keep]

    def _try_start(self, now_ms: int) -> None:
        """Start the waiting round if its window held the rows it needs by ``now_ms``: at the
        label that completed them, or at its request if they were there already."""
        waiting = self.waiting
        if waiting is None or self.flight is not None:
            return
        positions, label_ms = self._window_rows(waiting.window)
        known, needed = label_ms <= now_ms, waiting.needed
        if int(known.sum()) < needed:
            return
        positions, label_ms = positions[known], label_ms[known]
        started = max(waiting.requested_ms, int(label_ms[needed - 1]))
        rows = np.sort(positions[label_ms <= started])
        waiting.started_ms, waiting.rows = started, int(rows.size)
        waiting.done_ms = started + _ms(self.options.training_latency)
        waiting.outcome = "training"
        self.waiting, self.flight = None, waiting
        try:
            result = self.store.train(
                self._training_frame(rows),
                {"requests": waiting.request.request_id, "reason": waiting.request.reason[:500]},
                drill=waiting.number <= self.options.drill_losing_rounds,
            )
        except LoanStreamError as err:
            waiting.promoted, waiting.reason = False, f"training failed: {err}"
            return
        waiting.version, waiting.promoted, waiting.reason = (
            result.version.version,
            result.promoted,
            result.reason,
        )
        waiting.challenger_auc = float(result.version.metrics["auc"])
        champion = result.champion_metrics
        waiting.champion_auc = None if champion is None else float(champion["auc"])

    def _training_frame(self, positions: np.ndarray) -> pd.DataFrame:
        """The labelled rows as loan.labelled would give them to the trainer."""
        spec = self.spec
        columns = [spec.id_column, spec.event_time_column, *spec.feature_names]
        frame = self.timeline.replay.iloc[positions][[*columns, spec.target_column]].copy()
        frame[spec.target_column] = pd.to_numeric(frame[spec.target_column]).astype(int)
        return frame.reset_index(drop=True)

    # -- timers --------------------------------------------------------------------------
    def _next_timer(self) -> int:
        flight = self.flight.done_ms if self.flight is not None else None
        swap = self.swap[0] if self.swap is not None else NEVER
        return min(NEVER if flight is None else flight, swap, self.next_periodic)

    def _fire(self, at_ms: int, data_left: bool) -> None:
        """The earliest timer due at ``at_ms``: a swap, a round's result, or a periodic ask."""
        if self.swap is not None and self.swap[0] == at_ms:
            self._swap_in(*self.swap)
        elif self.flight is not None and self.flight.done_ms == at_ms:
            self._finish(self.flight, at_ms, data_left)
        else:
            self._periodic(at_ms)
        self._try_start(at_ms)

    def _finish(self, flight: Attempt, at_ms: int, data_left: bool) -> None:
        self.flight = None
        if flight.promoted and flight.version is not None:
            model = self.store.load(flight.version)
            self.models[model.version] = model
            self.typical[model.version] = typical_values(model.reference)
            self.record.costs[model.version] = decision_costs(model)
            flight.swap_ms = at_ms + _ms(self.options.deploy_latency)
            flight.outcome = "promoted"
            self.swap = (flight.swap_ms, model.version)
            return
        flight.outcome = "kept the champion"
        again = self.options.retry.follow_up(
            flight.request,
            promoted=False,
            drift_stands=self.serving == flight.serving_at_request,
            rows_used=flight.rows,
            min_rows=rows_to_train(self.store.settings.min_rows),
            now=moment(at_ms),
        )
        if again is not None and data_left:
            self._request(again, at_ms)

    def _swap_in(self, at_ms: int, version: str) -> None:
        self.swap = None
        self.serving = version
        if version not in self.record.versions:
            self.record.versions.append(version)
        first = int(np.searchsorted(self.timeline.app_ms, at_ms, "left"))
        self.record.swaps.append((at_ms, version, first))

    def _periodic(self, at_ms: int) -> None:
        periodic = self.options.periodic
        assert periodic is not None
        self.next_periodic = at_ms + _ms(periodic.every)
        when = moment(at_ms)
        self._request(
            RetrainRequest(
                request_id=f"periodic-{when:%Y%m%dT%H%M%S}",
                model_name=self.store.settings.model_name,
                reason=f"scheduled every {periodic.every}",
                requested_by="schedule",
                window_start=when - periodic.window,
                window_end=when,
                requested_at=when,
            ),
            at_ms,
        )


def _ms(delta: timedelta) -> int:
    return round(delta.total_seconds() * MS)


def decision_costs(model: LoadedModel) -> tuple[float, float, float]:
    """(wrong approval, wrong decline, review): the costs the model's decision bands are from."""
    bands = model.bands
    return (bands.wrong_approval, bands.wrong_decline, bands.review)


__all__ = ["EventTimeLoop", "LoopOptions", "Periodic", "Record", "decision_costs"]
