"""Calibration of detector thresholds to a target run length on null streams."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from monitor import calibration
from monitor.calibration import (
    GRIDS,
    CalibrationError,
    calibrate,
    calibrated_detectors,
    fingerprint,
    measure,
    null_stream,
)
from monitor.detectors import ErrorDetector


def reference(a: float = 5.0, b: float = 2.0) -> dict[str, Any]:
    """A model's reference profile whose predictions follow Beta(a, b)."""
    quantiles = stats.beta.ppf(np.linspace(0, 1, 101), a, b)
    return {"prediction": {"kind": "numeric", "quantiles": quantiles.tolist()}}


def test_null_stream_draws_predictions_from_the_sketch_and_labels_from_them() -> None:
    stream = null_stream(reference(), 50_000, seed=1)
    p, y = np.array(stream.p), np.array(stream.y)
    assert p.min() >= 0.0 and p.max() <= 1.0 and set(np.unique(y)) == {0, 1}
    assert p.mean() == pytest.approx(5 / 7, abs=0.005)  # Beta(5, 2)'s mean
    assert y.mean() == pytest.approx(p.mean(), abs=0.005)  # the model is right under the null
    # a calibrated model's realized errors match its expected ones
    assert np.mean((p >= 0.5) != (y == 1)) == pytest.approx(np.minimum(p, 1 - p).mean(), abs=0.005)
    assert null_stream(reference(), 10, seed=1) == null_stream(reference(), 10, seed=1)
    assert null_stream(reference(), 10, seed=1) != null_stream(reference(), 10, seed=2)


def test_a_reference_without_prediction_quantiles_is_refused() -> None:
    with pytest.raises(ValueError, match=r"reference must hold prediction.quantiles .*got None"):
        null_stream({"features": {}}, 10, seed=0)


def test_fingerprint_follows_the_prediction_quantiles_only() -> None:
    base = reference()
    assert fingerprint(base) == fingerprint({**base, "rows": 123})
    assert fingerprint(base) != fingerprint(reference(5.0, 2.5))


@pytest.mark.parametrize(
    ("kind", "target", "expected", "alarms"),
    [
        ("adwin", 10_000, {"delta": 0.8, "clock": 4}, 18),
        ("hddm_w", 5_000, {"drift_confidence": 5e-4, "warning_confidence": 0.0025}, 16),
    ],
)
def test_calibrate_keeps_the_most_sensitive_setting_that_reaches_the_target(
    kind: str, target: int, expected: dict[str, float], alarms: int
) -> None:
    result = calibrate(kind, reference(), target, seed=3)
    events = 20 * target
    assert (result.params, result.false_alarms, result.events) == (expected, alarms, events)
    assert result.run_length >= target
    assert result.reference == fingerprint(reference())
    # the next more sensitive setting, on the same null stream, falls short of the target
    grid = GRIDS[kind]
    sharper = grid[grid.index(expected) + 1]
    sharper_measured = measure(ErrorDetector(kind, sharper), null_stream(reference(), events, 3))
    assert sharper_measured.run_length < target


def test_calibration_is_cached_by_reference_detector_and_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "calibration.json"
    first = calibrate("hddm_w", reference(), 5_000, cache=cache)

    def no_measuring(*args: object, **kwargs: object) -> calibration.Measured:
        raise AssertionError("the cached result should have been used")

    monkeypatch.setattr(calibration, "measure", no_measuring)
    assert calibrate("hddm_w", reference(), 5_000, cache=cache) == first
    [detector] = calibrated_detectors(reference(), ["hddm_w"], 5_000, cache)
    assert (detector.kind, detector.params) == ("hddm_w", first.params)
    for kind, ref, target in [
        ("hddm_w", reference(5.0, 2.5), 5_000),
        ("hddm_a", reference(), 5_000),
        ("hddm_w", reference(), 6_000),
    ]:
        with pytest.raises(AssertionError, match="cached result"):
            calibrate(kind, ref, target, cache=cache)
    assert len(json.loads(cache.read_text())) == 1


def test_a_grid_that_cannot_reach_the_target_is_an_error() -> None:
    with pytest.raises(CalibrationError, match="adwin: every setting raised more than 0 false"):
        calibrate("adwin", reference(), 1_000_000, grid=[{"delta": 0.9, "clock": 1}], events=20_000)


def test_bad_kinds_and_targets_say_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"detector kind must be one of .*got 'cusum'"):
        calibrate("cusum", reference(), 5_000)
    with pytest.raises(ValueError, match="target_run_length must be at least 1, got 0"):
        calibrate("adwin", reference(), 0)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(CalibrationError, match="is not readable JSON"):
        calibrate("adwin", reference(), 5_000, cache=tmp_path / "broken.json")
