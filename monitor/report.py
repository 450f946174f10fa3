"""The monitor's HTML report: performance over time beside its label-free estimate, calibration,
the prediction distribution and per-feature drift, from labelled rows (loan.labelled or a replay).

With a challenger's shadow predictions beside them, it also shows champion and challenger side by
side on the applications both scored that have outcomes (the paired rows), with a fifth PNG.

Performance leads with ranking as a credit-risk team reads it (AUC, Gini = 2 AUC - 1, KS) and
calibration; accuracy at 0.5 comes last, as it says little on a portfolio with few defaults.
Drift is read in PSI bands: the score's PSI and each feature's CSI (the same index per
characteristic). A confirmed drift is drawn where it became knowable: a data or prediction
drift at the scoring of the application that confirmed it, a concept or performance drift at
the outcome time of the labelled example that confirmed it, with its evidence shaded.

Pure: a DataFrame in, one HTML file and four PNGs out; ``loanstream report`` reads Kafka and calls
`build_report`. Windows come from one vectorised pass (bincounts into `Stats` vectors, so the
metrics are the monitor's own definitions), and figures are drawn without pyplot's global state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
from matplotlib import dates as mdates
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from scipy import special

from loanstream.contracts import Decision, DriftEvent, DriftSignal
from loanstream.creditrisk import band_rule, psi_band
from monitor.datadrift import psi_test
from monitor.estimate import expected_metrics
from monitor.performance import BINS, CAL_BINS, EPS, Stats, WindowMetrics

logger = logging.getLogger(__name__)

CONTRACT = (
    *("application_id", "event_time", "outcome_time", "probability", "decision"),
    *("model_name", "model_version", "label"),
)
REQUIRED = ("event_time", "probability", "label", "decision", "model_version")
PREDICTION = "probability"  # the drift table's name for the prediction row
DPI = 100
SIGNAL_COLOURS = {
    "concept": "tab:red",
    "data": "tab:orange",
    "prediction": "tab:purple",
    "performance": "tab:brown",
}
MAX_VERSION_MARKS = 12
LABELS = ("all", "approved")  # every application could get an outcome, or selective labels
LABELLED_SIGNALS = (DriftSignal.CONCEPT, DriftSignal.PERFORMANCE)  # confirmed by an outcome


@dataclass(frozen=True)
class ReportWindow:
    """Rows ``[start, end)`` in event-time order: realized metrics and the CBPE estimate."""

    index: int
    start: int
    end: int
    first_time: datetime
    last_time: datetime
    model_versions: tuple[str, ...]
    realized: WindowMetrics
    estimate: WindowMetrics

    @property
    def middle(self) -> datetime:
        return self.first_time + (self.last_time - self.first_time) / 2


@dataclass(frozen=True)
class FeatureDrift:
    """One feature (or the prediction) in the first and last window against the reference."""

    feature: str
    signal: str  # "data" or "prediction"
    kind: str  # "numeric" or "categorical"
    first_psi: float | None  # None when the first window is itself the reference
    first_band: str | None
    psi: float  # last window
    band: str
    p_value: float  # of the last window's PSI with no drift (chi-square approximation)
    wasserstein: float | None  # W1 / reference standard deviation (numeric only)
    ks_p: float | None
    reference_missing: float
    missing_rate: float


@dataclass(frozen=True)
class DriftMark:
    """Where a confirmed drift goes on a time axis: its evidence (the event times of the first
    and the confirming example) and the moment it became knowable. An outcome-confirmed drift
    (concept, performance) became knowable when the confirming outcome arrived, which can be
    long after its application's event time: late outcomes of older applications count too."""

    event: DriftEvent
    evidence_from: datetime
    evidence_to: datetime
    known_at: datetime
    known_by: str  # "scoring", "outcome", or "event time" (the outcome time was not found)

    def as_dict(self) -> dict[str, str]:
        return {
            "event_id": self.event.event_id,
            "signal": str(self.event.signal),
            "evidence_from": self.evidence_from.isoformat(),
            "evidence_to": self.evidence_to.isoformat(),
            "known_at": self.known_at.isoformat(),
            "known_by": self.known_by,
        }


@dataclass(frozen=True)
class ReportResult:
    """Where the report went, its headline numbers, and the tables behind it."""

    html: Path
    plots: tuple[Path, ...]
    summary: dict[str, Any]
    seconds: float
    windows: tuple[ReportWindow, ...]
    drift: tuple[FeatureDrift, ...]
    comparisons: tuple[Comparison, ...] = ()


@dataclass(frozen=True)
class Comparison:
    """Champion and one challenger version on the same labelled applications (paired rows)."""

    challenger_version: str
    champion_versions: tuple[str, ...]
    shared_outcomes: int
    champion: WindowMetrics
    challenger: WindowMetrics
    windows: tuple[tuple[datetime, WindowMetrics, WindowMetrics], ...]  # middle, both models


@dataclass(frozen=True)
class _Rows:
    frame: pd.DataFrame  # sorted by event time
    p: np.ndarray
    y: np.ndarray
    approved: np.ndarray
    versions: np.ndarray


