"""A labelled history as the event-time engine replays it: the rows checked against the spec and
cut by event time into the part that trains the first champion and the part replayed, the
applications as the scorer would receive them, and when each outcome becomes known.

An outcome's label time comes from a label-time column (``outcome_time`` by default, as
``loanstream generate`` writes it), or a fixed ``--label-delay``, or the producer's lognormal
delay model with a seed. A label time before its application's event time is refused: nothing
in the history may be known before it happened. Times are kept in milliseconds, as the replay
stamps its Kafka messages, so both drivers see the same clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from loanstream.contracts import LoanApplication, Outcome
from loanstream.errors import LoanStreamError
from loanstream.frames import application_messages, check_frame
from loanstream.spec import FeatureSpec
from loanstream.validation import ApplicationValidator
from producer.emitter import outcome_messages
from producer.outcomes import OUTCOME_TIME, LabelPolicy

LABEL_TIME = "_label_time"


@dataclass(frozen=True)
class LabelSource:
    """Where label times come from: a column, a fixed delay, or the delay model (seeded)."""

    column: str | None = None
    delay: timedelta | None = None
    model: LabelPolicy | None = None
    seed: int = 0

    def describe(self) -> str:
        if self.delay is not None:
            return f"fixed delay of {self.delay}"
        if self.model is not None:
            return f"lognormal delay, median {self.model.median_days:g} d (seed {self.seed})"
        return f"column {self.column or OUTCOME_TIME}"


@dataclass(frozen=True)
class Timeline:
    """The replayed part in event-time order (index = application position). Applications and
    outcomes are parsed a batch at a time, as the services parse what they consume, so a history
    of millions of rows is held once, as its table."""

    train: pd.DataFrame  # the oldest rows: the first champion learns from them
    replay: pd.DataFrame  # checked rows, event-time order; LABEL_TIME holds NaT if never known
    app_ms: np.ndarray  # event time of each replayed application (ms)
    outcome_ms: np.ndarray  # label time of each outcome, in the order they become known
    outcome_position: np.ndarray  # the application position of each outcome, in that order
    rejected: int  # rows of the file that failed the spec
    validator: ApplicationValidator
    messages: MessageCache
    labels: np.ndarray  # each replayed row's label (0/1; -1 where the file has none)
    ids: np.ndarray  # each replayed row's application id (converted once: a string column
    # turned into an array per batch cost the run time in proportion to the history's length)

    def position_at(self, ms: float) -> int:
        """The last application at or before ``ms`` of event time (-1: none yet)."""
        return int(np.searchsorted(self.app_ms, ms, "right")) - 1

    def applications(self, start: int, end: int, spec: FeatureSpec) -> list[LoanApplication]:
        """Applications ``start``..``end - 1`` as the scorer receives them: the replay's
        messages, validated."""
        values = self.messages.get("applications", start, end, lambda a, b: self._apps(a, b, spec))
        return [self.validator.parse(value) for value in values]

    def outcomes(self, start: int, end: int, spec: FeatureSpec) -> list[Outcome]:
        """Outcomes ``start``..``end - 1`` (in label-time order): what the replay sends, built
        from the table (an outcome is three plain fields; a test holds them equal to the
        parsed messages)."""
        rows = self.outcome_position[start:end]
        ids = self.ids[rows].tolist()
        labels = self.labels[rows].tolist()
        stamps = self.outcome_ms[start:end].tolist()
        return [
            Outcome.trusted(
                application_id=key, label=label, outcome_time=datetime.fromtimestamp(ms / 1000, UTC)
            )
            for key, label, ms in zip(ids, labels, stamps, strict=True)
        ]

    def outcome_messages(self, start: int, end: int, spec: FeatureSpec) -> list[Outcome]:
        """The same outcomes parsed from the replay's own messages (slower; for checks)."""
        values = self.messages.get("outcomes", start, end, lambda a, b: self._outs(a, b, spec))
        return [Outcome.from_json(value) for value in values]

    def _apps(self, start: int, end: int, spec: FeatureSpec) -> list[bytes]:
        return [value for _, value, _ in application_messages(self.replay.iloc[start:end], spec)]

    def _outs(self, start: int, end: int, spec: FeatureSpec) -> list[bytes]:
        rows = self.replay.iloc[self.outcome_position[start:end]]
        return [value for _, value, _ in outcome_messages(rows, spec, LABEL_TIME)[0]]


class MessageCache:
    """The messages of one stretch of ``CHUNK`` rows per stream, made at once (the replay's
    own vectorised code), so a small batch costs no table slicing."""

    CHUNK = 20_000

    def __init__(self) -> None:
        self._chunks: dict[str, tuple[int, list[bytes]]] = {}

    def get(
        self, stream: str, start: int, end: int, make: Callable[[int, int], list[bytes]]
    ) -> list[bytes]:
        out: list[bytes] = []
        while start < end:
            first = start - start % self.CHUNK
            held = self._chunks.get(stream)
            if held is None or held[0] != first:
                held = self._chunks[stream] = (first, make(first, first + self.CHUNK))
            stop = min(end, first + self.CHUNK)
            out += held[1][start - first : stop - first]
            start = stop
        return out


