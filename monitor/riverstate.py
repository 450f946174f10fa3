"""River drift detectors as plain data (numbers, lists, strings), and back, without pickle.

The monitor's detector state travels through ``loan.monitor-state``, which anyone allowed to
write that topic can forge, so nothing read from it may choose a class or run code. Dumping walks
the detector's attributes; loading starts from a fresh detector built from the monitor's own
configuration (the *template*) and only fills in numbers where the template has them: the
template, never the data, decides every type. Two River parts keep their state in Rust:

- ADWIN's ``AdaptiveWindowing`` (river ``rust_src/adwin.rs``) pickles as bincode bytes. Those
  are parsed here into named numbers and bucket lists, checked (finite numbers, bucket sizes and
  counts that agree, the template's parameters), and only then encoded back for River: bytes that
  did not come from checked numbers never reach Rust, whose loader panics on malformed input.
- HDDM_W's exponentially weighted means offer no state at all, only their value; one is rebuilt
  by feeding that value once, which River stores exactly.

>>> from river import drift
>>> adwin = drift.ADWIN()
>>> for i in range(300):
...     _ = adwin.update((i % 7) / 7)
>>> state = dump(adwin)
>>> state["_helper"]["width"], len(state["_helper"]["buckets"])
(300.0, 6)
>>> restored = load(drift.ADWIN(), state)
>>> dump(restored) == state
True
"""

from __future__ import annotations

import copy
import math
import struct
from collections.abc import Mapping
from typing import Any

from river import drift, stats
from river.drift import binary
from river.drift.binary import hddm_w

from loanstream.errors import LoanStreamError


class StateError(LoanStreamError, ValueError):
    """Detector state that does not fit the detector it should restore."""


# Classes whose state is their attributes, every one a number or another class listed here.
_ATTRIBUTE_CLASSES = (
    drift.ADWIN,
    binary.DDM,
    binary.EDDM,
    binary.HDDMA,
    binary.HDDMW,
    stats.Mean,
    stats.Var,
)
_ADAPTIVE_WINDOWING = type(drift.ADWIN()._helper)
_NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}
_MAX_BUCKET_LISTS = 62  # a bucket list i holds 2**i values each: no window reaches 2**62


def dump(detector: Any) -> Any:
    """The state of a River detector (or part of one) as JSON-able plain data."""
    if detector is None or isinstance(detector, bool | int | str):
        return detector
    if isinstance(detector, float):
        return detector if math.isfinite(detector) else repr(detector)
    kind = type(detector)
    if kind is _ADAPTIVE_WINDOWING:
        return _dump_windowing(detector)
    if kind is hddm_w.SampleInfo:
        return _dump_sample_info(detector)
    if kind in _ATTRIBUTE_CLASSES:
        return {name: dump(value) for name, value in vars(detector).items()}
    raise StateError(f"cannot keep the state of a {kind.__module__}.{kind.__qualname__}")


def load(template: Any, state: Any, path: str = "detector") -> Any:
    """A detector like ``template`` holding ``state`` (from :func:`dump`); ``template`` is not
    changed. Raises StateError, naming the attribute, when the state does not fit."""
    kind = type(template)
    if kind is _ADAPTIVE_WINDOWING:
        return _load_windowing(template, state, path)
    if kind is hddm_w.SampleInfo:
        return _load_sample_info(template, state, path)
    if kind in _ATTRIBUTE_CLASSES:
        names = vars(template)
        if not isinstance(state, Mapping) or set(state) != set(names):
            raise StateError(f"{path}: expected the attributes {sorted(names)}")
        restored = copy.copy(template)
        for name, value in names.items():
            setattr(restored, name, load(value, state[name], f"{path}.{name}"))
        return restored
    return _number(state, path)


def _number(value: Any, path: str) -> float | int | bool | None:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise StateError(f"{path}: non-finite numbers are written as text, got {value!r}")
        return value
    if isinstance(value, str) and value in _NON_FINITE:
        return _NON_FINITE[value]
    raise StateError(f"{path}: expected a number, got {type(value).__name__}")


def _finite(value: Any, path: str) -> float:
    number = _number(value, path)
    if isinstance(number, bool) or number is None or not math.isfinite(number):
        raise StateError(f"{path}: expected a finite number, got {value!r}")
    return float(number)


