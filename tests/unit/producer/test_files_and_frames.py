from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loanstream.errors import SpecError
from loanstream.files import HistoryWriter, count_rows, read_chunks, sorted_chunks
from loanstream.frames import ROW, check_frame
from loanstream.spec import load_spec
from producer.generator import Generator
from producer.rate import TokenBucket
from producer.scenarios import load_scenario
from producer.world import load_world

SPEC = load_spec()


def history(rows: int, seed: int = 3) -> pd.DataFrame:
    return Generator(SPEC, load_world(None, SPEC), load_scenario("stable"), seed=seed).rows(0, rows)


def test_bad_rows_are_rejected_with_their_row_number_reason_and_message() -> None:
    frame = history(50)
    frame["age"] = frame["age"].astype(object)
    frame.loc[3, "credit_score"] = 9999
    frame.loc[7, "income"] = np.nan
    frame.loc[9, "age"] = "35"
    frame.loc[11, "loan_purpose"] = "yacht"
    frame.loc[13, SPEC.event_time_column] = None
    frame.loc[17, SPEC.id_column] = "has space"
    checked = check_frame(frame, SPEC, first_row=100)
    assert [(r.row, r.reason, r.error) for r in checked.rejections] == [
        (103, "out_of_range", "features.credit_score must be within [300, 850], got 9999"),
        (107, "wrong_type", "features.income must not be null"),
        (109, "wrong_type", "features.age must be an integer, got string '35'"),
        (
            111,
            "out_of_range",
            "features.loan_purpose must be one of "
            f"{SPEC.feature('loan_purpose').values}, got string 'yacht'",
        ),  # type: ignore[union-attr]
        (113, "wrong_type", "event_time must not be null"),
        (
            117,
            "invalid_value",
            "application_id: string should match pattern "
            "'^[A-Za-z0-9][A-Za-z0-9._:-]*$', got string 'has space'",
        ),
    ]
    assert len(checked.good) == 44
    assert 103 not in set(checked.good[ROW])


def test_a_file_without_the_specs_columns_is_refused_whole() -> None:
    with pytest.raises(SpecError, match=r"the file lacks columns \['income'\] that spec"):
        check_frame(history(5).drop(columns="income"), SPEC)


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_unsorted_files_come_back_in_event_time_order_in_bounded_chunks(
    tmp_path: Path, suffix: str
) -> None:
    rows = history(12_000).sample(frac=1.0, random_state=4).reset_index(drop=True)
    path = tmp_path / f"h{suffix}"
    writer = HistoryWriter(path)
    writer.write(rows.iloc[:6000])
    writer.write(rows.iloc[6000:])
    writer.close()
    assert count_rows(path) == 12_000
    assert max(len(c) for c in read_chunks(path, rows=2500)) == 2500
    chunks = list(sorted_chunks(path, SPEC.event_time_column, rows=2000))
    assert max(len(c) for c in chunks) <= 1000 * 6  # at most 1000 per sorted run (6 runs)
    merged = pd.concat(chunks, ignore_index=True)
    times = pd.to_datetime(merged[SPEC.event_time_column], utc=True)
    assert times.is_monotonic_increasing
    assert sorted(merged[ROW]) == list(range(12_000))
    original = rows.loc[merged[ROW], SPEC.id_column].tolist()
    assert merged[SPEC.id_column].tolist() == original  # each row keeps its file row number


def test_token_bucket_sustains_its_rate_on_a_fake_clock() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    bucket = TokenBucket(rate=5000.0, clock=lambda: now[0], sleep=sleep)
    sent = 0
    while sent < 50_000:
        sent += bucket.take(1000)
        now[0] += 0.0001  # the work of sending
    assert sent / now[0] == pytest.approx(5000, rel=0.01)


@pytest.mark.parametrize("rate", [2000.0, 50.0])
def test_token_bucket_waits_at_least_its_minimum_and_keeps_the_rate(rate: float) -> None:
    """At 2,000/s a wait per token would wake the sender every 0.5 ms for one message; waits of
    at least 2 ms send a few at a time. At 50/s a token takes 20 ms anyway."""
    now, waits = [0.0], []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    bucket = TokenBucket(rate=rate, clock=lambda: now[0], sleep=sleep)
    sent, takes = 0, 0
    while sent < rate * 10:
        sent += bucket.take(10_000)
        takes += 1
    assert min(waits) >= 0.002
    assert sent / now[0] == pytest.approx(rate, rel=0.01)
    assert takes <= now[0] / 0.002 + 1  # one send per wait, not one per token
