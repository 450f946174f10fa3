"""Tables of applications (history files, replays, training sets) checked against the spec.

``check_frame`` validates a whole chunk with vectorised tests, so replay and training run at
hundreds of thousands of rows per second, and explains each bad row with the same messages as
the message validator (it asks :class:`ApplicationValidator` about those rows only).
``application_columns`` turns good rows into Kafka keys, JSON values and event-time stamps
with one orjson call per column, not one dict per row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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


def json_values(values: list[Any]) -> list[bytes]:
    """Each value as orjson writes it inside a message, from one ``dumps`` call for the column.

    The column's JSON array is cut at its commas; a value whose JSON holds a comma (a string
    with one) makes more pieces than values, and then each value is dumped on its own.
    """
    if not values:
        return []
    pieces = orjson.dumps(values)[1:-1].split(b",")
    if len(pieces) == len(values):
        return pieces
    return [orjson.dumps(value) for value in values]


_YEAR_10000_MS = 253_402_300_800_000


def iso_millis(as_ms: np.ndarray) -> list[bytes]:
    """Each ``datetime64[ms]`` as ``np.datetime_as_string(unit="ms")`` writes it, as ASCII bytes.

    Years 1970-9999 are written digit by digit into one byte matrix (numpy's own formatting
    costs about a microsecond a value); other times, and NaT, go through numpy.
    """
    ms = as_ms.astype(np.int64)
    if not len(ms) or np.isnat(as_ms).any() or ms.min() < 0 or ms.max() >= _YEAR_10000_MS:
        return np.datetime_as_string(as_ms, unit="ms").astype("S").tolist()
    days = as_ms.astype("datetime64[D]")
    months = days.astype("datetime64[M]")
    years = months.astype("datetime64[Y]")
    of_day = ms - days.astype("datetime64[ms]").astype(np.int64)
    fields = (
        (years.astype(np.int64) + 1970, 4, b"-"),
        ((months - years.astype("datetime64[M]")).astype(np.int64) + 1, 2, b"-"),
        ((days - months.astype("datetime64[D]")).astype(np.int64) + 1, 2, b"T"),
        (of_day // 3_600_000, 2, b":"),
        (of_day // 60_000 % 60, 2, b":"),
        (of_day // 1000 % 60, 2, b"."),
        (of_day % 1000, 3, b""),
    )
    text = np.empty((len(ms), 23), dtype=np.uint8)
    at = 0
    for value, width, after in fields:
        for digit in range(width):
            text[:, at + width - 1 - digit] = 48 + value // 10**digit % 10
        at += width
        if after:
            text[:, at] = after[0]
            at += 1
    return text.view("S23").ravel().tolist()


def _integers(numbers: np.ndarray) -> list[bytes]:
    """An integer feature's values (floats, NaN when missing) as JSON integers or null."""
    missing = np.isnan(numbers)
    present = numbers[~missing]
    if not (np.abs(present) < 2.0**63).all():  # infinite or past int64: int() decides, or raises
        return json_values([None if v != v else int(v) for v in numbers.tolist()])
    pieces = json_values(np.where(missing, 0, numbers).astype(np.int64).tolist())
    if missing.any():
        column = np.array(pieces, dtype=object)
        column[missing] = b"null"
        pieces = column.tolist()
    return pieces


def message_template(constants: list[bytes]) -> bytes:
    """A ``bytes %`` template that puts one value between each pair of ``constants``."""
    return b"%s".join(c.replace(b"%", b"%%") for c in constants)


@dataclass(frozen=True)
class MessageColumns:
    """Kafka messages as parallel lists: keys, JSON values, timestamps in ms (the hot path
    produces from these without building a tuple per message)."""

    keys: list[bytes]
    values: list[bytes]
    millis: list[int]

    def __len__(self) -> int:
        return len(self.keys)

    def tuples(self) -> list[tuple[bytes, bytes, int]]:
        return list(zip(self.keys, self.values, self.millis, strict=True))


def application_messages(good: pd.DataFrame, spec: FeatureSpec) -> list[tuple[bytes, bytes, int]]:
    """(key, JSON value, event time in ms) for each checked row."""
    return application_columns(good, spec).tuples()


def application_columns(good: pd.DataFrame, spec: FeatureSpec) -> MessageColumns:
    """Keys, JSON values and event times (ms) of checked rows, built column by column.

    Each value is the bytes ``orjson.dumps`` gives for the envelope dict (schema_version,
    application_id, event_time, features in spec order): every column is encoded by one
    orjson call and each row is filled into one template, so no dict is built per row.
    """
    ids = good[spec.id_column].tolist()
    times = good[spec.event_time_column]
    as_ms = times.to_numpy(dtype="datetime64[ms]")  # whatever unit pandas parsed into
    millis = as_ms.astype(np.int64).tolist()
    stamps = iso_millis(as_ms)
    columns = []
    for feature in spec.features:
        column = good[feature.name]
        if isinstance(feature, CategoricalFeature):
            columns.append(json_values(column.tolist()))
        elif feature.type == "integer":
            columns.append(_integers(column.to_numpy(float)))
        else:  # orjson writes NaN as null
            columns.append(json_values(column.to_numpy(float).tolist()))
    constants = [
        b'{"schema_version":' + orjson.dumps(SCHEMA_VERSION) + b',"application_id":',
        b',"event_time":"',
        b'Z","features":{',
    ]
    for i, name in enumerate(spec.feature_names):
        constants[-1] += (b"," if i else b"") + orjson.dumps(name) + b":"
        constants.append(b"")
    constants[-1] += b"}}"
    template = message_template(constants)
    values = [template % row for row in zip(json_values(ids), stamps, *columns, strict=True)]
    return MessageColumns([key.encode() for key in ids], values, millis)
