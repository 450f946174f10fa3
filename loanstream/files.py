"""Read and write history files (Parquet or CSV) in bounded chunks, never whole.

``sorted_chunks`` yields a file's rows in event-time order: a sorted file streams straight
through; an unsorted one is cut into sorted runs on disk and merged chunk by chunk.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from loanstream.errors import LoanStreamError
from loanstream.frames import ROW


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".csv", ".gz") or path.name.endswith(".csv.gz"):
        return "csv"
    raise LoanStreamError(f"{path}: expected a .parquet or .csv file")


def count_rows(path: Path) -> int:
    """Rows in the file (for CSV: lines after the header, read in 1 MiB blocks)."""
    if not path.exists():
        raise LoanStreamError(f"{path}: no such file")
    if _kind(path) == "parquet":
        return int(pq.ParquetFile(path).metadata.num_rows)
    lines, last = 0, b"\n"
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines - 1 + (last != b"\n")


def read_chunks(
    path: Path, rows: int = 50_000, columns: list[str] | None = None
) -> Iterator[pd.DataFrame]:
    """The file's rows in file order, ``rows`` at a time, each with its row number in ROW."""
    if not path.exists():
        raise LoanStreamError(f"{path}: no such file")
    seen = 0
    if _kind(path) == "parquet":
        batches = pq.ParquetFile(path).iter_batches(batch_size=rows, columns=columns)
        frames: Iterator[pd.DataFrame] = (b.to_pandas() for b in batches)
    else:
        frames = iter(pd.read_csv(path, chunksize=rows, usecols=columns, low_memory=False))
    for frame in frames:
        frame[ROW] = np.arange(seen, seen + len(frame))
        seen += len(frame)
        yield frame


def _times(frame: pd.DataFrame, column: str) -> pd.Series:
    return pd.to_datetime(frame[column], utc=True, errors="coerce", format="mixed")


def is_sorted(path: Path, time_column: str, rows: int = 200_000) -> bool:
    """True if event times never decrease (unparseable times are ignored here)."""
    last = None
    for frame in read_chunks(path, rows, columns=[time_column]):
        times = _times(frame, time_column).dropna()
        if times.empty:
            continue
        if not times.is_monotonic_increasing or (last is not None and times.iloc[0] < last):
            return False
        last = times.iloc[-1]
    return True


def sorted_chunks(path: Path, time_column: str, rows: int = 50_000) -> Iterator[pd.DataFrame]:
    """Chunks in event-time order (rows whose time cannot be parsed come first, to be rejected)."""
    if is_sorted(path, time_column):
        yield from read_chunks(path, rows)
        return
    with tempfile.TemporaryDirectory(prefix="loanstream-sort-") as tmp:
        runs = []
        for i, frame in enumerate(read_chunks(path, rows)):
            key = _times(frame, time_column)
            nanos = key.to_numpy(dtype="datetime64[ns]").astype(np.int64)  # NaT is int64 min
            frame = frame.assign(_t=nanos)
            frame = frame.sort_values("_t", kind="stable")
            run = Path(tmp) / f"run-{i:05d}.parquet"
            pq.write_table(
                pa.Table.from_pandas(
                    frame.astype({c: "string" for c in frame.columns if frame[c].dtype == object}),
                    preserve_index=False,
                ),
                run,
            )
            runs.append(run)
        yield from _merge(runs, rows)


def _merge(runs: list[Path], rows: int) -> Iterator[pd.DataFrame]:
    """Merge sorted runs: repeatedly emit every row up to the smallest of the runs' frontiers.

    Memory stays bounded: each run holds one batch of ``max(1000, rows / runs)`` rows.
    """
    per_run = max(1000, rows // max(1, len(runs)))
    readers = [pq.ParquetFile(r).iter_batches(batch_size=per_run) for r in runs]
    heads: list[pd.DataFrame | None] = [_next(r) for r in readers]
    while any(h is not None for h in heads):
        frontier = min(int(h["_t"].iloc[-1]) for h in heads if h is not None)
        parts = []
        for i, head in enumerate(heads):
            if head is None:
                continue
            cut = int(np.searchsorted(head["_t"].to_numpy(), frontier, side="right"))
            parts.append(head.iloc[:cut])
            rest = head.iloc[cut:]
            heads[i] = rest if len(rest) else _next(readers[i])
        merged = pd.concat(parts, ignore_index=True).sort_values(["_t", ROW], kind="stable")
        yield merged.drop(columns="_t").reset_index(drop=True)


def _next(reader: Iterator[pa.RecordBatch]) -> pd.DataFrame | None:
    for batch in reader:
        if batch.num_rows:
            return batch.to_pandas()
    return None


class HistoryWriter:
    """Append DataFrames to a Parquet or CSV file, chunk by chunk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.kind = _kind(path)
        self._parquet: pq.ParquetWriter | None = None
        self._csv_header = True

    def write(self, frame: pd.DataFrame) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.kind == "parquet":
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.path, table.schema)
            self._parquet.write_table(table)
        else:
            out = frame.copy()
            for column in out.columns:
                if isinstance(out[column].dtype, pd.DatetimeTZDtype):
                    out[column] = out[column].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            mode = "w" if self._csv_header else "a"
            out.to_csv(self.path, mode=mode, header=self._csv_header, index=False)
            self._csv_header = False

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
            self._parquet = None


__all__ = ["HistoryWriter", "count_rows", "is_sorted", "read_chunks", "sorted_chunks"]
