"""Detector state as plain data: exact round trips, and forged state refused, never run."""

from __future__ import annotations

import base64
import pickle
import random

import orjson
import pytest

from monitor.detectors import KINDS, ErrorDetector
from monitor.riverstate import StateError, dump, load


def _fed(kind: str, seed: int, n: int) -> object:
    rng = random.Random(seed)
    detector = KINDS[kind].factory()
    for i in range(n):
        rate = 0.2 if i < n // 2 else 0.45
        detector.update(rng.random() * 2 * rate if kind == "adwin" else float(rng.random() < rate))
    return detector


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_restored_detector_goes_on_exactly_as_the_original(kind: str) -> None:
    for seed in range(5):
        original = _fed(kind, seed, 1_500 + 300 * seed)
        state = orjson.loads(orjson.dumps(dump(original)))  # through JSON, as on the topic
        restored = load(KINDS[kind].factory(), state)
        rng = random.Random(100 + seed)
        drifts = []
        for i in range(3_000):
            x = rng.random() * 1.2 if kind == "adwin" else float(rng.random() < 0.6)
            original.update(x)  # type: ignore[attr-defined]
            restored.update(x)
            assert restored.drift_detected == original.drift_detected  # type: ignore[attr-defined]
            drifts += [i] if restored.drift_detected else []
        assert dump(restored) == dump(original)


def test_adwin_state_that_does_not_add_up_is_refused_before_river_sees_it() -> None:
    state = dump(_fed("adwin", 1, 500))
    template = KINDS["adwin"].factory()
    for change, message in [
        (lambda s: s["_helper"].update(width=1e12), "width"),
        (lambda s: s["_helper"]["buckets"][0].update(used=99), "used"),
        (lambda s: s["_helper"]["buckets"][0]["totals"].append(1.0), "totals"),
        (lambda s: s["_helper"].update(clock=0), "clock"),
        (lambda s: s["_helper"]["buckets"].clear(), "bucket lists"),
        (lambda s: s["_helper"].update(total="__import__('os')"), "number"),
        (lambda s: s.update(delta={"py/object": "os.system"}), "number"),
        (lambda s: s.update(extra=1), "attributes"),
    ]:
        forged = orjson.loads(orjson.dumps(state))
        change(forged)
        with pytest.raises(StateError, match=message):
            load(template, forged)


class _Payload:
    ran = False

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (setattr, (_Payload, "ran", True))


def test_a_pickled_detector_state_is_refused_and_its_payload_never_runs() -> None:
    detector = ErrorDetector("adwin")
    detector.update(0.9, 1)
    state = detector.to_dict()
    forged = {k: v for k, v in state.items() if k not in ("current", "checkpoints")}
    forged["pickles"] = [base64.b64encode(pickle.dumps(_Payload())).decode()]
    with pytest.raises(StateError):
        ErrorDetector.from_dict(forged)
    assert not _Payload.ran
    forged = dict(state, current={"river": {"_helper": "x"}, "count": 1, "total": 0.5})
    with pytest.raises(StateError):
        ErrorDetector.from_dict(forged)