def _count(value: Any, path: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise StateError(f"{path}: expected a whole number in [{low}, {high}], got {value!r}")
    return value


# --- HDDM_W's samples: an EWMean whose Rust state cannot be read, only its value ---------------


def _dump_sample_info(sample: Any) -> dict[str, Any]:
    return {
        "fading_factor": sample._ewma.fading_factor,
        "ewma": sample._ewma.get(),
        "is_init": sample._is_init,
        "ibc": sample._ibc,
    }


def _load_sample_info(template: Any, state: Any, path: str) -> Any:
    if not isinstance(state, Mapping) or set(state) != {"fading_factor", "ewma", "is_init", "ibc"}:
        raise StateError(f"{path}: expected fading_factor, ewma, is_init and ibc")
    if state["fading_factor"] != template._ewma.fading_factor:
        raise StateError(f"{path}: fading factor {state['fading_factor']!r} is not the detector's")
    sample = hddm_w.SampleInfo(template._ewma.fading_factor)
    if state["is_init"] is True:
        sample._ewma.update(_finite(state["ewma"], f"{path}.ewma"))  # the first value is kept as is
        sample._is_init = True
    sample._ibc = _finite(state["ibc"], f"{path}.ibc")
    return sample


# --- ADWIN's AdaptiveWindowing: bincode of (scalars, buckets), parsed into named numbers -------

_HEAD = struct.Struct("<diQddddddiiii")  # delta ... n_detections, as rust_src/adwin.rs orders them
_HEAD_NAMES = (
    "delta",
    "clock",
    "max_buckets",
    "min_window_length",
    "grace_period",
    "total",
    "variance",
    "width",
    "total_width",
    "n_buckets",
    "max_n_buckets",
    "tick",
    "n_detections",
)
_LENGTH = struct.Struct("<Q")
_TAIL = struct.Struct("<diQii")  # the binding's own copy of the parameters, after the window
_PARAMETERS = ("delta", "clock", "max_buckets", "min_window_length", "grace_period")


def _dump_windowing(windowing: Any) -> dict[str, Any]:
    raw: bytes = windowing.__getstate__()
    head = dict(zip(_HEAD_NAMES, _HEAD.unpack_from(raw), strict=True))
    at = _HEAD.size
    (count,) = _LENGTH.unpack_from(raw, at)
    at += _LENGTH.size
    buckets = []
    for _ in range(count):
        _size, current = struct.unpack_from("<QQ", raw, at)
        at += 16
        columns = []
        for _column in range(2):
            (length,) = _LENGTH.unpack_from(raw, at)
            at += _LENGTH.size
            columns.append(list(struct.unpack_from(f"<{length}d", raw, at)))
            at += 8 * length
        buckets.append({"used": current, "totals": columns[0], "variances": columns[1]})
    if at + _TAIL.size != len(raw) or _TAIL.unpack_from(raw, at) != windowing.__getnewargs__():
        raise StateError("River's ADWIN state is laid out as this module does not know")
    return {**{k: dump(v) for k, v in head.items()}, "buckets": buckets}


def _load_windowing(template: Any, state: Any, path: str) -> Any:
    if not isinstance(state, Mapping) or set(state) != {*_HEAD_NAMES, "buckets"}:
        raise StateError(f"{path}: expected {sorted({*_HEAD_NAMES, 'buckets'})}")
    parameters = template.__getnewargs__()
    expected = dict(zip(_PARAMETERS, parameters, strict=True))
    for name, value in expected.items():
        if state[name] != value:
            raise StateError(f"{path}.{name}: the monitor's detector has {value!r}")
    slots = int(expected["max_buckets"]) + 1
    buckets = state["buckets"]
    if not isinstance(buckets, list) or not 1 <= len(buckets) <= _MAX_BUCKET_LISTS:
        raise StateError(f"{path}.buckets: expected 1 to {_MAX_BUCKET_LISTS} bucket lists")
    body = [_LENGTH.pack(len(buckets))]
    width = 0
    for i, bucket in enumerate(buckets):
        where = f"{path}.buckets[{i}]"
        if not isinstance(bucket, Mapping) or set(bucket) != {"used", "totals", "variances"}:
            raise StateError(f"{where}: expected used, totals and variances")
        used = _count(bucket["used"], f"{where}.used", 0, slots - 1)
        if i == len(buckets) - 1 and i > 0 and used == 0:
            raise StateError(f"{where}: the last bucket list is never empty")
        width += used << i
        body.append(struct.pack("<QQ", slots - 1, used))
        for column in ("totals", "variances"):
            values = bucket[column]
            if not isinstance(values, list) or len(values) != slots:
                raise StateError(f"{where}.{column}: expected {slots} numbers")
            numbers = [_finite(v, f"{where}.{column}") for v in values]
            body.append(_LENGTH.pack(slots) + struct.pack(f"<{slots}d", *numbers))
    head = [_finite(state[n], f"{path}.{n}") for n in ("total", "variance", "width", "total_width")]
    if head[2] != width:
        raise StateError(f"{path}.width: the buckets hold {width} values, not {head[2]}")
    counters = [_count(state[n], f"{path}.{n}", 0, 2**31 - 1) for n in _HEAD_NAMES[9:]]
    raw = _HEAD.pack(
        float(expected["delta"]),
        int(expected["clock"]),
        int(expected["max_buckets"]),
        float(expected["min_window_length"]),
        float(expected["grace_period"]),
        *head,
        *counters,
    ) + b"".join(body)
    raw += _TAIL.pack(*parameters)
    windowing = _ADAPTIVE_WINDOWING(*parameters)
    windowing.__setstate__(raw)
    return windowing
