"""Tables of applications (history files, replays, training sets) checked against the spec.

``check_frame`` validates a whole chunk with vectorised tests, so replay and training run at
hundreds of thousands of rows per second, and explains each bad row with the same messages as
the message validator (it asks :class:`ApplicationValidator` about those rows only).
``application_messages`` turns good rows into Kafka keys, JSON values and event-time stamps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson
import pandas as pd

from loanstream.contracts import SCHEMA_VERSION
from loanstream.errors import InvalidRecord, SpecError
from loanstream.spec import CategoricalFeature, FeatureSpec
from loanstream.validation import ApplicationValidator

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
ROW = "_row"  # the row's 0-based number in its file, kept through sorting for reports


@dataclass(frozen=True)
class Rejection:
    """A row that cannot be used: its 0-based row number in the file, reason code and message."""

    row: int
    reason: str
    error: str


@dataclass(frozen=True)
class CheckedFrame:
    good: pd.DataFrame  # canonical dtypes, event time as UTC timestamps, ROW = row in the file
    rejections: list[Rejection]


def require_columns(spec: FeatureSpec, columns: list[str], extra: tuple[str, ...] = ()) -> None:
    wanted = [spec.id_column, spec.event_time_column, *spec.feature_names, *extra]
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise SpecError(
            f"the file lacks columns {missing} that spec '{spec.name}' names "
            f"(it has {list(columns)[:20]})"
        )


def check_frame(frame: pd.DataFrame, spec: FeatureSpec, first_row: int = 0) -> CheckedFrame:
    """Split a chunk into usable rows and rejections. Extra columns are kept as they are."""
    require_columns(spec, list(frame.columns))
    frame = frame.reset_index(drop=True)
    if ROW not in frame:
        frame[ROW] = np.arange(first_row, first_row + len(frame))
    ok = np.ones(len(frame), dtype=bool)
    ids = frame[spec.id_column].astype("string")
    ok &= ids.str.fullmatch(ID_PATTERN).fillna(False).to_numpy(dtype=bool)
    times = pd.to_datetime(frame[spec.event_time_column], utc=True, errors="coerce", format="mixed")
    ok &= times.notna().to_numpy()
    clean: dict[str, object] = {spec.id_column: ids, spec.event_time_column: times}
    for feature in spec.features:
        column = frame[feature.name]
        present = column.notna().to_numpy()
        if isinstance(feature, CategoricalFeature):
            valid = column.isin(feature.values).to_numpy()
            clean[feature.name] = column.where(present, None).astype(object)
        else:
            numbers = pd.to_numeric(column, errors="coerce").astype(float)
            as_float = numbers.to_numpy()
            not_bool = not pd.api.types.is_bool_dtype(column)
            valid = (
                np.isfinite(as_float)
                & (as_float >= feature.min)
                & (as_float <= feature.max)
                & not_bool
            )
            if feature.type == "integer":
                valid &= np.floor(np.nan_to_num(as_float)) == np.nan_to_num(as_float)
            if column.dtype == object:  # strings that look like numbers are still strings
                valid &= column.map(lambda v: not isinstance(v, str)).to_numpy(dtype=bool)
            clean[feature.name] = numbers
        ok &= valid | (~present & feature.nullable)
    good = pd.DataFrame(clean)
    for column in frame.columns:
        if column not in good:
            good[column] = frame[column]
    validator = ApplicationValidator(spec)  # builds its model lazily, once for all bad rows
    rejections = [_explain(frame, i, spec, validator) for i in np.flatnonzero(~ok).tolist()]
    return CheckedFrame(good=good[ok].reset_index(drop=True), rejections=rejections)


def _explain(
    frame: pd.DataFrame, i: int, spec: FeatureSpec, validator: ApplicationValidator
) -> Rejection:
    row = frame.iloc[i]
    number = int(row[ROW])

    def native(value: object) -> object:
        if value is None or (not isinstance(value, list | dict) and pd.isna(value)):
            return None
        if isinstance(value, pd.Timestamp):
            return value.isoformat() if value.tzinfo else value.tz_localize("UTC").isoformat()
        return value.item() if isinstance(value, np.generic) else value

    time_value = native(row[spec.event_time_column])
    if isinstance(time_value, str) and not pd.isna(
        pd.to_datetime(time_value, errors="coerce", utc=True)
    ):
        time_value = pd.to_datetime(time_value, utc=True).isoformat()  # files may omit offsets
    message = {
        "application_id": native(row[spec.id_column]),
        "event_time": time_value,
        "features": {
            name: value
            for name in spec.feature_names
            if (value := native(row[name])) is not None or not spec.feature(name).nullable
        },
    }
    try:
        validator.validate(message)
    except InvalidRecord as err:
        return Rejection(number, err.reason, "; ".join(err.problems))
    return Rejection(number, "invalid_value", "row failed the table checks")


def application_messages(good: pd.DataFrame, spec: FeatureSpec) -> list[tuple[bytes, bytes, int]]:
    """(key, JSON value, event time in ms) for each checked row."""
    ids = good[spec.id_column].tolist()
    times = good[spec.event_time_column]
    as_ms = times.to_numpy(dtype="datetime64[ms]")  # whatever unit pandas parsed into
    millis = as_ms.astype(np.int64).tolist()
    stamps = np.datetime_as_string(as_ms, unit="ms")
    columns = []
    for feature in spec.features:
        column = good[feature.name]
        if isinstance(feature, CategoricalFeature):
            columns.append(column.tolist())
        elif feature.type == "integer":  # NaN is the one value not equal to itself
            columns.append([None if v != v else int(v) for v in column.to_numpy(float).tolist()])
        else:
            columns.append([None if v != v else v for v in column.to_numpy(float).tolist()])
    names = spec.feature_names
    return [
        (
            key.encode(),
            orjson.dumps(
                {
                    "schema_version": SCHEMA_VERSION,
                    "application_id": key,
                    "event_time": f"{stamp}Z",
                    "features": dict(zip(names, values, strict=True)),
                }
            ),
            ms,
        )
        for key, stamp, ms, values in zip(
            ids, stamps.tolist(), millis, zip(*columns, strict=True), strict=True
        )
    ]
