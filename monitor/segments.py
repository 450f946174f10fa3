"""Performance drift inside one segment: fewer repayments than the calibrated model promised.

A concept drift that hits a small segment hardly moves the overall error rate (small-business
and medical loans defaulting more move it from 0.18 to 0.19), so no error-stream detector sees
it. Per segment value, this watches the labels against the model's own probabilities: a
calibrated model's applicants repay at rate ``p`` on average, and a segment that repays
markedly less is drifting, whatever its share of the traffic.

Each segment runs one CUSUM of log-likelihood ratios per effect size ``e``: H0, applicants
repay at ``p - bias - tolerance``; H1, at ``e`` less than that. ``bias`` is the segment's own
miscalibration, learnt over its first ``warmup`` labels and then frozen, so a slow drift is not
absorbed; after a confirmed drift the segment learns its new level afresh, so one shift is
reported once. Afresh means after its labels have settled: while label delays spread, labels of
applications from before the drift keep arriving mixed with the new ones, and a level learnt from
that tipping mix would report the same shift again. So the segment first waits until 95% of its
arriving labels are for applications after the confirmation (the 90th percentile of the event
times of its last 64 labels then).

A CUSUM of likelihood ratios with threshold ``h`` has an average run length of at least
``exp(h)`` under H0 (Lorden, 1971); ``h`` is set from the target run length, times the
number of segments and effects watched, so the budget holds across all of them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from monitor.settling import Settling

EFFECTS = (0.05, 0.1, 0.2)
OTHER = "(other)"
TIMES = 64  # event times remembered per segment, to date where its labels stand
LOW, HIGH = 1e-6, 1 - 1e-6  # repayment rates the likelihood ratios are clipped to
log = math.log


@dataclass(frozen=True)
class SegmentDrift:
    """A confirmed shortfall of repayments in one segment, with its evidence."""

    segment: str
    effect: float
    statistic: float  # the CUSUM of log likelihood ratios that crossed
    threshold: float
    first_position: int  # the first event of the run that crossed: before it the CUSUM was 0
    confirmed_position: int
    first_seconds: float  # event time (epoch seconds) at first_position, as passed in
    events: int  # labels of the segment since first_position
    observed_rate: float  # repayment rate of those labels
    expected_rate: float  # the model's mean probability for them


@dataclass
class _Segment:
    """One segment's warm-up sums and, per effect size, its CUSUM and what it has summed."""

    n: int
    bias_sum: float
    bias: float
    cusum: list[float]
    since: list[int]
    since_seconds: list[float]
    repaid: list[int]
    promised: list[float]
    count: list[int]
    times: list[float] = field(default_factory=lambda: [0.0] * TIMES)
    settling: Settling | None = None  # after a drift, until its labels have settled

    @classmethod
    def new(cls, effects: int, n: int = 0, bias_sum: float = 0.0, bias: float = 0.0) -> _Segment:
        zeros = [0] * effects
        return cls(
            n,
            bias_sum,
            bias,
            [0.0] * effects,
            zeros[:],
            [0.0] * effects,
            zeros[:],
            [0.0] * effects,
            zeros,
        )