def build_report(
    labelled: pd.DataFrame,
    out_dir: Path,
    *,
    reference: Mapping[str, Any] | None = None,
    drift_events: Sequence[DriftEvent] = (),
    window: int = 5000,
    title: str = "LoanStream monitor report",
    on_step: Callable[[str], None] | None = None,
    shadow: pd.DataFrame | None = None,
    labels: str | None = None,
) -> ReportResult:
    """Write ``report.html`` and its PNGs into ``out_dir`` from one row per labelled example.

    Columns: the LabelledExample fields with the features flattened, one column per feature.
    Without ``reference`` the first window is the drift reference. A remainder shorter than
    half a window joins the last window. ``shadow``: a challenger's predictions (columns
    application_id, model_version, probability, decision), compared on the paired rows.
    ``labels``: how outcomes were given in the run, "all" (whatever the decision) or "approved"
    (selective labels: approved and explored applications only); None when not known.

    >>> import tempfile
    >>> from datetime import timedelta
    >>> rng = np.random.default_rng(1)
    >>> p = rng.random(3000)
    >>> rows = pd.DataFrame({
    ...     "event_time": pd.Timestamp("2025-01-01", tz="UTC") + pd.to_timedelta(
    ...         np.arange(3000), unit="min"),
    ...     "probability": p, "label": (rng.random(3000) < p).astype(int),
    ...     "decision": np.where(p >= 0.5, "approve", "decline"), "model_version": "1",
    ...     "income": rng.lognormal(10, 0.5, 3000)})
    >>> result = build_report(rows, Path(tempfile.mkdtemp()), window=1000)
    >>> result.summary["windows"], [w.realized.count for w in result.windows]
    (3, [1000, 1000, 1000])
    >>> [(d.feature, d.band) for d in result.drift]
    [('income', 'stable'), ('probability', 'stable')]
    """
    started = time.perf_counter()
    step = on_step or (lambda _: None)
    if labels is not None and labels not in LABELS:
        raise ValueError(f"labels must be one of {LABELS} or None, got {labels!r}")
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive number of rows, got {window!r}")
    step("sorting rows by event time")
    rows = _prepare(labelled)
    step("computing windowed metrics")
    windows, overall = _windows(rows, window)
    step("comparing features with the reference")
    drift, notes = _drift_table(rows, reference, windows[0], windows[-1])
    out_dir.mkdir(parents=True, exist_ok=True)
    changes = _version_changes(rows)
    marks = drift_marks(drift_events, rows.frame)
    plots = _plots(out_dir, rows, windows, overall, marks, changes, step)
    if shadow is not None:
        step("comparing champion and challenger")
    comparisons = _comparisons(rows, shadow, window)
    if comparisons:
        plots += (_plot(out_dir, "shadow", lambda fig: _draw_shadow(fig, comparisons)),)
    step("writing the HTML report")
    summary = _summary(rows, windows, overall, drift, drift_events, reference, window, labels)
    summary["drift_marks"] = [m.as_dict() for m in marks]
    summary["shadow"] = [
        {
            "challenger_version": c.challenger_version,
            "champion_versions": list(c.champion_versions),
            "shared_outcomes": c.shared_outcomes,
        }
        | {
            f"{role}_{k}": getattr(m, k)
            for role, m in (("champion", c.champion), ("challenger", c.challenger))
            for k in SHADOW_METRICS
        }
        for c in comparisons
    ]
    html = out_dir / "report.html"
    page = _render(title, summary, windows, drift, marks, notes, plots, comparisons)
    html.write_text(page, "utf-8")
    seconds = time.perf_counter() - started
    logger.info("report of %d rows written to %s in %.2f s", len(rows.p), html, seconds)
    return ReportResult(html, plots, summary, seconds, tuple(windows), drift, tuple(comparisons))


def _prepare(labelled: pd.DataFrame) -> _Rows:
    """The rows in event-time order, with every contract column checked."""
    if len(labelled) == 0:
        raise ValueError("a report needs labelled rows, got an empty frame")
    absent = [c for c in REQUIRED if c not in labelled.columns]
    if absent:
        raise ValueError(f"labelled rows need the columns {list(REQUIRED)}, missing {absent}")
    repeated = sorted({str(c) for c in labelled.columns[labelled.columns.duplicated()]})
    if repeated:
        raise ValueError(f"labelled rows must have distinct column names, repeated: {repeated}")
    times = labelled["event_time"]
    if not isinstance(times.dtype, pd.DatetimeTZDtype) or times.isna().any():
        raise ValueError(
            "event_time must hold time-zone-aware datetimes without gaps, "
            f"got dtype {times.dtype} with {int(times.isna().sum())} missing"
        )
    if times.is_monotonic_increasing:
        frame = labelled.reset_index(drop=True)
    else:
        frame = labelled.sort_values("event_time", kind="stable", ignore_index=True)
    p = _floats(frame["probability"])
    y = _floats(frame["label"])
    for name, bad in (("probability", ~((p >= 0.0) & (p <= 1.0))), ("label", ~np.isin(y, (0, 1)))):
        if bad.any():
            expected = "within [0, 1]" if name == "probability" else "0 or 1"
            first = frame[name].iloc[[int(np.argmax(bad))]].tolist()[0]
            raise ValueError(f"{name} must be {expected}, got {int(bad.sum())} rows like {first!r}")
    approved = frame["decision"].astype(str).to_numpy() == "approve"
    versions = frame["model_version"].astype(str).to_numpy(dtype=object)
    return _Rows(frame, p, y, approved, versions)


