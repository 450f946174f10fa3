"""Messages built column by column are the bytes the dict-per-row encoding gave, and the
emitter's produce calls (positional, no callback per message) still report every failure."""

from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry

from loanstream.config import KafkaSettings
from loanstream.contracts import SCHEMA_VERSION
from loanstream.errors import DeliveryError
from loanstream.frames import (
    application_columns,
    application_messages,
    check_frame,
    iso_millis,
    json_values,
)
from loanstream.kafka.clients import IdempotentProducer
from loanstream.spec import CategoricalFeature, FeatureSpec, load_spec
from producer.emitter import Emitter, Pacing, outcome_messages
from producer.generator import Generator
from producer.metrics import ProducerMetrics
from producer.outcomes import OUTCOME_TIME
from producer.scenarios import load_scenario
from producer.world import load_world

SPEC = load_spec()


def history(rows: int, seed: int) -> pd.DataFrame:
    return Generator(SPEC, load_world(None, SPEC), load_scenario("stable"), seed=seed).rows(0, rows)


def reference_applications(good: pd.DataFrame, spec: FeatureSpec) -> list[tuple[bytes, bytes, int]]:
    """The encoding replay used before: one dict per row, one orjson call per message."""
    ids = good[spec.id_column].tolist()
    as_ms = good[spec.event_time_column].to_numpy(dtype="datetime64[ms]")
    stamps = np.datetime_as_string(as_ms, unit="ms").tolist()
    columns: list[list[Any]] = []
    for feature in spec.features:
        column = good[feature.name]
        if isinstance(feature, CategoricalFeature):
            columns.append(column.tolist())
        elif feature.type == "integer":
            columns.append([None if v != v else int(v) for v in column.to_numpy(float).tolist()])
        else:
            columns.append([None if v != v else v for v in column.to_numpy(float).tolist()])
    return [
        (
            key.encode(),
            orjson.dumps(
                {
                    "schema_version": SCHEMA_VERSION,
                    "application_id": key,
                    "event_time": f"{stamp}Z",
                    "features": dict(zip(spec.feature_names, values, strict=True)),
                }
            ),
            ms,
        )
        for key, stamp, ms, values in zip(
            ids, stamps, as_ms.astype(np.int64).tolist(), zip(*columns, strict=True), strict=True
        )
    ]


def reference_outcomes(rows: pd.DataFrame, spec: FeatureSpec) -> list[tuple[bytes, bytes, int]]:
    labelled = rows[rows[OUTCOME_TIME].notna() & rows[spec.target_column].notna()]
    times = pd.to_datetime(labelled[OUTCOME_TIME], utc=True).to_numpy(dtype="datetime64[ms]")
    return [
        (
            key.encode(),
            orjson.dumps(
                {
                    "schema_version": SCHEMA_VERSION,
                    "application_id": key,
                    "label": label,
                    "outcome_time": f"{stamp}Z",
                }
            ),
            ms,
        )
        for key, label, stamp, ms in zip(
            labelled[spec.id_column].tolist(),
            labelled[spec.target_column].astype(int).tolist(),
            np.datetime_as_string(times, unit="ms").tolist(),
            times.astype(np.int64).tolist(),
            strict=True,
        )
    ]


@pytest.mark.parametrize("seed", [1, 7])
def test_application_messages_are_byte_for_byte_the_dict_encoding(seed: int) -> None:
    rows = history(3000, seed)
    rng = np.random.default_rng(seed)
    for name in ("employment_length", "income", "age"):  # nulls in float and integer columns
        rows.loc[rng.choice(len(rows), 100, replace=False), name] = np.nan
    checked = check_frame(rows, SPEC)
    for frame in (rows, checked.good):
        assert application_messages(frame, SPEC) == reference_applications(frame, SPEC)
    columns = application_columns(checked.good, SPEC)
    assert columns.tuples() == application_messages(checked.good, SPEC)
    assert len(columns) == len(checked.good)


def test_awkward_values_are_encoded_as_orjson_encodes_them() -> None:
    rows = history(8, 3)
    rows["loan_purpose"] = ["a,b", 'say "hi"', "naïve", None, "x\\y", "", ",", "car"]
    rows["income"] = [1e16, 1e-7, -0.0, np.inf, 0.1, 123456789.125, np.nan, 5e-324]
    rows["age"] = [2.0**62, -3.0, 0.0, np.nan, 1.0, 99.0, -0.0, 2.0**53 + 2]
    assert application_messages(rows, SPEC) == reference_applications(rows, SPEC)


def test_an_infinite_integer_still_raises_as_before() -> None:
    rows = history(4, 3)
    rows["age"] = [1.0, np.inf, 2.0, 3.0]
    with pytest.raises(OverflowError):
        reference_applications(rows, SPEC)
    with pytest.raises(OverflowError):
        application_messages(rows, SPEC)


def test_outcome_messages_are_byte_for_byte_the_dict_encoding() -> None:
    rows = history(3000, 5)
    messages, due = outcome_messages(rows, SPEC, OUTCOME_TIME)
    assert messages == reference_outcomes(rows, SPEC)
    assert due.tolist() == [ms * 1_000_000 for _, _, ms in messages]


def test_json_values_splits_one_array_or_falls_back_when_a_value_holds_a_comma() -> None:
    assert json_values([]) == []
    assert json_values([1, None, 2.5, "a"]) == [b"1", b"null", b"2.5", b'"a"']
    assert json_values(["a,b", "c"]) == [b'"a,b"', b'"c"']


def test_iso_millis_writes_what_numpy_writes() -> None:
    rng = np.random.default_rng(0)
    ms = rng.integers(0, 253_402_300_800_000, 20_000)
    edges = [0, 253_402_300_799_999, 951_782_400_000, 1_709_164_800_001]  # 1970, 9999, leap days
    for times in (
        np.concatenate([ms, edges]).astype("datetime64[ms]"),
        np.array(["NaT", "2026-01-31T12:00:00.5"], dtype="datetime64[ms]"),
        np.array(["1960-01-01T00:00:00.001", "2026-01-31"], dtype="datetime64[ms]"),
        np.array([], dtype="datetime64[ms]"),
    ):
        assert iso_millis(times) == np.datetime_as_string(times, unit="ms").astype("S").tolist()


def test_the_emitter_reports_every_message_that_was_not_delivered() -> None:
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:1")  # nothing listens there
    emitter = Emitter(kafka, SPEC, Pacing(), ProducerMetrics(CollectorRegistry()), None)
    emitter._producer = IdempotentProducer(  # the emitter's settings, with a short timeout
        kafka,
        {"message.timeout.ms": 200, "log_level": 0},
        on_delivery=emitter._delivered,
    )
    rows = check_frame(history(50, 2), SPEC).good
    emitter.emit(rows)
    with pytest.raises(DeliveryError, match="50 messages were not acknowledged"):
        emitter.finish()
    assert emitter.summary.applications == 50
    assert emitter.summary.failed == 50
    assert emitter.summary.retried == 150
    assert sorted(value for _, _, value, _ in emitter._failed) == sorted(
        value for _, value, _ in application_messages(rows, SPEC)
    )
