"""Concept drift on the error stream: River detectors, and a test that confirms their alarms.

Each labelled event gives the calibrated probability ``p`` = P(repaid) and the label ``y``. A
River detector watches an encoding of the model's errors and raises raw alarms; an alarm is only
a drift once the *next* events (fresh, so independent of the excursion that raised it) show
more errors than the model itself expects for those very applicants, by a sequential likelihood
ratio test. A covariate shift changes which applicants come but not how they repay, so the
expected errors move with it and the test does not confirm.
Only degradations count: when errors fall back (a stressed regime ends), nothing fires.

Labels arrive in label-time order, so for as long as the label delays spread, the outcomes of
applications from before a drift keep arriving mixed with those from after it. A confirmation
is therefore followed by a settling period, in which the detectors watch nothing, until the
arriving labels are (95%) for applications made after the confirmation window: a detector
restarted on the still-tipping mix would confirm the same drift again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from river import drift
from river.drift import binary

from monitor import riverstate
from monitor.settling import Settling

LOG_LOSS_FLOOR = 1e-3
_LOG_LOSS_SCALE = -math.log(LOG_LOSS_FLOOR)


def binary_error(p: float, y: int) -> int:
    """1 when the class the model predicts (repaid iff ``p >= 0.5``) is wrong: River's encoding."""
    return 1 if (p >= 0.5) != (y == 1) else 0


def brier_loss(p: float, y: int) -> float:
    """Squared error of the probability, in [0, 1]."""
    return (p - y) * (p - y)


def log_loss(p: float, y: int) -> float:
    """Log loss, the probability clipped at 1e-3, scaled to [0, 1]: ADWIN assumes a range of 1."""
    q = p if y == 1 else 1.0 - p
    return -math.log(q if q > LOG_LOSS_FLOOR else LOG_LOSS_FLOOR) / _LOG_LOSS_SCALE


def brier_excess(p: float, y: int) -> float:
    """Brier loss minus the model's own expectation of it, p(1 - p), mapped from [-1/8, 1] to
    [0, 1]: its level moves with a concept drift, not with which applicants come."""
    return ((p - y) * (p - y) - p * (1.0 - p) + 0.125) / 1.125


def expected_error(p: float) -> float:
    """The calibrated model's own chance of a binary error on this applicant: min(p, 1 - p)."""
    return p if p < 0.5 else 1.0 - p


ENCODINGS: dict[str, Callable[[float, int], float]] = {
    "error": binary_error,
    "brier": brier_loss,
    "brier_excess": brier_excess,
    "log_loss": log_loss,
}


class RiverDetector(Protocol):
    """What ErrorDetector uses of a River drift detector (binary ones add warning_detected)."""

    @property
    def drift_detected(self) -> bool: ...

    def update(self, x: Any) -> Any: ...


@dataclass(frozen=True)
class DetectorKind:
    """A River detector with the encoding it reads and whether it also fires on falling errors."""

    factory: Callable[..., RiverDetector]
    encoding: str
    two_sided: bool
    warns: bool


# ADWIN reads the excess Brier loss: the Brier loss gave shorter delays than the clipped log loss
# and binary errors at the same false-alarm rate, and its excess over the model's expectation
# stays level under a covariate shift, where the plain loss raised 4-7x more (rejected) alarms.
# HDDM, DDM and EDDM read bits, 1 = error.
KINDS: dict[str, DetectorKind] = {
    "adwin": DetectorKind(drift.ADWIN, "brier_excess", two_sided=True, warns=False),
    "ddm": DetectorKind(binary.DDM, "error", two_sided=False, warns=True),
    "eddm": DetectorKind(binary.EDDM, "error", two_sided=False, warns=True),
    "hddm_a": DetectorKind(binary.HDDMA, "error", two_sided=False, warns=True),
    "hddm_w": DetectorKind(binary.HDDMW, "error", two_sided=False, warns=True),
}


class Level(StrEnum):
    WARNING = "warning"
    DRIFT = "drift"


@dataclass(frozen=True)
class Alarm:
    """A raw detector alarm; ``since`` is where the warning before it began (else ``position``)."""

    detector: str
    level: Level
    position: int
    since: int


