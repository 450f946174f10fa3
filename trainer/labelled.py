"""Labelled examples from loan.labelled, checked before they are trained on, in bounded memory.

Whoever can write loan.labelled can put anything there: ``{}``, a string for a number, a label
of 7, an event dated 9999 (which, as the newest row, would push every real row out of an
open-ended window). Each record is checked against the LabelledExample contract, the feature
spec (the scorer's own validator) and a latest plausible time; a bad one is handed to
``on_invalid`` with the reason and skipped.
Of the valid rows in the window, at most ``limit`` are kept: the newest by event time, so a
window holding more than a round may train on costs a bounded amount of memory.

>>> from loanstream.spec import load_spec
>>> bad = []
>>> rows = WindowRows(load_spec(), None, None, limit=10,
...                   on_invalid=lambda key, value, err: bad.append(err.reason))
>>> rows(b"a-1", b"{}"), rows(b"a-2", b"not json"), bad
(None, None, ['missing_field', 'malformed_json'])
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson
import pandas as pd
from pydantic import ValidationError

from loanstream.contracts import LabelledExample
from loanstream.errors import InvalidRecord
from loanstream.spec import FeatureSpec, NumericFeature
from loanstream.timebounds import OUT_OF_BOUNDS
from loanstream.validation import DEFAULT_MAX_BYTES, ApplicationValidator

Row = tuple[Any, ...]  # id, event time, each feature in spec order, label


def _envelope_problem(error: dict[str, Any]) -> str:
    """One contract violation, naming the field and what was expected, never the value."""
    loc = ".".join(str(p) for p in error["loc"]) or "message"
    if error["type"] == "missing":
        return f"{loc} is required but missing"
    if error["type"] == "extra_forbidden":
        return f"{loc} is not a field of the LabelledExample contract"
    return f"{loc}: {error['msg'][0].lower()}{error['msg'][1:]}"


def check_labelled(
    value: bytes, validator: ApplicationValidator, latest: datetime | None = None
) -> Row:
    """The training row of one loan.labelled record; :class:`InvalidRecord` with every
    problem when it breaks the contract or the feature spec, or its times are after
    ``latest``."""
    if len(value) > validator.max_bytes:
        raise InvalidRecord(
            [f"message must be at most {validator.max_bytes} bytes, got {len(value)}"], "oversize"
        )
    try:
        record = orjson.loads(value)
    except orjson.JSONDecodeError as err:
        raise InvalidRecord([f"message must be valid JSON: {err}"], "malformed_json") from None
    if not isinstance(record, dict):
        raise InvalidRecord(["message must be a JSON object"], "malformed_json")
    try:
        example = LabelledExample.model_validate(record)
    except ValidationError as err:
        details = err.errors(include_url=False, include_input=False, include_context=False)
        reason = "missing_field" if details[0]["type"] == "missing" else "wrong_type"
        raise InvalidRecord([_envelope_problem(dict(e)) for e in details], reason) from None
    for name, when in (("event_time", example.event_time), ("outcome_time", example.outcome_time)):
        if latest is not None and when > latest:
            raise InvalidRecord(
                [f"{name} must be at most {latest.isoformat()}, got {when.isoformat()}"],
                OUT_OF_BOUNDS,
            )
    application = validator.validate(  # the raw features: the validator is strict about types
        {
            "application_id": example.application_id,
            "event_time": example.event_time,
            "features": record["features"],
        }
    )
    features = application.features
    spec = validator.spec
    return (
        example.application_id,
        example.event_time,
        *(features[name] for name in spec.feature_names),
        example.label,
    )


class WindowRows:
    """Collects the valid rows of ``[start, end)`` from records read one by one (a
    ``parse`` for :func:`loanstream.reading.read_topic`, which keeps nothing itself: every call
    returns None), keeping the newest ``limit`` by event time."""

    def __init__(
        self,
        spec: FeatureSpec,
        start: datetime | None,
        end: datetime | None,
        limit: int,
        on_invalid: Callable[[bytes | None, bytes, InvalidRecord], None],
        latest: datetime | None = None,
    ) -> None:
        self.spec = spec
        self.latest = latest
        self.start = start
        self.end = end
        self.limit = limit
        self.on_invalid = on_invalid
        self.validator = ApplicationValidator(spec, DEFAULT_MAX_BYTES)
        self.heap: list[tuple[datetime, int, Row]] = []
        self.order = itertools.count()
        self.invalid = 0
        self.in_window = 0

    def __call__(self, key: bytes | None, value: bytes) -> None:
        try:
            row = check_labelled(value, self.validator, self.latest)
        except InvalidRecord as err:
            self.invalid += 1
            self.on_invalid(key, value, err)
            return None
        when: datetime = row[1]
        if (self.start is not None and when < self.start) or (
            self.end is not None and when >= self.end
        ):
            return None
        self.in_window += 1
        entry = (when, next(self.order), row)
        if len(self.heap) < self.limit:
            heapq.heappush(self.heap, entry)
        else:
            heapq.heappushpop(self.heap, entry)  # the oldest of them all goes
        return None

    @property
    def dropped(self) -> int:
        """Valid rows of the window left out because ``limit`` newer ones were kept."""
        return self.in_window - len(self.heap)

    def frame(self) -> pd.DataFrame:
        """The kept rows, oldest first, in the columns and types a history file gives
        (:func:`loanstream.frames.check_frame`: numbers as floats, categories as objects)."""
        spec = self.spec
        columns = [spec.id_column, spec.event_time_column, *spec.feature_names, spec.target_column]
        rows = [row for _, _, row in sorted(self.heap)]
        frame = pd.DataFrame(rows, columns=columns, dtype=object)
        frame[spec.id_column] = frame[spec.id_column].astype(str)
        frame[spec.event_time_column] = pd.to_datetime(frame[spec.event_time_column], utc=True)
        for feature in spec.features:
            if isinstance(feature, NumericFeature):
                frame[feature.name] = frame[feature.name].astype(float)
        frame[spec.target_column] = frame[spec.target_column].astype(int)
        return frame