def _floats(column: pd.Series) -> np.ndarray:
    """A column as floats, NaN where a value is missing or not a number."""
    return pd.to_numeric(column, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def _stats_vectors(rows: _Rows, sizes: np.ndarray) -> np.ndarray:
    """Each window's `Stats.vector()`, all windows in one pass of bincounts."""
    p, y, count = rows.p, rows.y, len(sizes)
    w = np.repeat(np.arange(count), sizes)
    b = np.minimum((p * BINS).astype(np.int64), BINS - 1)  # Stats' bin: int(p * BINS), capped
    pc = np.clip(p, EPS, 1.0 - EPS)

    def per(weights: np.ndarray | None, key: np.ndarray = w, width: int = 1) -> np.ndarray:
        sums = np.bincount(key, weights, minlength=count * width)
        return sums.reshape(count, width) if width > 1 else sums[:, None]

    return np.hstack(
        [
            per(None),
            per(rows.approved.astype(float)),
            per((y - p) ** 2),
            per(-np.log(np.where(y == 1.0, pc, 1.0 - pc))),
            per(y, w * BINS + b, BINS),
            per(1.0 - y, w * BINS + b, BINS),
            per(p, w * CAL_BINS + b // 10, CAL_BINS),
        ]
    )


def _windows(rows: _Rows, window: int) -> tuple[list[ReportWindow], WindowMetrics]:
    """Realized and estimated metrics of every window, and the realized metrics of all rows."""
    n = len(rows.p)
    starts = list(range(0, n, window))
    if len(starts) > 1 and n - starts[-1] < window / 2:
        starts.pop()  # a short remainder joins the last window
    ends = [*starts[1:], n]
    vectors = _stats_vectors(rows, np.subtract(ends, starts))
    times = rows.frame["event_time"]
    windows = [
        ReportWindow(
            index=i,
            start=s,
            end=e,
            first_time=times.iloc[s].to_pydatetime(),
            last_time=times.iloc[e - 1].to_pydatetime(),
            model_versions=tuple(pd.unique(rows.versions[s:e])),
            realized=Stats.from_vector(vectors[i]).metrics(),
            estimate=expected_metrics(rows.p[s:e], rows.approved[s:e]),
        )
        for i, (s, e) in enumerate(zip(starts, ends, strict=True))
    ]
    return windows, Stats.from_vector(vectors.sum(axis=0)).metrics()


SHADOW_METRICS = ("auc", "gini", "ks", "ece", "brier", "log_loss", "accuracy")


def _metrics_of(rows: _Rows, p: np.ndarray, approved: np.ndarray, cuts: list[int]) -> list[Any]:
    """The monitor's metrics of ``p`` against the rows' labels, per slice between ``cuts``."""
    part = _Rows(rows.frame, p, rows.y, approved, rows.versions)
    vectors = _stats_vectors(part, np.diff(cuts))
    return [Stats.from_vector(v).metrics() for v in vectors]


def _comparisons(rows: _Rows, shadow: pd.DataFrame | None, window: int) -> list[Comparison]:
    """Champion and each challenger version on the rows both scored (the first shadow
    prediction of an application counts, as in the monitor)."""
    if shadow is None or shadow.empty or "application_id" not in rows.frame:
        return []
    shadow = shadow.drop_duplicates("application_id")
    ids = rows.frame["application_id"].astype(str).to_numpy()
    found = []
    for version, group in shadow.groupby(shadow["model_version"].astype(str), sort=True):
        by_id = pd.Series(_floats(group["probability"]), index=group["application_id"].astype(str))
        where = np.flatnonzero(pd.Series(ids).isin(by_id.index).to_numpy())
        challenger_p = by_id.reindex(ids[where]).to_numpy()
        keep = (challenger_p >= 0.0) & (challenger_p <= 1.0)
        where, challenger_p = where[keep], challenger_p[keep]
        if not where.size:
            continue
        paired = _Rows(
            rows.frame.iloc[where],
            rows.p[where],
            rows.y[where],
            rows.approved[where],
            rows.versions[where],
        )
        approved = (
            group.set_index(group["application_id"].astype(str))["decision"]
            .reindex(ids[where])
            .astype(str)
            .to_numpy()
            == "approve"
        )
        n = where.size
        cuts = [*range(0, n, window), n]
        if len(cuts) > 2 and n - cuts[-2] < window / 2:
            cuts.pop(-2)  # a short remainder joins the last window
        both = [
            _metrics_of(paired, p, a, [0, n]) + _metrics_of(paired, p, a, cuts)
            for p, a in ((paired.p, paired.approved), (challenger_p, approved))
        ]
        times = paired.frame["event_time"]
        middles = [times.iloc[(a + b - 1) // 2].to_pydatetime() for a, b in pairwise(cuts)]
        found.append(
            Comparison(
                str(version),
                tuple(str(v) for v in pd.unique(paired.versions)),
                n,
                both[0][0],
                both[1][0],
                tuple(zip(middles, both[0][1:], both[1][1:], strict=True)),
            )
        )
    return found


def drift_marks(events: Sequence[DriftEvent], frame: pd.DataFrame) -> list[DriftMark]:
    """Each event with its evidence span and the moment it became knowable, in that order.

    A data or prediction drift is known when the application that confirmed it was scored (its
    event time). A concept or performance drift is known when the outcome that confirmed it
    arrived: the ``outcome_time`` of the labelled row with the confirming event time (and
    version), or that event time itself when no such row is in ``frame``.

    >>> from datetime import timedelta
    >>> t0 = datetime(2025, 1, 1, tzinfo=UTC)
    >>> e = DriftEvent(event_id="e", signal="concept", detector="lr", statistic=9.0,
    ...     threshold=5.0, window_size=100, first_position=10, confirmed_position=40,
    ...     first_event_time=t0 + timedelta(days=2), confirmed_event_time=t0,
    ...     model_name="m", model_version="1")
    >>> rows = pd.DataFrame({"event_time": [t0, t0 + timedelta(days=1)], "model_version": "1",
    ...     "outcome_time": [t0 + timedelta(days=30), t0 + timedelta(days=5)]})
    >>> m = drift_marks([e], rows)[0]
    >>> m.evidence_from.day, m.evidence_to.day, m.known_at.isoformat(), m.known_by
    (1, 3, '2025-01-31T00:00:00+00:00', 'outcome')
    """
    times = pd.to_datetime(frame["event_time"], utc=True)
    outcomes = frame.get("outcome_time")
    versions = frame["model_version"].astype(str) if "model_version" in frame else None
    marks = []
    for event in events:
        first, confirmed = event.first_event_time, event.confirmed_event_time
        known, by = confirmed, "scoring"
        if event.signal in LABELLED_SIGNALS:
            known, by = confirmed, "event time"
            if outcomes is not None:
                match = (times == pd.Timestamp(confirmed)).to_numpy()
                if versions is not None:
                    same = match & (versions == event.model_version).to_numpy()
                    match = same if same.any() else match
                found = pd.to_datetime(outcomes[match], utc=True).dropna()
                if len(found):
                    known, by = found.max().to_pydatetime(warn=False), "outcome"
        marks.append(DriftMark(event, min(first, confirmed), max(first, confirmed), known, by))
    return marks


def _version_changes(rows: _Rows) -> list[tuple[datetime, str]]:
    """When each model version after the first was first seen."""
    first = pd.Series(rows.versions).drop_duplicates().iloc[1:]
    times = rows.frame["event_time"]
    return [(times.iloc[i].to_pydatetime(), str(v)) for i, v in first.items()]


# ---- per-feature drift against the reference profile (trainer/reference.py's format) ----


def _drift_table(
    rows: _Rows, reference: Mapping[str, Any] | None, first: ReportWindow, last: ReportWindow
) -> tuple[tuple[FeatureDrift, ...], list[str]]:
    """PSI, Wasserstein and p-values of every feature and of the prediction, with notes."""
    frame, notes = rows.frame, []
    columns = [c for c in frame.columns if c not in CONTRACT]
    head = slice(first.start, first.end)
    if reference is None:
        profiles = {c: _profile(frame[c].iloc[head]) for c in columns}
        profiles[PREDICTION] = _numeric_profile(rows.p[head])
        notes.append(f"No model reference was given: the first {first.end} rows are the reference.")
    else:
        profiles = dict(reference.get("features", {}))
        if "prediction" in reference:
            profiles[PREDICTION] = reference["prediction"]
        unprofiled = [str(c) for c in columns if c not in profiles]
        absent = [str(c) for c in profiles if c not in columns and c != PREDICTION]
        if unprofiled:
            notes.append(f"Columns without a reference profile, not compared: {unprofiled}.")
        if absent:
            notes.append(f"Reference features absent from the rows: {absent}.")
    values = {c: frame[c] for c in columns if c in profiles}
    if PREDICTION in profiles:
        values[PREDICTION] = pd.Series(rows.p)
    table = tuple(
        _feature_drift(name, column, profiles[name], head, slice(last.start, last.end), reference)
        for name, column in values.items()
    )
    return table, notes


def _feature_drift(
    name: str,
    column: pd.Series,
    profile: Mapping[str, Any],
    head: slice,
    tail: slice,
    reference: Mapping[str, Any] | None,
) -> FeatureDrift:
    kind = str(profile.get("kind", "numeric"))
    compare = _categorical_psi if kind == "categorical" else _numeric_psi
    last = compare(column.iloc[tail], profile)
    first = None if reference is None else compare(column.iloc[head], profile).psi
    w1 = ks_p = None
    if kind != "categorical":
        w1, ks_p = _distances(_floats(column.iloc[tail]), profile)
    return FeatureDrift(
        feature=str(name),
        signal="prediction" if name == PREDICTION else "data",
        kind=kind,
        first_psi=first,
        first_band=None if first is None else psi_band(first),
        psi=last.psi,
        band=psi_band(last.psi),
        p_value=last.p_value,
        wasserstein=w1,
        ks_p=ks_p,
        reference_missing=float(profile.get("missing_rate", 0.0)),
        missing_rate=last.missing_rate,
    )


@dataclass(frozen=True)
class _Psi:
    psi: float
    p_value: float
    missing_rate: float


def _psi(counts: list[float], shares: list[float], profile: Mapping[str, Any]) -> _Psi:
    """PSI over the reference bins plus a missing bin, as the live monitor computes it."""
    m = float(profile.get("missing_rate", 0.0))
    ref = np.array([(1.0 - m) * s for s in shares] + [m])
    test = psi_test(np.array([counts]), ref[None, :], np.array([float(profile.get("count", 0))]))
    return _Psi(float(test.psi[0]), float(test.p_value[0]), counts[-1] / max(sum(counts), 1))


def _numeric_psi(column: pd.Series, profile: Mapping[str, Any]) -> _Psi:
    x = _floats(column)
    present = x[np.isfinite(x)]
    edges = np.asarray(profile.get("edges", []), dtype=float)
    shares = [float(s) for s in profile.get("shares", [1.0])]
    if len(shares) != len(edges) + 1:
        raise ValueError(f"a numeric profile needs len(edges) + 1 shares, got {profile!r:.200}")
    counts = np.bincount(np.searchsorted(edges, present, side="left"), minlength=len(shares))
    return _psi([*counts.tolist(), len(x) - len(present)], shares, profile)


def _categorical_psi(column: pd.Series, profile: Mapping[str, Any]) -> _Psi:
    known = {str(k): float(v) for k, v in profile.get("shares", {}).items()}
    present = column.dropna().astype(str)
    tally = present.value_counts()
    counts = [float(tally.get(v, 0)) for v in known]
    counts += [len(present) - sum(counts), float(len(column) - len(present))]  # unknown, missing
    shares = [*known.values(), max(0.0, 1.0 - sum(known.values()))]
    return _psi(counts, shares, profile)


def _distances(x: np.ndarray, profile: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """Normalised Wasserstein-1 and KS p of the window's values against the reference sketch.

    As in the live monitor: both CDFs are taken at the reference's percentiles and decile edges
    and as linear between them, so W1 integrates |difference| exactly; beyond the reference's
    range the live values' excess is exact.
    """
    q = np.asarray(profile.get("quantiles", []), dtype=float)
    live = np.sort(x[np.isfinite(x)])
    if len(q) < 2 or live.size == 0:
        return None, None
    grid, ref_cdf = _reference_cdf(q, profile)
    diff = np.searchsorted(live, grid, side="right") / live.size - ref_cdf
    a, b = np.abs(diff[:-1]), np.abs(diff[1:])
    total = np.where(a + b > 0, a + b, 1.0)
    crossing = diff[:-1] * diff[1:] < 0  # the CDFs cross inside the segment
    segments = np.where(crossing, (a * a + b * b) / (2 * total), (a + b) / 2) * np.diff(grid)
    tails = (grid[0] - live[live < grid[0]]).sum() + (live[live > grid[-1]] - grid[-1]).sum()
    w1 = float(segments.sum() + tails / live.size)
    std = float(profile.get("std", 0.0))
    ref_n = float(profile.get("count", 0)) * (1.0 - float(profile.get("missing_rate", 0.0)))
    n_eff = live.size * ref_n / (live.size + ref_n)
    ks_p = float(special.kolmogorov(float(np.max(np.abs(diff))) * np.sqrt(n_eff)))
    return (w1 / std if std > 0 else w1), ks_p


def _reference_cdf(q: np.ndarray, profile: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Grid points and the reference CDF there: exact at decile edges, else from the sketch.

    A tied run of percentiles is a point mass; its CDF is taken in the middle of its jump.
    """
    edges = np.asarray(profile.get("edges", []), dtype=float)
    grid, last = np.unique(np.concatenate([q, edges])), len(q) - 1
    lo = np.searchsorted(q, grid, side="left")
    hi = np.searchsorted(q, grid, side="right") - 1
    below = np.minimum(hi, last - 1)
    width = q[below + 1] - q[below]
    between = below + (grid - q[below]) / np.where(width > 0, width, 1.0)
    cdf = np.where(q[hi] == grid, np.where(lo == hi, hi, hi + 0.5), between) / last
    shares = np.asarray(profile.get("shares", [1.0]), dtype=float)
    cdf[np.searchsorted(grid, edges)] = (np.cumsum(shares) / max(shares.sum(), 1e-300))[:-1]
    return grid, np.clip(np.maximum.accumulate(cdf), 0.0, 1.0)


def _profile(column: pd.Series) -> dict[str, Any]:
    """A reference profile of one column of the first window (trainer/reference.py's format)."""
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        return _numeric_profile(_floats(column))
    present = column.dropna().astype(str)
    shares = present.value_counts(normalize=True)
    missing = 1.0 - len(present) / max(len(column), 1)
    return {
        "kind": "categorical",
        "count": len(column),
        "missing_rate": missing,
        "shares": {str(k): float(v) for k, v in shares.items()},
    }


def _numeric_profile(x: np.ndarray) -> dict[str, Any]:
    present = x[np.isfinite(x)]
    if present.size == 0:
        return {"kind": "numeric", "count": int(x.size), "missing_rate": 1.0}
    inner = np.unique(np.quantile(present, np.linspace(0.0, 1.0, 11)))[1:-1]
    counts = np.bincount(np.searchsorted(inner, present, side="left"), minlength=len(inner) + 1)
    return {
        "kind": "numeric",
        "count": int(x.size),
        "missing_rate": float(1.0 - present.size / x.size),
        "std": float(present.std()),
        "edges": inner.tolist(),
        "shares": (counts / present.size).tolist(),
        "quantiles": np.quantile(present, np.linspace(0.0, 1.0, 101)).tolist(),
    }


# ---- figures: small PNGs, one Figure each, no pyplot state ----


def _plots(
    out_dir: Path,
    rows: _Rows,
    windows: list[ReportWindow],
    overall: WindowMetrics,
    events: Sequence[DriftMark],
    changes: list[tuple[datetime, str]],
    step: Callable[[str], None],
) -> tuple[Path, ...]:
    """The four PNGs; drift known outside the rows' time span is left off the plots."""
    span = (windows[0].first_time, windows[-1].last_time)
    marks = [m for m in events if span[0] <= m.known_at <= span[1]]
    first, last = windows[0], windows[-1]
    drawings: list[tuple[str, Callable[[Figure], None]]] = [
        ("performance", lambda fig: _draw_performance(fig, windows, marks, changes)),
        ("reliability", lambda fig: _draw_reliability(fig, overall, last)),
        ("predictions", lambda fig: _draw_predictions(fig, rows.p, first, last)),
        ("rates", lambda fig: _draw_rates(fig, windows, marks, changes)),
    ]
    paths = []
    for name, draw in drawings:
        step(f"plotting {name}")
        paths.append(_plot(out_dir, name, draw))
    return tuple(paths)


def _plot(out_dir: Path, name: str, draw: Callable[[Figure], None]) -> Path:
    fig = Figure(figsize=(8.0, 3.6), dpi=DPI)
    fig.subplots_adjust(left=0.08, right=0.92, bottom=0.14, top=0.91, wspace=0.25)
    draw(fig)
    path = out_dir / f"{name}.png"
    fig.savefig(path, dpi=DPI)
    return path


def _draw_shadow(fig: Figure, comparisons: Sequence[Comparison]) -> None:
    """AUC and ECE per window of paired rows: champion beside each challenger version."""
    auc, ece = fig.subplots(1, 2, sharex=True)
    for c in comparisons:
        x = _times([w[0] for w in c.windows])
        for ax, key in ((auc, "auc"), (ece, "ece")):
            ax.plot(
                x,
                [_value(getattr(w[1], key)) for w in c.windows],
                "o-",
                ms=3,
                label=f"champion (beside v{c.challenger_version[:16]})",
            )
            ax.plot(
                x,
                [_value(getattr(w[2], key)) for w in c.windows],
                "s--",
                ms=3,
                label=f"challenger v{c.challenger_version[:16]}",
            )
    for ax, label in ((auc, "AUC"), (ece, "ECE")):
        ax.set_title(f"{label} on the paired rows, per window", fontsize=9)
        _time_axis(ax)
    auc.legend(fontsize=7, loc="lower left")


def _times(times: Sequence[datetime]) -> np.ndarray:
    """Datetimes as matplotlib's day numbers (what its date axis plots)."""
    return np.asarray(mdates.date2num(list(times)), dtype=float)


def _value(x: float | None) -> float:
    return np.nan if x is None else x


def _series(ax: Axes, windows: list[ReportWindow], key: str, label: str) -> None:
    x = _times([w.middle for w in windows])
    ax.plot(x, [_value(getattr(w.realized, key)) for w in windows], "o-", ms=3, label=label)
    estimate = [_value(getattr(w.estimate, key)) for w in windows]
    ax.plot(x, estimate, "s--", ms=3, label=f"{label}, estimated (CBPE)")


def _marks(
    ax: Axes, events: Sequence[DriftMark], changes: list[tuple[datetime, str]], text: bool
) -> None:
    """Drift as a vertical line where it became knowable, its evidence shaded, coloured by
    signal; model version changes as dotted lines."""
    shown: set[str] = set()
    for mark in events:
        signal = str(mark.event.signal)
        label = None if signal in shown else f"{signal} drift known"
        shown.add(signal)
        colour = SIGNAL_COLOURS.get(signal, "black")
        start, end, at = _times([mark.evidence_from, mark.evidence_to, mark.known_at])
        ax.axvspan(start, max(end, start + 1e-4), color=colour, alpha=0.12, lw=0)
        ax.axvline(at, color=colour, lw=1.2, alpha=0.8, label=label)
    for i, (when, version) in enumerate(changes[:MAX_VERSION_MARKS]):
        at = _times([when])[0]
        ax.axvline(at, color="grey", ls=":", lw=1, label="new model version" if i == 0 else None)
        if text:  # the version comes from outside: never parse it as mathtext
            ax.text(
                at,
                0.98,
                f" model {version[:24]}",
                transform=ax.get_xaxis_transform(),
                rotation=90,
                va="top",
                fontsize=7,
                color="grey",
                parse_math=False,
            )


def _time_axis(ax: Axes) -> None:
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def _draw_performance(
    fig: Figure,
    windows: list[ReportWindow],
    events: Sequence[DriftMark],
    changes: list[tuple[datetime, str]],
) -> None:
    """AUC (Gini on the right axis) realized beside estimated, and the realized KS."""
    auc, ks = fig.subplots(1, 2, sharex=True)
    fig.subplots_adjust(wspace=0.4)  # room for the Gini axis between the panels
    _series(auc, windows, "auc", "AUC")
    auc.secondary_yaxis("right", functions=(lambda a: 2 * a - 1, lambda g: (g + 1) / 2))
    auc.set_title("AUC per window (right axis: Gini = 2 AUC - 1)", fontsize=9)
    x = _times([w.middle for w in windows])
    ks.plot(x, [_value(w.realized.ks) for w in windows], "o-", ms=3, label="KS")
    ks.set_title("KS per window (realized)", fontsize=9)
    for ax in (auc, ks):
        _marks(ax, events, changes, text=ax is auc)
        _time_axis(ax)
    auc.legend(fontsize=7, loc="lower left")


def _draw_rates(
    fig: Figure,
    windows: list[ReportWindow],
    events: Sequence[DriftMark],
    changes: list[tuple[datetime, str]],
) -> None:
    ax = fig.subplots()
    _series(ax, windows, "default_rate", "default rate")
    approval = [_value(w.realized.approval_rate) for w in windows]
    ax.plot(_times([w.middle for w in windows]), approval, "^-", ms=3, label="approval rate")
    _marks(ax, events, changes, text=True)
    ax.set_title("default and approval rate per window", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    _time_axis(ax)


def _draw_reliability(fig: Figure, overall: WindowMetrics, last: ReportWindow) -> None:
    ax = fig.subplots()
    counts = ax.twinx()
    ax.plot([0, 1], [0, 1], color="lightgrey", lw=1, label="perfect calibration")
    for metrics, label in ((overall, "all rows"), (last.realized, "last window")):
        bins = metrics.calibration
        ax.plot(
            [b.mean_probability for b in bins],
            [b.observed_rate for b in bins],
            "o-",
            ms=3,
            label=f"{label} (ECE {metrics.ece:.3f})",
        )
    bins = overall.calibration
    counts.bar(
        [(b.lower + b.upper) / 2 for b in bins],
        [b.count for b in bins],
        width=0.08,
        color="tab:grey",
        alpha=0.2,
    )
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean predicted P(repaid)")
    ax.set_ylabel("observed repaid rate")
    ax.set_zorder(counts.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title("reliability diagram (grey bars: rows per bin, all rows)", fontsize=9)


def _draw_predictions(fig: Figure, p: np.ndarray, first: ReportWindow, last: ReportWindow) -> None:
    ax = fig.subplots()
    edges = np.linspace(0.0, 1.0, 41)
    for w, label in ((first, "first window"), (last, "last window")):
        ax.hist(
            p[w.start : w.end],
            bins=edges.tolist(),
            density=True,
            histtype="step",
            lw=1.5,
            label=f"{label} ({w.end - w.start} rows)",
        )
    ax.set(xlim=(0, 1), xlabel="predicted P(repaid)", ylabel="density")
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title("prediction distribution", fontsize=9)


# ---- headline numbers and the HTML page ----


def _summary(
    rows: _Rows,
    windows: list[ReportWindow],
    overall: WindowMetrics,
    drift: tuple[FeatureDrift, ...],
    events: Sequence[DriftEvent],
    reference: Mapping[str, Any] | None,
    window: int,
    labels: str | None = None,
) -> dict[str, Any]:
    """The headline numbers, JSON-able: realized beside estimated, overall and last window;
    ranking (AUC, Gini, KS) and calibration first, accuracy at 0.5 after them."""
    estimate, last = expected_metrics(rows.p, rows.approved), windows[-1]
    score = next((d for d in drift if d.signal == "prediction"), None)
    return _population(rows, labels) | {
        "rows": len(rows.p),
        "windows": len(windows),
        "window_size": window,
        "first_event_time": windows[0].first_time.isoformat(),
        "last_event_time": last.last_time.isoformat(),
        "model_versions": [str(v) for v in pd.unique(rows.versions)],
        "reference": "first window" if reference is None else "model reference",
        "auc": overall.auc,
        "auc_estimate": estimate.auc,
        "gini": overall.gini,
        "gini_estimate": estimate.gini,
        "ks": overall.ks,
        "accuracy": overall.accuracy,
        "accuracy_estimate": estimate.accuracy,
        "brier": overall.brier,
        "brier_estimate": estimate.brier,
        "log_loss": overall.log_loss,
        "ece": overall.ece,
        "default_rate": overall.default_rate,
        "default_rate_estimate": estimate.default_rate,
        "approval_rate": overall.approval_rate,
        "last_window_auc": last.realized.auc,
        "last_window_auc_estimate": last.estimate.auc,
        "last_window_gini": last.realized.gini,
        "last_window_gini_estimate": last.estimate.gini,
        "last_window_ks": last.realized.ks,
        "last_window_accuracy": last.realized.accuracy,
        "last_window_accuracy_estimate": last.estimate.accuracy,
        "score_psi": None if score is None else score.psi,
        "score_psi_band": None if score is None else score.band,
        "drift_events": len(events),
        "features_act": [d.feature for d in drift if d.band == "act"],
        "features_watch": [d.feature for d in drift if d.band == "watch"],
    }


def _population(rows: _Rows, labels: str | None = None) -> dict[str, Any]:
    """Which population the realized figures stand on, as the run gave outcomes: to every
    application whatever its decision (``labels="all"``), to approved and explored ones only
    (selective labels, ``"approved"``), or not said (None); and the labelled rows by decision.

    >>> rows = _Rows(pd.DataFrame({"decision": ["approve"] * 3 + ["decline"]}), *[None] * 4)
    >>> _population(rows, "all")["population"]
    'Every application could get an outcome in this run, whatever its decision (no selective \
labels): realized on all 4 labelled applications, 3 approved and 1 reviewed or declined.'
    >>> _population(rows, "approved")["population"]
    'Selective labels: outcomes exist only for approved applications and the explored reviews \
and declines, so the realized figures stand on 3 approved and 1 explored applications.'
    """
    decisions = rows.frame["decision"].astype(str)
    counts = decisions.value_counts()
    order = [d.value for d in Decision] + sorted(set(counts.index) - {d.value for d in Decision})
    by_decision = {d: int(counts.get(d, 0)) for d in order}
    total = len(decisions)
    approved = by_decision[Decision.APPROVE.value]
    explored = total - approved
    shares = ", ".join(f"{d} {n:,} ({n / total:.1%})" for d, n in by_decision.items())
    return {
        "labelled_by_decision": by_decision,
        "labelled_share_by_decision": {d: n / total for d, n in by_decision.items()},
        "approved_rows": approved,
        "explored_rows": explored,
        "labels": labels,
        "population": _population_sentence(labels, approved, explored),
        "population_shares": f"Labelled rows by decision: {shares}.",
    }


def _population_sentence(labels: str | None, approved: int, others: int) -> str:
    if labels == "all":
        return (
            "Every application could get an outcome in this run, whatever its decision (no "
            f"selective labels): realized on all {approved + others:,} labelled applications, "
            f"{approved:,} approved and {others:,} reviewed or declined."
        )
    if labels == "approved":
        return (
            "Selective labels: outcomes exist only for approved applications and the explored "
            "reviews and declines, so the realized figures stand on "
            f"{approved:,} approved and {others:,} explored applications."
        )
    return (
        f"Realized on the {approved + others:,} applications with an outcome: {approved:,} "
        f"approved and {others:,} reviewed or declined (the run did not say whether outcomes "
        "were selective)."
    )


def _number(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None or x != x else f"{x:.{digits}f}"


def _p_value(x: float | None) -> str:
    return "n/a" if x is None or x != x else f"{x:.1e}" if x < 1e-3 else f"{x:.3f}"


def _when(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _render(
    title: str,
    summary: dict[str, Any],
    windows: list[ReportWindow],
    drift: tuple[FeatureDrift, ...],
    marks: Sequence[DriftMark],
    notes: list[str],
    plots: tuple[Path, ...],
    comparisons: Sequence[Comparison] = (),
) -> str:
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["num"] = _number
    env.filters["when"] = _when
    env.filters["p"] = _p_value
    return env.from_string(TEMPLATE).render(
        title=title,
        s=summary,
        windows=windows,
        drift=drift,
        marks=sorted(marks, key=lambda m: (m.known_at, m.event.confirmed_event_time)),
        bands=band_rule(),
        notes=notes,
        comparisons=comparisons,
        plots={p.stem: p.name for p in plots},
        now=_when(datetime.now(UTC)),
    )


TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:12px;margin:.5em 0}
td,th{border:1px solid #ddd;padding:3px 7px;text-align:right}th{background:#f4f4f4}
td.l,th.l{text-align:left}img{max-width:100%}
.cards{display:flex;flex-wrap:wrap;gap:10px}.card{border:1px solid #ddd;padding:8px 12px}
.card b{display:block;font-size:1.3em}.stable{background:#e8f5e9}.watch{background:#fff8e1}
.act{background:#ffebee}.note{color:#555;font-size:13px}
</style></head><body>
<h1>{{ title }}</h1>
<p class="note">{{ s.rows }} labelled rows from {{ s.first_event_time }} to
{{ s.last_event_time }}, {{ s.windows }} windows of {{ s.window_size }} rows;
model versions: {{ s.model_versions|join(", ") }}; drift reference: {{ s.reference }}.
Written {{ now }} UTC.</p>
<div class="cards">
{% for label, realized, estimated in [
  ("AUC", s.auc, s.auc_estimate), ("Gini", s.gini, s.gini_estimate)] %}
<div class="card">{{ label }} (realized / estimated)
<b>{{ realized|num(3) }} / {{ estimated|num(3) }}</b></div>{% endfor %}
<div class="card">KS<b>{{ s.ks|num(3) }}</b></div>
<div class="card">ECE (calibration)<b>{{ s.ece|num(3) }}</b></div>
<div class="card">default rate (realized / estimated)
<b>{{ s.default_rate|num(3) }} / {{ s.default_rate_estimate|num(3) }}</b></div>
<div class="card">last window AUC / Gini / KS<b>{{ s.last_window_auc|num(3) }} /
{{ s.last_window_gini|num(3) }} / {{ s.last_window_ks|num(3) }}</b></div>
<div class="card {{ s.score_psi_band or '' }}">score PSI (last window)
<b>{{ s.score_psi|num(3) }} {{ s.score_psi_band or "" }}</b></div>
<div class="card">drift events<b>{{ s.drift_events }}</b></div>
<div class="card">features to act on (CSI &ge; 0.25)
<b>{{ s.features_act|join(", ") or "none" }}</b></div>
<div class="card">accuracy at 0.5 (realized / estimated)
<b>{{ s.accuracy|num(3) }} / {{ s.accuracy_estimate|num(3) }}</b></div>
</div>
<p class="note" id="population">{{ s.population }} {{ s.population_shares }}</p>
<h2>Performance over time</h2>
<img src="{{ plots.performance }}" alt="AUC, Gini and KS per window">
<img src="{{ plots.rates }}" alt="default and approval rate per window">
<p class="note" id="drift-marks">Each confirmed drift is drawn where it became knowable: a
data or prediction drift at the scoring of the application that confirmed it, a concept or
performance drift at the arrival of the outcome that confirmed it (outcomes come late, so this
can be long after that application's event time). The shaded band spans the event times of the
evidence, from the first to the confirming example; it can start before a drift's onset, as
late outcomes of older applications count too.</p>
<h2>Calibration and predictions</h2>
<img src="{{ plots.reliability }}" alt="reliability diagram">
<img src="{{ plots.predictions }}" alt="prediction distribution">
{% if comparisons %}<h2>Champion and challenger on the same applications</h2>
<p class="note">Each challenger scored live applications in shadow (its decisions served
nobody). Both models are measured on the applications both scored that have an outcome.</p>
<table><tr><th class="l">challenger</th><th class="l">champion</th><th>shared outcomes</th>
{% for k in ("AUC", "Gini", "KS", "ECE", "Brier", "log loss", "accuracy") %}
<th>{{ k }} champion</th><th>{{ k }} challenger</th>{% endfor %}</tr>
{% for c in comparisons %}<tr><td class="l">{{ c.challenger_version }}</td>
<td class="l">{{ c.champion_versions|join(", ") }}</td><td>{{ c.shared_outcomes }}</td>
{% for k in ("auc", "gini", "ks", "ece", "brier", "log_loss", "accuracy") %}
<td>{{ c.champion[k]|num }}</td>
<td>{{ c.challenger[k]|num }}</td>{% endfor %}</tr>{% endfor %}</table>
<img src="{{ plots.shadow }}" alt="champion and challenger AUC and ECE on the paired rows">
{% endif %}
<h2>Windows</h2>
<table><tr><th>#</th><th class="l">from</th><th class="l">to</th><th>rows</th>
<th class="l">model</th><th>AUC</th><th>est.</th><th>Gini</th><th>est.</th><th>KS</th>
<th>ECE</th><th>Brier</th><th>est.</th><th>default rate</th><th>est.</th><th>approval rate</th>
<th>accuracy</th><th>est.</th></tr>
{% for w in windows %}<tr><td>{{ w.index }}</td><td class="l">{{ w.first_time|when }}</td>
<td class="l">{{ w.last_time|when }}</td><td>{{ w.realized.count }}</td>
<td class="l">{{ w.model_versions|join(", ") }}</td>
{% for key in ("auc", "gini") %}<td>{{ w.realized[key]|num }}</td>
<td>{{ w.estimate[key]|num }}</td>{% endfor %}<td>{{ w.realized.ks|num }}</td>
<td>{{ w.realized.ece|num }}</td><td>{{ w.realized.brier|num }}</td>
<td>{{ w.estimate.brier|num }}</td>
<td>{{ w.realized.default_rate|num }}</td><td>{{ w.estimate.default_rate|num }}</td>
<td>{{ w.realized.approval_rate|num }}</td><td>{{ w.realized.accuracy|num }}</td>
<td>{{ w.estimate.accuracy|num }}</td></tr>
{% endfor %}</table>
<h2>Feature and prediction drift</h2>
<p class="note">First and last window against the {{ s.reference }}. The score's stability
is its PSI; each feature's is its CSI (characteristic stability index, the same index on one
feature). Bands: {{ bands }}.</p>
<table><tr><th class="l">feature</th><th class="l">kind</th><th class="l">index</th>
<th>first</th><th class="l">band</th><th>last</th><th class="l">band</th><th>p</th>
<th>Wasserstein / sd</th><th>KS p</th><th>missing (ref)</th><th>missing (last)</th></tr>
{% for d in drift %}<tr><td class="l">{{ d.feature }}</td>
<td class="l">{{ "score" if d.signal == "prediction" else d.kind }}</td>
<td class="l">{{ "PSI" if d.signal == "prediction" else "CSI" }}</td>
<td class="{{ d.first_band or '' }}">{{ d.first_psi|num }}</td>
<td class="l {{ d.first_band or '' }}">{{ d.first_band or "" }}</td>
<td class="{{ d.band }}">{{ d.psi|num }}</td><td class="l {{ d.band }}">{{ d.band }}</td>
<td>{{ d.p_value|p }}</td><td>{{ d.wasserstein|num }}</td><td>{{ d.ks_p|p }}</td>
<td>{{ d.reference_missing|num(3) }}</td><td>{{ d.missing_rate|num(3) }}</td></tr>
{% endfor %}</table>
{% for note in notes %}<p class="note">{{ note }}</p>{% endfor %}
<h2>Drift events</h2>
{% if marks %}<table><tr><th class="l">signal</th><th class="l">detector</th>
<th class="l">feature</th><th>statistic</th><th>threshold</th><th>p-value</th>
<th>first position</th><th>confirmed position</th><th class="l">first event time</th>
<th class="l">confirmed event time</th><th class="l">known at</th><th class="l">model</th></tr>
{% for m in marks %}{% set e = m.event %}<tr><td class="l">{{ e.signal }}</td>
<td class="l">{{ e.detector }}</td>
<td class="l">{{ e.feature or "" }}</td><td>{{ e.statistic|num }}</td>
<td>{{ e.threshold|num }}</td><td>{{ e.p_value|p }}</td><td>{{ e.first_position }}</td>
<td>{{ e.confirmed_position }}</td><td class="l">{{ e.first_event_time|when }}</td>
<td class="l">{{ e.confirmed_event_time|when }}</td>
<td class="l">{{ m.known_at|when }} ({{ m.known_by }})</td>
<td class="l">{{ e.model_name }} {{ e.model_version }}</td></tr>
{% endfor %}</table>{% else %}<p>No drift events were given for this period.</p>{% endif %}
<h2>How to read this</h2><ul class="note">
{% if s.labels == "all" %}<li>Realized figures cover every labelled application: in this run
outcomes came whatever the decision, as a synthetic or fully labelled history allows. In
lending, only approved loans get an outcome (selective labels).</li>
{% else %}<li>Realized figures cover labelled loans only, and in lending only approved loans
get an outcome (plus the explored reviews and declines the lender approved anyway): they
describe that population, not every applicant.</li>{% endif %}
<li>The estimate (CBPE) reads the model's own probabilities as the chance of repayment. It
assumes a calibrated model and unchanged repayment behaviour: it cannot see concept drift, which
shows as realized accuracy falling away from the estimate. Its ECE is 0 by construction.</li>
<li>Ranking: Gini = 2 AUC - 1; KS is the largest gap between the score distributions of the
repaid and the defaulted. Both come from 100-bin histograms (AUC within about 0.001 of the
exact value, KS within one bin). Accuracy is at a 0.5 threshold on P(repaid): with few
defaults it stays high whatever the ranking, so read it last.</li>
<li>Read drift by PSI/CSI band ({{ bands }}), not by p-value: on windows of thousands of
rows tests flag immaterial shifts. The drift table's KS p compares a feature's distribution
with the reference at its percentiles; Wasserstein is in reference standard deviations.</li>
<li>Vertical lines mark confirmed drift where it became knowable (coloured by signal; the
shaded band is its evidence) and new model versions (dotted).</li>
</ul></body></html>
"""