class ErrorDetector:
    """One River detector fed with its encoding of ``(p, y)``; only rising errors raise a DRIFT.

    >>> import random
    >>> rng = random.Random(7)
    >>> detector = ErrorDetector("hddm_a")
    >>> for i in range(3000):
    ...     alarm = detector.update(0.9, int(rng.random() < (0.9 if i < 2000 else 0.5)))
    ...     if alarm and alarm.level == "drift":
    ...         print(alarm.detector, alarm.position, "warned since", alarm.since)
    hddm_a 2033 warned since 2030
    """

    def __init__(
        self,
        kind: str,
        params: Mapping[str, float] | None = None,
        *,
        encoding: str | None = None,
        name: str | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"detector kind must be one of {sorted(KINDS)}, got {kind!r}")
        default = KINDS[kind].encoding
        encoding = encoding or default
        if encoding not in ENCODINGS or (default == "error" and encoding != "error"):
            allowed = sorted(ENCODINGS) if default != "error" else ["error"]
            raise ValueError(f"{kind} reads one of {allowed} encodings, got {encoding!r}")
        self.kind = kind
        self.params = dict(params or {})
        self.encoding = encoding
        self.name = name or (kind if encoding == default else f"{kind}:{encoding}")
        self._encode = ENCODINGS[encoding]
        self._warns = KINDS[kind].warns
        self._two_sided = KINDS[kind].two_sided
        self._river: RiverDetector | None = None
        self._position = 0
        self._count = 0  # values since the River detector last restarted (ADWIN's window)
        self._total = 0.0
        self._warning_since: int | None = None
        self._checkpoints: list[dict[str, Any]] = []  # the older, then the newer

    def update(self, p: float, y: int) -> Alarm | None:
        """Feed one labelled event; an Alarm at a warning's onset or at a drift, else None."""
        river = self._river if self._river is not None else self._build()
        position = self._position
        self._position += 1
        x = self._encode(p, y)
        river.update(x)
        if self._two_sided:
            self._count += 1
            self._total += x
        if river.drift_detected:
            return self._drift(river, position)
        if self._warns:
            if not river.warning_detected:  # type: ignore[attr-defined]
                self._warning_since = None
            elif self._warning_since is None:
                self._warning_since = position
                return Alarm(self.name, Level.WARNING, position, position)
        return None

    def reset(self) -> None:
        """Forget everything learnt about the error stream; positions keep counting."""
        self._river = None
        self._count, self._total, self._warning_since = 0, 0.0, None
        self._checkpoints = []

    def checkpoint(self) -> None:
        """Remember the current state, keeping the one remembered before it too."""
        self._checkpoints = [*self._checkpoints[-1:], self._restartable()]

    def rewind(self) -> None:
        """Return to the older remembered state (or restart when none).

        After a rejected alarm this brings back the pre-alarm reference that River dropped
        when it restarted the detector, so a drift that persists raises a fresh alarm.
        """
        if not self._checkpoints:
            self.reset()
            return
        self._restart_from(self._checkpoints[0])
        self._warning_since = None

    def _restartable(self) -> dict[str, Any]:
        """The state a rewind returns to, as plain data (see monitor.riverstate)."""
        river = None if self._river is None else riverstate.dump(self._river)
        return {"river": river, "count": self._count, "total": self._total}

    def _restart_from(self, state: Mapping[str, Any]) -> None:
        river = state["river"]
        template = KINDS[self.kind].factory(**self.params)
        self._river = None if river is None else riverstate.load(template, river, self.name)
        self._count, self._total = int(state["count"]), float(state["total"])

    def _build(self) -> RiverDetector:
        self._river = KINDS[self.kind].factory(**self.params)
        return self._river

    def _drift(self, river: RiverDetector, position: int) -> Alarm | None:
        since = position if self._warning_since is None else self._warning_since
        rising = True
        if self._two_sided:
            # ADWIN dropped the older part of its window: compare the kept part with it
            kept, kept_total = river.width, river.total  # type: ignore[attr-defined]
            old = self._count - kept
            rising = old <= 0 or kept_total / kept > (self._total - kept_total) / old
        # River restarts the detector at its next update; keep our counters in step
        self._count, self._total, self._warning_since = 0, 0.0, None
        return Alarm(self.name, Level.DRIFT, position, since) if rising else None

    def to_dict(self) -> dict[str, Any]:
        """Plain data (numbers, lists, strings), so a restart resumes mid-drift instead of from
        scratch; see monitor.riverstate for why nothing here is pickled."""
        return {
            "kind": self.kind,
            "params": self.params,
            "encoding": self.encoding,
            "name": self.name,
            "position": self._position,
            "warning_since": self._warning_since,
            "current": self._restartable(),
            "checkpoints": self._checkpoints,
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> ErrorDetector:
        """The detector ``to_dict`` described; StateError when the state does not fit."""
        try:
            detector = cls(
                state["kind"], state["params"], encoding=state["encoding"], name=state["name"]
            )
            detector._restart_from(state["current"])
            checkpoints = state["checkpoints"]
            if not isinstance(checkpoints, list) or len(checkpoints) > 2:
                raise riverstate.StateError("expected at most two checkpoints")
            for checkpoint in checkpoints:  # each is read once here, so a rewind cannot fail
                detector._restart_from(checkpoint)
            detector._restart_from(state["current"])
            detector._checkpoints = list(checkpoints)
            detector._position = int(state["position"])
            since = state["warning_since"]
            detector._warning_since = None if since is None else int(since)
        except (KeyError, TypeError, ValueError) as err:
            raise riverstate.StateError(f"detector state does not fit: {err!r}") from None
        return detector


def build_detectors(configs: Iterable[tuple[str, Mapping[str, float]]]) -> list[ErrorDetector]:
    """ErrorDetectors from ``(kind, params)`` pairs, e.g. the output of calibration."""
    return [ErrorDetector(kind, params) for kind, params in configs]


@dataclass(frozen=True)
class ConceptDrift:
    """A confirmed concept drift with its evidence.

    ``statistic`` is the log likelihood ratio of "more errors than the model expects" against
    "at most ``bias`` + ``tolerance`` more" over the ``window_size`` fresh events after the raw
    alarm at ``alarm_position`` (``first_position`` is the warning before it, if any); it reached
    ``threshold`` = ln(1 / alpha). ``p_value`` = exp(-statistic) stays valid however often the
    test looked (Ville's inequality). The error rates are those of the window.
    """

    detector: str
    first_position: int
    alarm_position: int
    confirmed_position: int
    window_size: int
    statistic: float
    threshold: float
    p_value: float
    observed_error_rate: float
    expected_error_rate: float
    bias: float


@dataclass(frozen=True)
class MonitorStats:
    """Counts since the monitor was made; ``unconfirmed`` raw alarms are realized false alarms."""

    events: int
    warnings: int
    raw_alarms: int
    unconfirmed: int
    confirmed: int
    settling: int  # events not watched while the labels of a confirmed drift's onset settled

    @property
    def false_alarm_rate(self) -> float:
        """Unconfirmed raw drift alarms per event."""
        return self.unconfirmed / self.events if self.events else 0.0


# ADWIN on the excess Brier loss, calibrated (monitor/calibration.py) on the test model's
# reference to a raw run length of 20,000 events; a service calibrates for its own model's
# reference with calibration.calibrated_detectors. Adding HDDM_A or HDDM_W did not shorten the
# confirmed delays and cost ~5 us per event.
DEFAULT_DETECTORS: tuple[tuple[str, dict[str, float]], ...] = (
    ("adwin", {"delta": 0.5, "clock": 4}),
)


@dataclass
class _Window:
    """An open confirmation: the fresh events after a raw drift alarm."""

    detector: str
    since: int
    alarm: int
    bias: float
    llrs: list[float]
    events: int = 0
    errors: int = 0
    expected: float = 0.0
    margin: float = 0.0  # added to the tolerance while the bias is learnt from few events
    times: list[float] = field(default_factory=list)  # event times of the window's events


class ConceptDriftMonitor:
    """Raw alarms of error-stream detectors, each confirmed or rejected on the events after it.

    A raw DRIFT alarm opens a window over the next events, which runs a sequential likelihood
    ratio test. H0: each event is an error with probability at most
    q0 = max(min(p, 1-p), floor) + bias + tolerance, where bias is the excess of errors over the
    model's expectation (its miscalibration): measured over the first ``bias_events`` events
    after a (re)start outside confirmation windows, then frozen, so a slowly growing error is
    not absorbed as miscalibration; only a lower recent excess (over the last ~``bias_events``)
    replaces it. A bias learnt from n events is uncertain: the tolerance is at least
    1 / sqrt(n), at most two of its standard errors (0.02 covers them from n = 2,500), so an
    alarm soon after a (re)start is not confirmed by the bias's own noise. H1: with
    q0 + effect, for a mixture over ``effects``. The drift is confirmed once the mixture's
    likelihood ratio reaches 1 / alpha, so under H0 a window confirms with probability at most
    alpha; the confirmed run length is at least the raw one / alpha. Every
    ``confirm_events`` events the window is rejected unless the evidence leans to a drift, and
    after ``max_looks`` looks in any case. A rejected alarm counts as unconfirmed and rewinds the
    detectors to a checkpoint from before it, so a drift the window missed (or that is still
    growing) alarms again; after ``restart_after`` rejections in a row, each within
    2 x ``checkpoint_events`` of the one before, they restart at the current level instead.
    After a confirmation everything restarts, once the labels have settled: until the share of
    arriving labels whose event time (``seconds``) lies before the confirmation window's 90th
    percentile falls below ``settle_share`` (a moving average over ~``settle_events``, starting
    at 1, so at least ~600 events; without event times, only that minimum).

    >>> import random
    >>> rng = random.Random(3)
    >>> monitor = ConceptDriftMonitor()
    >>> for i in range(30_000):
    ...     p = rng.choice([0.6, 0.8, 0.95])
    ...     drift = monitor.update(p, int(rng.random() < (p if i < 20_000 else p / 2)))
    ...     if drift:
    ...         print(drift.detector, drift.alarm_position, drift.confirmed_position)
    adwin 20029 20040
    """

    def __init__(
        self,
        detectors: Iterable[ErrorDetector] | None = None,
        *,
        confirm_events: int = 200,
        max_looks: int = 5,
        alpha: float = 0.01,
        tolerance: float = 0.02,
        effects: Sequence[float] = (0.05, 0.1, 0.2, 0.3),
        floor: float = 0.01,
        bias_events: int = 5000,
        checkpoint_events: int = 1000,
        restart_after: int = 10,
        settle_events: int = 200,
        settle_share: float = 0.05,
    ) -> None:
        _check(0.0 < alpha < 1.0, "alpha must be within (0, 1)", alpha)
        _check(confirm_events >= 1, "confirm_events must be at least 1", confirm_events)
        _check(max_looks >= 1, "max_looks must be at least 1", max_looks)
        _check(0.0 <= tolerance < 0.5, "tolerance must be within [0, 0.5)", tolerance)
        _check(
            len(effects) > 0 and all(0.0 < e < 0.5 for e in effects),
            "effects must be one or more numbers within (0, 0.5)",
            effects,
        )
        _check(0.0 < floor < 0.5, "floor must be within (0, 0.5)", floor)
        _check(bias_events >= 1, "bias_events must be at least 1", bias_events)
        _check(checkpoint_events >= 1, "checkpoint_events must be at least 1", checkpoint_events)
        _check(restart_after >= 1, "restart_after must be at least 1", restart_after)
        _check(settle_events >= 1, "settle_events must be at least 1", settle_events)
        _check(0.0 < settle_share < 1.0, "settle_share must be within (0, 1)", settle_share)
        self.detectors = (
            build_detectors(DEFAULT_DETECTORS) if detectors is None else list(detectors)
        )
        self.confirm_events = confirm_events
        self.max_looks = max_looks
        self.alpha = alpha
        self.tolerance = tolerance
        self.effects = tuple(effects)
        self.floor = floor
        self.bias_events = bias_events
        self.checkpoint_events = checkpoint_events
        self.restart_after = restart_after
        self.settle_events = settle_events
        self.settle_share = settle_share
        self._threshold = math.log(1.0 / alpha)
        self._log_k = math.log(len(self.effects))
        self._q0_cap = 0.99 - max(self.effects)  # keeps every alternative q0 + effect below 1
        self._position = 0
        self._bias, self._bias_n = 0.0, 0  # the warm-up estimate, frozen after bias_events
        self._recent, self._recent_n = 0.0, 0  # a running mean over ~bias_events
        self._window: _Window | None = None
        self._last_rejection = -1
        self._rejections = 0  # in a row, each soon after the one before
        self._settling: Settling | None = None
        kinds = ("warnings", "raw_alarms", "unconfirmed", "confirmed", "settling")
        self._counts = dict.fromkeys(kinds, 0)

    def update(self, p: float, y: int, seconds: float | None = None) -> ConceptDrift | None:
        """Feed one labelled event: ``p`` = P(repaid) as scored, ``y`` = 1 if repaid, and the
        application's event time in epoch seconds if known (it ends settling, see above)."""
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be a probability within [0, 1], got {p!r}")
        if y != 0 and y != 1:
            raise ValueError(f"y must be 0 (defaulted) or 1 (repaid), got {y!r}")
        position = self._position
        self._position += 1
        if self._settling is not None:
            self._counts["settling"] += 1
            if self._settling.settled(seconds, self.settle_events, self.settle_share):
                self._settling = None
            return None
        err = 1 if (p >= 0.5) != (y == 1) else 0
        e = p if p < 0.5 else 1.0 - p
        window = self._window
        confirmed = None
        if window is not None:
            if seconds is not None:
                window.times.append(seconds)
            confirmed = self._step(window, err, e, position)
        for detector in self.detectors:
            alarm = detector.update(p, y)
            if alarm is not None:
                self._on_alarm(alarm)
        if self._window is None and position % self.checkpoint_events == 0:
            for detector in self.detectors:
                detector.checkpoint()
        # learn the bias (frozen after bias_events) and the recent excess; inline: every event
        excess = err - e
        self._recent_n += 1
        self._recent += (excess - self._recent) / min(self._recent_n, self.bias_events)
        if self._bias_n < self.bias_events and self._window is None:
            self._bias_n += 1
            self._bias += (excess - self._bias) / self._bias_n
        if confirmed is not None and window is not None:
            self.reset()
            self._settling = Settling.after(window.times)
        return confirmed

    @property
    def settling(self) -> bool:
        """Whether the detectors wait for the labels of a confirmed drift to settle."""
        return self._settling is not None

    def reset(self) -> None:
        """Start afresh, e.g. for a new model: detectors, open confirmation, bias and any
        settling (not stats)."""
        for detector in self.detectors:
            detector.reset()
        self._window = None
        self._settling = None
        self._bias, self._bias_n = 0.0, 0
        self._recent, self._recent_n = 0.0, 0
        self._last_rejection, self._rejections = -1, 0

    @property
    def stats(self) -> MonitorStats:
        return MonitorStats(events=self._position, **self._counts)

    def _on_alarm(self, alarm: Alarm) -> None:
        if alarm.level is Level.WARNING:
            self._counts["warnings"] += 1
            return
        self._counts["raw_alarms"] += 1
        if self._window is None:
            # a lower recent excess wins: a model better than at its start (a stressed regime
            # ended) must not hide the next degradation
            bias = min(self._bias, self._recent)
            bias = bias if bias > 0.0 else 0.0
            # a bias learnt from few events is uncertain: widen the tolerance to two of its
            # standard errors at most (an excess's sd is at most 1/2) until it covers them
            margin = max(0.0, 1.0 / math.sqrt(max(self._bias_n, 1)) - self.tolerance)
            llrs = [0.0] * len(self.effects)
            self._window = _Window(
                alarm.detector, alarm.since, alarm.position, bias, llrs, margin=margin
            )

    def _step(self, window: _Window, err: int, e: float, position: int) -> ConceptDrift | None:
        floor, tolerance = self.floor, self.tolerance + window.margin
        q0 = min((e if e > floor else floor) + window.bias + tolerance, self._q0_cap)
        llrs = window.llrs
        for k, effect in enumerate(self.effects):
            q1 = q0 + effect
            llrs[k] += math.log(q1 / q0) if err else math.log((1.0 - q1) / (1.0 - q0))
        top = max(llrs)  # log of the mixture (mean) likelihood ratio, computed stably
        llr = top + math.log(sum(math.exp(v - top) for v in llrs)) - self._log_k
        window.events += 1
        window.errors += err
        window.expected += e
        if llr >= self._threshold:
            self._counts["confirmed"] += 1
            return ConceptDrift(
                detector=window.detector,
                first_position=window.since,
                alarm_position=window.alarm,
                confirmed_position=position,
                window_size=window.events,
                statistic=llr,
                threshold=self._threshold,
                p_value=min(1.0, math.exp(-llr)),
                observed_error_rate=window.errors / window.events,
                expected_error_rate=window.expected / window.events,
                bias=window.bias,
            )
        # Every confirm_events, give up unless the evidence leans to a drift (the likelihood
        # ratio is above 1); stopping early or late does not change the bound on false alarms.
        looks, rest = divmod(window.events, self.confirm_events)
        if rest == 0 and (llr <= 0.0 or looks >= self.max_looks):
            self._reject(position)
        return None

    def _reject(self, position: int) -> None:
        # Rewinding brings back the pre-alarm reference, so a drift the window missed alarms
        # again. Many rejections in a row mean the excess moved, but within the tolerance:
        # accept the level as the detectors' new reference instead of looping (the frozen bias
        # still measures any further rise from the start).
        self._counts["unconfirmed"] += 1
        self._window = None
        soon = (
            self._last_rejection >= 0
            and position - self._last_rejection <= 2 * self.checkpoint_events
        )
        self._rejections = self._rejections + 1 if soon else 1
        restart = self._rejections >= self.restart_after
        for detector in self.detectors:
            if restart:
                detector.reset()
            else:
                detector.rewind()
        if restart:
            self._rejections = 0
        self._last_rejection = position

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state: a restarted monitor continues exactly where this one stopped."""
        return {
            "config": {
                "confirm_events": self.confirm_events,
                "max_looks": self.max_looks,
                "alpha": self.alpha,
                "tolerance": self.tolerance,
                "effects": list(self.effects),
                "floor": self.floor,
                "bias_events": self.bias_events,
                "checkpoint_events": self.checkpoint_events,
                "restart_after": self.restart_after,
                "settle_events": self.settle_events,
                "settle_share": self.settle_share,
            },
            "detectors": [detector.to_dict() for detector in self.detectors],
            "position": self._position,
            "bias": self._bias,
            "bias_n": self._bias_n,
            "recent": self._recent,
            "recent_n": self._recent_n,
            "last_rejection": self._last_rejection,
            "rejections": self._rejections,
            "window": None if self._window is None else asdict(self._window),
            "settling": None if self._settling is None else asdict(self._settling),
            "counts": dict(self._counts),
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> ConceptDriftMonitor:
        detectors = [ErrorDetector.from_dict(d) for d in state["detectors"]]
        monitor = cls(detectors, **state["config"])
        monitor._position = int(state["position"])
        monitor._bias, monitor._bias_n = float(state["bias"]), int(state["bias_n"])
        # states written before the recent mean existed: their running bias is the best guess
        monitor._recent = float(state.get("recent", monitor._bias))
        monitor._recent_n = int(state.get("recent_n", monitor._bias_n))
        monitor._last_rejection = int(state["last_rejection"])
        monitor._rejections = int(state.get("rejections", 0))
        monitor._window = None if state["window"] is None else _Window(**state["window"])
        settling = state.get("settling")  # states written before settling existed have none
        monitor._settling = None if settling is None else Settling(**settling)
        monitor._counts.update(state["counts"])
        return monitor


def _check(ok: bool, expected: str, got: object) -> None:
    if not ok:
        raise ValueError(f"{expected}, got {got!r}")