class SegmentMonitor:
    """One CUSUM per segment value and effect size on labels against probabilities.

    >>> import random
    >>> rng, monitor = random.Random(1), SegmentMonitor(target_run_length=1_000_000)
    >>> for i in range(40_000):
    ...     segment = "small" if i % 20 == 0 else "large"
    ...     p = rng.uniform(0.6, 0.95)
    ...     q = p - 0.2 if (segment == "small" and i >= 20_000) else p
    ...     drift = monitor.update(segment, p, int(rng.random() < q), i)
    ...     if drift:
    ...         print(drift.segment, drift.effect, drift.confirmed_position)
    small 0.2 25880
    """

    def __init__(
        self,
        target_run_length: int = 10_000_000,
        tolerance: float = 0.02,
        effects: Sequence[float] = EFFECTS,
        warmup: int = 500,
        max_segments: int = 20,
        settle_events: int = 100,
        settle_share: float = 0.05,
    ) -> None:
        if target_run_length < 2:
            raise ValueError(f"target_run_length must be at least 2, got {target_run_length}")
        if not effects or not all(0 < e < 1 for e in effects):
            raise ValueError(f"effects must be within (0, 1), got {effects!r}")
        self.target_run_length = target_run_length
        self.tolerance = tolerance
        self.effects = tuple(effects)
        self.warmup = warmup
        self.max_segments = max_segments
        self.settle_events = settle_events
        self.settle_share = settle_share
        self.threshold = math.log(target_run_length * (max_segments + 1) * len(self.effects))
        self.segments: dict[str, _Segment] = {}

    def update(
        self, segment: str | None, p: float, y: int, position: int, seconds: float = 0.0
    ) -> SegmentDrift | None:
        """Feed one labelled example of ``segment`` (None: not watched), at event time
        ``seconds``, which dates the start of a drift."""
        if segment is None:
            return None
        state = self.segments.get(segment)
        if state is None:
            segment, state = self._state(segment)
        if state.settling is not None:
            if state.settling.settled(seconds, self.settle_events, self.settle_share):
                state.settling = None
            return None
        state.times[state.n % TIMES] = seconds
        state.n += 1
        if state.n <= self.warmup:  # learn the segment's own miscalibration first
            state.bias_sum += p - y
            state.bias = max(0.0, state.bias_sum / state.n)
            return None
        q0 = p - state.bias - self.tolerance
        q0 = LOW if q0 < LOW else (HIGH if q0 > HIGH else q0)
        cusum = state.cusum
        for i, effect in enumerate(self.effects):
            if y and not cusum[i]:
                continue  # a repayment can only lower a CUSUM: at rest it stays there
            q1 = q0 - effect
            if q1 < LOW:
                q1 = LOW
            total = cusum[i] + (log(q1 / q0) if y else log((1.0 - q1) / (1.0 - q0)))
            if total <= 0.0:
                if cusum[i]:  # a run ends: forget what it summed (nothing to do at rest)
                    cusum[i], state.promised[i] = 0.0, 0.0
                    state.repaid[i] = state.count[i] = 0
                continue
            if not cusum[i]:  # a run starts at this event
                state.since[i], state.since_seconds[i] = position, seconds
            cusum[i] = total
            state.repaid[i] += y
            state.promised[i] += p
            state.count[i] += 1
            if total >= self.threshold:
                drift = SegmentDrift(
                    segment=segment,
                    effect=effect,
                    statistic=total,
                    threshold=self.threshold,
                    first_position=state.since[i],
                    confirmed_position=position,
                    first_seconds=state.since_seconds[i] or seconds,
                    events=state.count[i],
                    observed_rate=state.repaid[i] / state.count[i],
                    expected_rate=state.promised[i] / state.count[i],
                )
                # reported once: the new level, once settled, is this segment's baseline
                settled = _Segment.new(len(self.effects))
                settled.settling = Settling.after(state.times[: state.n])
                self.segments[segment] = settled
                return drift
        return None

    def _state(self, segment: str) -> tuple[str, _Segment]:
        """The segment's name as watched (past the cap, OTHER) and its state."""
        state = self.segments.get(segment)
        if state is None:
            if len(self.segments) >= self.max_segments:
                segment = OTHER  # a hostile stream cannot grow the state without bound
                state = self.segments.get(segment)
            if state is None:
                state = self.segments[segment] = _Segment.new(len(self.effects))
        return segment, state

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": {
                "target_run_length": self.target_run_length,
                "tolerance": self.tolerance,
                "effects": list(self.effects),
                "warmup": self.warmup,
                "max_segments": self.max_segments,
                "settle_events": self.settle_events,
                "settle_share": self.settle_share,
            },
            "segments": {name: _segment_state(s) for name, s in self.segments.items()},
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> SegmentMonitor:
        monitor = cls(**state["config"])
        monitor.segments = {name: _segment(s) for name, s in state["segments"].items()}
        return monitor


def _segment_state(segment: _Segment) -> dict[str, Any]:
    settling = segment.settling
    return {**vars(segment), "settling": None if settling is None else asdict(settling)}


def _segment(state: Mapping[str, Any]) -> _Segment:
    settling = state.get("settling")  # states written before settling existed have none
    return _Segment(**{**state, "settling": None if settling is None else Settling(**settling)})