def label_times(frame: pd.DataFrame, spec: FeatureSpec, source: LabelSource) -> pd.Series:
    """When each row's outcome is known (NaT: never, or no label in the file)."""
    times = pd.to_datetime(frame[spec.event_time_column], utc=True)
    labels = pd.to_numeric(frame[spec.target_column], errors="coerce")
    if source.delay is not None:
        known = times + source.delay
    elif source.model is not None:
        delays = source.model.delays_ns(np.random.default_rng(source.seed), len(frame))
        known = times + pd.to_timedelta(np.where(delays < 0, 0, delays), unit="ns")
        known = known.where(delays >= 0)
    else:
        column = source.column or OUTCOME_TIME
        if column not in frame:
            raise LoanStreamError(
                f"the history has no label-time column '{column}': give --label-delay (e.g. 30d) "
                "or --label-model"
            )
        known = pd.to_datetime(frame[column], utc=True, errors="coerce", format="mixed")
    early = known.notna() & (known < times)
    if early.any():
        first = int(np.flatnonzero(early.to_numpy())[0])
        raise LoanStreamError(
            f"{int(early.sum()):,} rows have a label time before their event time "
            f"(e.g. row {first}: {known.iloc[first]} < {times.iloc[first]})"
        )
    return known.where(labels.isin([0, 1]))


@dataclass(frozen=True)
class Split:
    """The history cut by event time: ``train`` the oldest rows, ``replay`` the rest (both in
    event-time order, index 0..n-1)."""

    train: pd.DataFrame
    replay: pd.DataFrame


def event_order(frame: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """Rows in event-time order; ties keep the file's order."""
    times = pd.to_datetime(frame[spec.event_time_column], utc=True, format="mixed")
    order = np.argsort(times.to_numpy(), kind="stable")
    return frame.iloc[order].reset_index(drop=True)


def split_history(frame: pd.DataFrame, spec: FeatureSpec, train_fraction: float) -> Split:
    """The oldest ``train_fraction`` of rows (by event time) trains; the rest is replayed.

    >>> from loanstream.spec import load_spec
    >>> f = pd.DataFrame({"applied_at": ["2025-01-03", "2025-01-01", "2025-01-02", "2025-01-04"],
    ...                   "application_id": ["c", "a", "b", "d"]})
    >>> s = split_history(f, load_spec(), 0.5)
    >>> list(s.train.application_id), list(s.replay.application_id)
    (['a', 'b'], ['c', 'd'])
    """
    if not 0 < train_fraction < 1:
        raise LoanStreamError(f"--train-fraction must be within (0, 1), got {train_fraction}")
    ordered = event_order(frame, spec)
    cut = round(len(ordered) * train_fraction)
    if cut == 0 or cut == len(ordered):
        raise LoanStreamError(
            f"a {train_fraction} share of {len(ordered):,} rows leaves nothing to train or replay"
        )
    return Split(
        ordered.iloc[:cut].reset_index(drop=True), ordered.iloc[cut:].reset_index(drop=True)
    )


def build_timeline(
    history: pd.DataFrame, spec: FeatureSpec, train_fraction: float, source: LabelSource
) -> Timeline:
    """Check, order and cut the history; parse the applications as the scorer does."""
    if spec.target_column not in history:
        raise LoanStreamError(f"the history has no target column '{spec.target_column}'")
    checked = check_frame(history, spec)
    good = checked.good
    good[LABEL_TIME] = label_times(good, spec, source)
    if good[spec.id_column].duplicated().any():
        raise LoanStreamError("the history repeats application ids: each must be unique")
    split = split_history(good, spec, train_fraction)
    train, replay = split.train, split.replay
    app_ms = replay[spec.event_time_column].to_numpy(dtype="datetime64[ms]").astype(np.int64)
    known = replay[LABEL_TIME].notna().to_numpy()
    label_ms = replay[LABEL_TIME].to_numpy(dtype="datetime64[ms]").astype(np.int64)
    positions = np.flatnonzero(known)
    order = np.argsort(label_ms[positions], kind="stable")  # ties keep event-time order
    positions = positions[order]
    return Timeline(
        train,
        replay,
        app_ms,
        label_ms[positions],
        positions,
        len(checked.rejections),
        ApplicationValidator(spec),
        MessageCache(),
        pd.to_numeric(replay[spec.target_column], errors="coerce").fillna(-1).to_numpy(int),
        replay[spec.id_column].to_numpy(dtype=object),
    )
