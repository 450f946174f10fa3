"""Detector thresholds calibrated to a target run length between false alarms, not library defaults.

Under the null the calibrated model is right: a parametric bootstrap draws ``p`` from the model's
reference prediction quantiles and ``y ~ Bernoulli(p)``. Each detector's sensitivity parameter
is walked over a grid, and the most sensitive setting whose measured run length between raw
alarms on that null stream reaches the target is kept. Measuring a run length T needs several T
events, so raw targets stay modest (~10^4-10^5); the confirmation test of ConceptDriftMonitor on
fresh events multiplies the run length between *confirmed* alarms by 1 / alpha or more.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loanstream.errors import LoanStreamError
from monitor.detectors import KINDS, ErrorDetector, Level

logger = logging.getLogger(__name__)

Params = Mapping[str, float]

# Each grid runs from the least to the most sensitive setting; warning levels keep River's ratio
# to the drift level.
GRIDS: dict[str, tuple[dict[str, float], ...]] = {
    "adwin": tuple(
        {"delta": d, "clock": 4} for d in (0.002, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0)
    ),
    "hddm_a": tuple(
        {"drift_confidence": c, "warning_confidence": min(5 * c, 0.5)}
        for c in (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
    ),
    "hddm_w": tuple(
        {"drift_confidence": c, "warning_confidence": min(5 * c, 0.5)}
        for c in (1e-5, 3e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2)
    ),
    "ddm": tuple(
        {"drift_threshold": t, "warning_threshold": t - 1}
        for t in (6, 5, 4.5, 4, 3.5, 3, 2.5, 2.25, 2)
    ),
    "eddm": tuple(
        {"beta": b, "alpha": (1 + b) / 2} for b in (0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
    ),
}


class CalibrationError(LoanStreamError):
    """No setting of a detector's grid reached the target run length on the null stream."""


@dataclass(frozen=True)
class NullStream:
    """Labelled events under the null: probabilities as the model scores, labels as it predicts."""

    p: list[float]
    y: list[int]


@dataclass(frozen=True)
class Calibrated:
    """The chosen setting and how it was measured: ``false_alarms`` raw alarms in ``events``."""

    detector: str
    encoding: str
    params: dict[str, float]
    target_run_length: int
    events: int
    false_alarms: int
    reference: str

    @property
    def run_length(self) -> float:
        """Measured events per false alarm (inf when none was seen)."""
        return self.events / self.false_alarms if self.false_alarms else float("inf")

    def build(self) -> ErrorDetector:
        return ErrorDetector(self.detector, self.params, encoding=self.encoding)


def prediction_quantiles(reference: Mapping[str, Any]) -> list[float]:
    """The quantile sketch of the model's predicted probabilities in a reference profile."""
    quantiles = reference.get("prediction", {}).get("quantiles")
    if not quantiles or len(quantiles) < 2:
        raise ValueError(
            "reference must hold prediction.quantiles (a list of at least 2 probabilities), "
            f"got {quantiles!r}"
        )
    return [float(q) for q in quantiles]


def null_stream(reference: Mapping[str, Any], events: int, seed: int) -> NullStream:
    """Parametric bootstrap: p by the inverse CDF of the quantile sketch, y ~ Bernoulli(p)."""
    quantiles = np.clip(np.asarray(prediction_quantiles(reference)), 0.0, 1.0)
    rng = np.random.default_rng(seed)
    levels = np.linspace(0.0, 1.0, len(quantiles))
    p = np.interp(rng.random(events), levels, quantiles)
    y = (rng.random(events) < p).astype(np.int64)
    return NullStream(p.tolist(), y.tolist())


def fingerprint(reference: Mapping[str, Any]) -> str:
    """sha256 of the prediction quantiles: what the null stream, hence calibration, depends on."""
    text = json.dumps(prediction_quantiles(reference), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Measured:
    """Raw DRIFT alarms of a detector in the null events it read."""

    false_alarms: int
    events: int

    @property
    def run_length(self) -> float:
        """Events per false alarm (inf when none was seen)."""
        return self.events / self.false_alarms if self.false_alarms else float("inf")


def measure(detector: ErrorDetector, stream: NullStream, limit: int = 2**62) -> Measured:
    """Count a detector's raw alarms on a null stream, stopping once there are more than ``limit``.

    River restarts a detector after each alarm, so the alarms form a renewal process and
    events / alarms estimates the run length between false alarms.
    """
    alarms = 0
    for i, (p, y) in enumerate(zip(stream.p, stream.y, strict=True)):
        alarm = detector.update(p, y)
        if alarm is not None and alarm.level is Level.DRIFT:
            alarms += 1
            if alarms > limit:
                return Measured(alarms, i + 1)
    return Measured(alarms, len(stream.p))


def calibrate(
    kind: str,
    reference: Mapping[str, Any],
    target_run_length: int,
    *,
    grid: Sequence[Params] | None = None,
    encoding: str | None = None,
    events: int | None = None,
    seed: int = 0,
    cache: Path | None = None,
) -> Calibrated:
    """The most sensitive grid setting of ``kind`` whose null run length reaches the target.

    ``events`` null events (default 20 x target: about 20 alarms at the target, a relative
    error near 22%) are drawn once and shared by every setting. The walk starts from the most
    sensitive end, because a setting that fails stops as soon as its alarms exceed
    events / target, which is cheap; the first one that passes is the answer.
    Results are cached in the JSON file ``cache`` by reference, detector, grid and target.

    >>> reference = {"prediction": {"quantiles": [0.5 + i / 200 for i in range(101)]}}
    >>> result = calibrate("hddm_a", reference, 2_000, seed=1)
    >>> result.params, result.false_alarms, result.events
    ({'drift_confidence': 0.01, 'warning_confidence': 0.05}, 4, 40000)
    """
    if kind not in KINDS:
        raise ValueError(f"detector kind must be one of {sorted(KINDS)}, got {kind!r}")
    if target_run_length < 1:
        raise ValueError(f"target_run_length must be at least 1, got {target_run_length}")
    settings = [dict(params) for params in (grid or GRIDS[kind])]
    encoding = ErrorDetector(kind, encoding=encoding).encoding  # validates it, fills the default
    events = events or 20 * target_run_length
    ref = fingerprint(reference)
    key = _cache_key(ref, f"{kind}:{encoding}", settings, target_run_length, events, seed)
    if cache is not None and (hit := _read_cache(cache).get(key)) is not None:
        return Calibrated(**hit)
    stream = null_stream(reference, events, seed)
    limit = events // target_run_length
    for params in reversed(settings):
        measured = measure(ErrorDetector(kind, params, encoding=encoding), stream, limit)
        if measured.false_alarms <= limit:
            if params == settings[-1]:
                logger.warning(
                    "%s: the grid's most sensitive setting %s met the target run length %d; "
                    "a sharper one might too",
                    kind,
                    params,
                    target_run_length,
                )
            result = Calibrated(
                kind,
                encoding,
                params,
                target_run_length,
                measured.events,
                measured.false_alarms,
                ref,
            )
            if cache is not None:
                _write_cache(cache, key, result)
            return result
    raise CalibrationError(
        f"{kind}: every setting raised more than {limit} false alarms in {events} null events "
        f"(target run length {target_run_length}); least sensitive tried: {settings[0]}"
    )


def calibrated_detectors(
    reference: Mapping[str, Any],
    kinds: Sequence[str] = ("adwin",),
    target_run_length: int = 20_000,
    cache: Path | None = None,
) -> list[ErrorDetector]:
    """One calibrated ErrorDetector per kind, for a ConceptDriftMonitor of this model."""
    return [calibrate(kind, reference, target_run_length, cache=cache).build() for kind in kinds]


def _cache_key(
    ref: str, kind: str, grid: list[dict[str, float]], target: int, events: int, seed: int
) -> str:
    setup = json.dumps([grid, events, seed], sort_keys=True, separators=(",", ":"))
    return f"{ref}:{kind}:{hashlib.sha256(setup.encode()).hexdigest()[:16]}:{target}"


def _read_cache(path: Path) -> dict[str, dict[str, Any]]:
    try:
        loaded = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise CalibrationError(f"calibration cache {path} is not readable JSON: {exc}") from exc
    return loaded if isinstance(loaded, dict) else {}


def _write_cache(path: Path, key: str, result: Calibrated) -> None:
    entries = _read_cache(path)
    entries[key] = asdict(result)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(entries, indent=1, sort_keys=True))
    partial.replace(path)  # atomic: a reader never sees half a file
