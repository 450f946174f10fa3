"""Drift in repayment behaviour: every label tested against the calibrated probability it had.

A calibrated model promises that its applicants repay at rate ``p``. When repayment behaviour
changes, the labels stop keeping that promise, so the natural detector is a sequential
likelihood-ratio test of the labels against the probabilities (Page's CUSUM). Here:

* **Two-sided, over effect sizes.** The alternatives shift the log-odds of every probability by
  ``+d`` or ``-d`` for each ``d`` in ``DELTAS``; one CUSUM per shift. A drift that makes the
  model too optimistic (more defaults), too pessimistic (fewer), or that ends (a stressed regime
  lifting) is found alike.
* **Local.** The same CUSUMs run per region of feature space: the whole population, each
  reference-decile bin of each numeric feature ("income in [41k, 47k)") and each value of each
  categorical ("loan_purpose=car"). A change confined to a subpopulation accumulates evidence at
  the rate of that subpopulation's own labels, instead of being diluted in the overall error rate.
* **Each region's own level.** A calibrated model is calibrated overall, not in every region:
  the benchmark's model promises applicants aged 52 and over 0.18 log-odds more than they
  repay. So each region tests its labels against its *learnt* level, the log-odds offset that
  best explains its labels (maximum likelihood, with a prior around the stated level:
  `_level`). The level is solved from the first label and again each time the region's Fisher
  information doubles (4, 8, 16... units: `_stages`), and frozen after ``learn_information``
  units (a standard error of 0.03), so that a slow drift is not absorbed into it. Between two
  stages it stays put, so a drift's labels count against the level of the labels before them
  instead of being taken into it one by one.
* **The model's calibration, relearnt first.** Nor is a model calibrated in shape always: one
  calibrated on 600 rows wanted its log-odds scaled by 0.77, which no level per region
  expresses. The first labels, up to ``calibration_information`` (200 units), are gathered
  untested, the most likely log-odds intercept and slope are fitted on them
  (`_fit_calibration`), and every later probability is recalibrated so before anything else.
* **One budget.** The threshold ``h`` is shared by all regions and shifts. It is set by
  simulating this very procedure under the model's own calibrated probabilities, each region's
  true level drawn apart from the stated one, so that the run length between false alarms of
  all tests together is at least ``target_run_length`` labels (see `null_threshold`). Testing
  against a level while it is learnt is thus paid for in the threshold, not by a tolerance
  around the level (which made mild drifts take 1.6 times as many labels, and missed some).
* **One alarm per drift.** After a confirmation everything waits until the arriving labels are
  mostly for applications after it (label delays mix regimes for a while; `monitor.settling`),
  then every region learns its new level again, in stages, untested until its information
  reaches ``quiet_information`` (16 units), and tested from there while it goes on learning:
  the regime that follows is the new reference, so its end is a drift too, found as soon as the
  region knows its new level. While a region relearns, only a move back is tested: a further
  move the same way is the confirmed drift going on (a gradual one).

The CUSUMs sum log-likelihood ratios in integer units of ``1 / SCALE`` nats. Integer sums are
exact, so a batch gives bit for bit the state that the same events one at a time give, however
a stream is cut into batches (the live service's batches depend on timing; results must not).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from loanstream.spec import CategoricalFeature, FeatureSpec
from monitor.settling import Settling

DELTAS = (0.5, 1.0, 2.0)  # log-odds shifts tested, each way
SCALE = 1 << 20  # CUSUM units per nat
CLIP = 1e-6  # probabilities are clipped to [CLIP, 1 - CLIP]
BIG = 1 << 42  # per-region offset that keeps a running minimum inside its region (see _advance)
MAX_OFFSET = 3.0  # |log-odds offset| a region may learn
CHUNK = 1024  # labels per vectorised step: the integer sums stay far below BIG
LEARN = 1000.0  # Fisher information (labels x p(1 - p)) after which a region's level is frozen
QUIET = 16.0  # information a region relearns untested after a confirmation (3 stages)
GRID = np.linspace(-3.0, 3.0, 31)  # log-odds: a level is solved between these (`_level`)
PRIOR_INFO = 4.0  # a level's prior is N(0, 1 / PRIOR_INFO) around the stated one (~20 labels)
STAGE = 2.0  # a learning region re-solves its level each time its information grows this much
SPREAD = 0.2  # log-odds: how far regions' true levels are from the stated one, in simulation
TIMES = 64  # recent label event times, to date where the labels stand after a confirmation
CALIBRATE = 200.0  # information over which the model's calibration is relearnt, first
CALIBRATE_LABELS = 20_000  # ... or this many labels, whichever comes first
SLOPES = (0.2, 3.0)  # the relearnt log-odds slope is kept within these
# 2: no tolerance around the levels, a quiet relearning; 3: levels solved in stages; 4: the
# calibration relearnt first
FORMAT = 4


def _short(x: float) -> str:
    """A bin edge as people read it: 41.2k, 1.5M, 0.32, 690."""
    a = abs(x)
    if a >= 1e6:
        return f"{x / 1e6:.3g}M"
    if a >= 1e4:
        return f"{x / 1e3:.3g}k"
    return f"{x:.3g}"


@dataclass(frozen=True)
class Regions:
    """The regions of feature space tested, and which of them an application falls in.

    Region 0 is everyone. Each numeric feature then has one region per reference-decile bin
    (``bins=5``: quintile; a missing value falls in none of them), each categorical one per
    value of the spec.
    """

    names: tuple[str, ...]
    numeric: tuple[tuple[str, int, tuple[float, ...]], ...]  # feature, first region, inner edges
    categorical: tuple[tuple[str, dict[str, int]], ...]  # feature, region of each value
    shares: tuple[float, ...]  # expected share of applications in each region (reference)

    @classmethod
    def from_reference(
        cls, reference: Mapping[str, Any], spec: FeatureSpec, bins: int = 10
    ) -> Regions:
        names, shares = ["all"], [1.0]
        numeric, categorical = [], []
        profiles = reference.get("features", {})
        for feature in spec.features:
            profile = profiles.get(feature.name) or {}
            present = 1.0 - float(profile.get("missing_rate", 0.0))
            if isinstance(feature, CategoricalFeature):
                value_shares = profile.get("shares") or {}
                index = {}
                for value in feature.values:
                    index[value] = len(names)
                    names.append(f"{feature.name}={value}")
                    shares.append(present * float(value_shares.get(value, 0.0)))
                categorical.append((feature.name, index))
                continue
            deciles = [float(e) for e in profile.get("edges", [])]
            decile_shares = [float(s) for s in profile.get("shares", [])]
            if not deciles or len(decile_shares) != len(deciles) + 1:
                continue  # nothing known of this feature: no regions
            step = max(1, round((len(deciles) + 1) / bins))
            cut = list(range(step - 1, len(deciles), step))  # indexes of the kept inner edges
            inner = tuple(deciles[i] for i in cut)
            bounds = [0, *[i + 1 for i in cut], len(decile_shares)]
            first = len(names)
            for k in range(len(inner) + 1):
                low = _short(inner[k - 1]) if k else None
                high = _short(inner[k]) if k < len(inner) else None
                if low is None:
                    names.append(f"{feature.name} < {high}")
                elif high is None:
                    names.append(f"{feature.name} ≥ {low}")
                else:
                    names.append(f"{feature.name} in [{low}, {high})")
                shares.append(present * sum(decile_shares[bounds[k] : bounds[k + 1]]))
            numeric.append((feature.name, first, inner))
        return cls(tuple(names), tuple(numeric), tuple(categorical), tuple(shares))

    @property
    def groups(self) -> int:
        """Regions an application can fall in at once: everyone, plus one per feature."""
        return 1 + len(self.numeric) + len(self.categorical)

    def assign(self, features: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Region ids, one row per application, one column per group; -1 where none."""
        n = len(features)
        out = np.full((n, self.groups), -1, np.int64)
        out[:, 0] = 0
        column = 1
        for name, first, inner in self.numeric:
            values = np.array([_number(f.get(name)) for f in features], float)
            known = ~np.isnan(values)
            bins = np.searchsorted(np.asarray(inner), values, side="right") + first
            out[:, column] = np.where(known, bins, -1)
            column += 1
        for name, index in self.categorical:
            out[:, column] = [index.get(f.get(name), -1) for f in features]  # type: ignore[arg-type]
            column += 1
        return out


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value)


def _log_ratio(q: np.ndarray, y: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Log-likelihood ratio (nats) of label ``y`` under each log-odds shift of probability ``q``
    against none: ``y d - log(1 - q + q e^d)``, one row per label; ``shifts`` is one row for
    every label, or one per label."""
    return y[:, None] * shifts - np.log1p(q[:, None] * np.expm1(shifts))


def llr_units(q: np.ndarray, y: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """`_log_ratio` in CUSUM units, for probabilities already moved by their region's level."""
    return np.rint(_log_ratio(q, y, shifts) * SCALE).astype(np.int64)


def _logit(x: float) -> float:
    x = min(max(x, CLIP), 1.0 - CLIP)
    return math.log(x / (1.0 - x))


def _moved(p: np.ndarray, offset: np.ndarray) -> np.ndarray:
    p = np.clip(p, CLIP, 1.0 - CLIP)
    return 1.0 / (1.0 + (1.0 - p) / p * np.exp(-offset))


@dataclass(frozen=True)
class LabelDrift:
    """A confirmed change of repayment behaviour in one region, with its evidence."""

    region: str
    shift: float  # the log-odds shift of the CUSUM that crossed (negative: more defaults)
    statistic: float  # that CUSUM, in nats
    threshold: float  # in nats
    first_position: int  # the first label of the run that crossed (the CUSUM was 0 before)
    confirmed_position: int
    first_seconds: float  # event time of the application at first_position
    events: int  # labels of the region in the run
    observed_rate: float  # their repayment rate
    expected_rate: float  # what the model promised them, recalibrated, at the region's level


@lru_cache(maxsize=32)
def _null_threshold(
    shares: tuple[float, ...], quantiles: tuple[float, ...], shifts: tuple[float, ...],
    target: int, events: int, seed: int, learn: float,
) -> float:  # fmt: skip
    rng = np.random.default_rng(seed)
    grid = np.arange(2.0, 12.0, 0.5)  # nats
    counts = np.zeros(grid.size)
    levels = np.linspace(0.0, 1.0, len(quantiles))
    array = np.array(shifts)
    for share in shares:
        n = round(events * share)
        if n == 0:
            continue
        p = np.clip(np.interp(rng.random(n), levels, quantiles), CLIP, 1.0 - CLIP)
        truth = rng.normal(0.0, SPREAD)  # the region's level, unknown to the test
        y = (rng.random(n) < _moved(p, np.full(n, truth))).astype(float)
        # the level the test uses for each label: solved from the sums at the last label before
        # it that reached a stage, the last stage being `learn` (as `LabelDriftTest` does)
        sums = np.cumsum(_gathered(p, y), axis=0)
        stage = np.searchsorted(_stages(learn), sums[:, 1], side="right")
        solved = np.flatnonzero(np.diff(stage, prepend=0) > 0)  # labels that reach a stage
        used = np.searchsorted(solved, np.arange(n), side="left") - 1  # the last one before
        level = np.where(used >= 0, _level(sums[solved[np.maximum(used, 0)]]), 0.0)
        units = llr_units(_moved(p, level), y, array)
        walk = np.cumsum(units, axis=0)
        cusum = walk - np.minimum(np.minimum.accumulate(walk, axis=0), 0)
        for column in cusum.T:
            ends = np.flatnonzero(column == 0)  # each run ends where the CUSUM is back at 0
            starts = np.concatenate(([0], ends))
            peaks = np.maximum.reduceat(column, starts) / SCALE
            counts += (peaks[:, None] >= grid[None, :]).sum(axis=0)
    rate = counts / events  # runs reaching each level, per label, summed over every test
    # P(a run reaches h) ~ C exp(-h) for a CUSUM of log-likelihood ratios (Wald): rate(h) is
    # A exp(-h) in the tail; A is taken where at least 30 runs reached the level, the largest
    # (errors of a level being learnt make the tail heavier: the largest A covers them).
    usable = counts >= 30
    if not usable.any():
        raise ValueError(f"{events} simulated labels are too few to set a threshold")
    a = float(np.max(rate[usable] * np.exp(grid[usable])))
    return math.log(a * target)


def null_threshold(
    regions: Regions,
    quantiles: Sequence[float],
    target_run_length: int,
    shifts: Sequence[float] = DELTAS,
    learn_information: float = LEARN,
    events: int = 200_000,
    seed: int = 0,
) -> float:
    """The threshold (nats) giving a run length of ``target_run_length`` labels between false
    alarms across every region and shift together, when the labels follow the calibrated
    probabilities up to each region's own level.

    Probabilities are drawn from the reference's prediction quantiles, each region gets its
    reference share of ``events`` labels and a true level drawn from N(0, SPREAD^2), and runs
    its CUSUMs freely against the level it learns as `LabelDriftTest` does (frozen after
    ``learn_information``). The rate of runs reaching level h, summed over all tests (so two
    tests alarming at once count twice: conservative), is A exp(-h) in its tail, which sets
    h = ln(A x target). Seeded: the same reference always gives the same threshold.
    """
    return _null_threshold(
        tuple(regions.shares),
        tuple(float(q) for q in quantiles),
        tuple(sorted({float(s) for d in shifts for s in (d, -d)})),
        int(target_run_length),
        int(events),
        int(seed),
        float(learn_information),
    )


class LabelDriftTest:
    """Two-sided CUSUMs of labels against calibrated probabilities, per region (module doc).

    >>> import random
    >>> rng = random.Random(4)
    >>> regions = Regions(("all", "x=a", "x=b"), (), (("x", {"a": 1, "b": 2}),), (1.0, 0.5, 0.5))
    >>> test = LabelDriftTest(regions, threshold=12.0)
    >>> for i in range(20_000):
    ...     x, p = rng.choice("ab"), rng.uniform(0.6, 0.95)
    ...     q = p - 0.2 if (x == "b" and i >= 10_000) else p
    ...     [drift] = test.update([p], [int(rng.random() < q)], [{"x": x}], i) or [None]
    ...     if drift:
    ...         print(drift.region, drift.shift, drift.first_position, drift.confirmed_position)
    x=b -1.0 10074 10252
    """

    def __init__(
        self,
        regions: Regions,
        threshold: float,
        shifts: Sequence[float] = DELTAS,
        learn_information: float = LEARN,
        quiet_information: float = QUIET,
        settle_events: int = 200,
        settle_share: float = 0.05,
        calibration_information: float = CALIBRATE,
    ) -> None:
        if not shifts or not all(0 < d <= 5 for d in shifts):
            raise ValueError(f"shifts must be log-odds within (0, 5], got {shifts!r}")
        if threshold <= 0:
            raise ValueError(f"threshold must be positive, got {threshold!r}")
        if not 0 < quiet_information <= learn_information:
            raise ValueError(
                "need 0 < quiet_information <= learn_information, got "
                f"{quiet_information!r} and {learn_information!r}"
            )
        if calibration_information < 0:
            raise ValueError(f"calibration_information must be >= 0, got {calibration_information}")
        self.regions = regions
        self.threshold = float(threshold)
        self.shifts = tuple(sorted({float(s) for d in shifts for s in (-d, d)}))
        self.learn_information = float(learn_information)
        self.quiet_information = float(quiet_information)
        self.settle_events = settle_events
        self.settle_share = settle_share
        self.calibration_information = float(calibration_information)
        self._shift_array = np.array(self.shifts)
        self._limit = round(self.threshold * SCALE)
        self._enough = round(self.learn_information * SCALE)
        self._quiet_enough = round(self.quiet_information * SCALE)
        self._stages = np.rint(_stages(self.learn_information) * SCALE).astype(np.int64)
        self._calibrate_enough = round(self.calibration_information * SCALE)
        # the model's calibration as the labels show it: log-odds a + b x the model's, learnt
        # from the first labels (`_calibrate`); None while they are gathered
        self.calibration: tuple[float, float] | None = (
            None if self._calibrate_enough else (0.0, 1.0)
        )
        self.gathered_z: list[float] = []  # the model's log-odds of the labels gathered so far
        self.gathered_y: list[int] = []  # ... and the labels
        self.gathered_information = 0  # their information, in units
        size = len(regions.names)
        shape = (size, len(self.shifts))
        self.cusum = np.zeros(shape, np.int64)  # in units of 1 / SCALE nats
        self.since = np.zeros(shape, np.int64)  # position of the run's first label
        self.since_seconds = np.zeros(shape)
        self.run_n = np.zeros(shape, np.int64)
        self.run_y = np.zeros(shape, np.int64)
        self.run_q = np.zeros(shape, np.int64)  # promised repayments, in units of 1 / SCALE
        self.offset = np.zeros(size)  # each region's learnt log-odds level (0: as calibrated)
        self.learning = np.ones(size, bool)  # still learning its level
        self.staged = np.zeros(size)  # a learning region's level above offset, this stage
        # `_gathered` summed over a learning region's labels, in units
        self.learnt = np.zeros((2 + GRID.size, size), np.int64)
        # relearning after a confirmation, not tested until quiet_information
        self.quiet = np.zeros(size, bool)
        self.settling: Settling | None = None
        self.times = [0.0] * TIMES
        self.labels = 0  # labels seen, for `times`
        self.confirmed = 0
        self.direction = 0  # sign of the last confirmed shift (0: none yet)

    def update(
        self,
        p: Sequence[float],
        y: Sequence[int],
        features: Sequence[Mapping[str, Any]],
        first: int,
        seconds: Sequence[float] | None = None,
    ) -> list[LabelDrift]:
        """Labels at positions ``first``, ``first + 1``... in arrival order, with their
        probabilities, features and applications' event times (epoch seconds); the drifts they
        confirm, in order (at most one per label). Invalid input changes nothing."""
        n = len(p)
        if n == 0:
            return []
        batch = _Batch(
            np.asarray(p, float),
            np.asarray(y, float),
            self.regions.assign(features),
            np.asarray(seconds if seconds is not None else [0.0] * n, float),
            first,
        )
        found: list[LabelDrift] = []
        lo = 0
        if self.calibration is None:
            lo = self._calibrate(batch, lo)
        if self.calibration is not None:
            batch.p = _recalibrated(batch.p, *self.calibration)
        while lo < n:
            if self.settling is not None:
                lo = self._settle(batch, lo)
                continue
            lo, drift = self._advance(batch, lo, min(n, lo + CHUNK))
            if drift is not None:
                found.append(drift)
        return found

    def _calibrate(self, batch: _Batch, lo: int) -> int:
        """Gather the first labels, untested, until their information reaches
        ``calibration_information`` (or ``CALIBRATE_LABELS`` of them are in); then learn the
        model's calibration from them (`_fit_calibration`). Returns where it stopped."""
        p = np.clip(batch.p[lo:], CLIP, 1.0 - CLIP)
        information = self.gathered_information + np.cumsum(
            np.rint(p * (1.0 - p) * SCALE).astype(np.int64)
        )
        count = len(self.gathered_y) + np.arange(1, p.size + 1)
        done = (information >= self._calibrate_enough) | (count >= CALIBRATE_LABELS)
        take = int(np.argmax(done)) + 1 if done.any() else p.size
        self.gathered_z += np.log(p[:take] / (1.0 - p[:take])).tolist()
        self.gathered_y += batch.y[lo : lo + take].astype(int).tolist()
        self.gathered_information = int(information[take - 1])
        for s in batch.seconds[lo : lo + take]:
            self._remember(float(s))
        if done.any():
            self.calibration = _fit_calibration(
                np.array(self.gathered_z), np.array(self.gathered_y, float)
            )
            self.gathered_z, self.gathered_y = [], []
        return lo + take

    def _settle(self, batch: _Batch, lo: int) -> int:
        """Wait, label by label, until the labels of a confirmed drift's onset have settled;
        then every region learns its new level. Returns where it stopped."""
        assert self.settling is not None
        for i in range(lo, batch.p.size):
            seconds = float(batch.seconds[i])
            self._remember(seconds)
            if self.settling.settled(seconds, self.settle_events, self.settle_share):
                self.settling = None
                self.learning[:] = True
                self.quiet[:] = True
                self.learnt[:] = 0
                self.staged[:] = 0.0
                return i + 1
        return batch.p.size

    def _remember(self, seconds: float) -> None:
        self.times[self.labels % TIMES] = seconds
        self.labels += 1

    def _advance(self, batch: _Batch, lo: int, hi: int) -> tuple[int, LabelDrift | None]:
        """Labels ``[lo, hi)`` through every region: each runs its CUSUMs (unless quiet), and a
        learning one gathers its level. Stops after the first label where a CUSUM crosses or a
        region has learnt enough to freeze its level or to end its quiet, so that what follows
        sees the new state, however the stream was cut."""
        event, region = batch.pairs(lo, hi)
        y = batch.y[event]
        new_region = np.concatenate(([True], region[1:] != region[:-1]))
        starts = np.flatnonzero(new_region)
        rank = np.cumsum(new_region) - 1
        base = _moved(batch.p[event], self.offset[region])  # at the level stated (or learnt)
        learning = self.learning[region]
        # only the pairs of regions still learning gather their level's sums (still sorted)
        owned = region[learning]
        first_owned = np.concatenate(([True], owned[1:] != owned[:-1]))[: owned.size]
        owned_starts = np.flatnonzero(first_owned)
        owned_rank = np.cumsum(first_owned) - 1
        gathered = np.rint(_gathered(base[learning], y[learning]) * SCALE).astype(np.int64)
        summed = _grouped_cumsum(gathered, owned_starts, owned_rank)
        summed += self.learnt.T[owned]
        information = np.zeros(event.size, np.int64)
        information[learning] = summed[:, 1]
        # a learning region is tested against the level of its last stage: solved from its sums
        # at the label that reached the stage, used from the label after it on (`_stages`)
        reached = np.searchsorted(self._stages, summed[:, 1], side="right") > np.searchsorted(
            self._stages, summed[:, 1] - gathered[:, 1], side="right"
        )
        solved = np.zeros(owned.size)
        solved[reached] = _level(summed[reached] / SCALE)
        last = np.maximum.accumulate(np.where(reached, np.arange(owned.size), -1))
        before = np.concatenate(([-1], last))[:-1]  # the last label that reached one, before
        fresh = before >= owned_starts[owned_rank]  # ... in the same region
        level = np.where(fresh, solved[np.maximum(before, 0)], self.staged[owned])
        q = base.copy()
        q[learning] = _moved(batch.p[event[learning]], self.offset[owned] + level)
        units = llr_units(q, y, self._shift_array)
        quiet = self.quiet[region]
        units[quiet] = -SCALE  # relearning after a confirmation: no test yet
        # while a region relearns after a confirmation, a further move the same way is the
        # drift going on (a gradual one), learnt into its level; a move back is tested
        units[learning[:, None] & (np.sign(self._shift_array) == self.direction)] = -SCALE
        # Pairs are sorted by region, then arrival. Within a region the CUSUM from state s0 is
        # S_t = W_t - min(-s0, min_{k<=t} W_k), W the region's running sum. One cumsum serves all
        # regions (W_t = total_t - total before the region's first pair); shifting each region's
        # W down by BIG x its rank keeps a running minimum from reaching into the regions before.
        sink = (rank * BIG)[:, None]
        sunk = _grouped_cumsum(units, starts, rank) - sink
        floor = np.minimum(np.minimum.accumulate(sunk, axis=0), -self.cusum[region] - sink)
        cusum = sunk - floor
        learnt = learning & (information >= self._enough)
        speaks = quiet & (information >= self._quiet_enough)
        stops = (cusum >= self._limit).any(axis=1) | learnt | speaks
        if stops.any():
            at = int(event[stops].min())  # the earliest label that changes a region's state
            if at + 1 < hi:
                return self._advance(batch, lo, at + 1)
        self._commit(batch, event, region, q, cusum, starts)
        final = last[_last_rows(owned_starts, owned.size)]
        staged = np.where(final >= owned_starts, solved[np.maximum(final, 0)], np.nan)
        self._learn(gathered, owned[owned_starts], owned_starts, staged)
        for s in batch.seconds[lo:hi]:
            self._remember(float(s))
        return hi, self._crossing(batch, hi - 1)

    def _commit(
        self,
        batch: _Batch,
        event: np.ndarray,
        region: np.ndarray,
        q: np.ndarray,
        cusum: np.ndarray,
        starts: np.ndarray,
    ) -> None:
        """Store each region's state after its last pair: CUSUMs and what their runs summed."""
        ends = _last_rows(starts, event.size)
        owner = region[starts]
        rows = np.arange(event.size)[:, None]
        # a run begins after the last pair where its CUSUM was 0, or at the region's first pair
        # when the CUSUM was 0 before the batch; otherwise it goes on from before the batch
        last_zero = np.maximum.accumulate(np.where(cusum == 0, rows, -1), axis=0)[ends]
        zero_here = last_zero >= starts[:, None]
        fresh = zero_here | (self.cusum[owner] == 0)
        begin = np.where(zero_here, last_zero + 1, starts[:, None])
        running = cusum[ends] > 0
        cum_y = np.cumsum(batch.y[event].astype(np.int64))
        cum_q = np.cumsum(np.rint(q * SCALE).astype(np.int64))
        previous = np.maximum(begin - 1, 0)
        add_y = cum_y[ends][:, None] - np.where(begin > 0, cum_y[previous], 0)
        add_q = cum_q[ends][:, None] - np.where(begin > 0, cum_q[previous], 0)
        inside = ends[:, None] - begin + 1
        began = fresh & running
        first = event[np.minimum(begin, ends[:, None])]
        carried = ~fresh
        # only a running CUSUM has a start: the state is the same however the stream was cut
        since = np.where(began, batch.first + first, self.since[owner])
        self.since[owner] = np.where(running, since, 0)
        since_seconds = np.where(began, batch.seconds[first], self.since_seconds[owner])
        self.since_seconds[owner] = np.where(running, since_seconds, 0.0)
        self.run_n[owner] = np.where(running, self.run_n[owner] * carried + inside, 0)
        self.run_y[owner] = np.where(running, self.run_y[owner] * carried + add_y, 0)
        self.run_q[owner] = np.where(running, self.run_q[owner] * carried + add_q, 0)
        self.cusum[owner] = cusum[ends]

    def _learn(
        self, gathered: np.ndarray, learners: np.ndarray, starts: np.ndarray, staged: np.ndarray
    ) -> None:
        """Add the learning regions' gathered sums (``starts``: each one's first row) and the
        level of the last stage each reached (NaN: none reached): a region with enough ends its
        quiet, or freezes its level."""
        if learners.size:
            self.learnt[:, learners] += np.add.reduceat(gathered, starts, axis=0).T
            moved = ~np.isnan(staged)
            self.staged[learners[moved]] = staged[moved]
            self.quiet[learners[self.learnt[1, learners] >= self._quiet_enough]] = False
            done = learners[self.learnt[1, learners] >= self._enough]
            # the level of the last stage (the information of `learn_information` is one)
            offset = self.offset[done] + self.staged[done]
            self.offset[done] = np.clip(offset, -MAX_OFFSET, MAX_OFFSET)
            self.learning[done] = False
            self.learnt[:, done] = 0
            self.staged[done] = 0.0

    def _crossing(self, batch: _Batch, at: int) -> LabelDrift | None:
        over = self.cusum >= self._limit
        if not over.any():
            return None
        # the strongest evidence names the drift; ties go to the first region, then shift
        r, k = np.unravel_index(int(np.argmax(np.where(over, self.cusum, -1))), over.shape)
        n = int(self.run_n[r, k])
        drift = LabelDrift(
            region=self.regions.names[r],
            shift=self.shifts[k],
            statistic=float(self.cusum[r, k]) / SCALE,
            threshold=self.threshold,
            first_position=int(self.since[r, k]),
            confirmed_position=batch.first + at,
            first_seconds=float(self.since_seconds[r, k]),
            events=n,
            observed_rate=float(self.run_y[r, k]) / n if n else math.nan,
            expected_rate=float(self.run_q[r, k]) / SCALE / n if n else math.nan,
        )
        self.confirmed += 1
        self.direction = 1 if drift.shift > 0 else -1
        self._restart()
        if n and 0.0 < drift.observed_rate < 1.0:
            # the new level, as the evidence measured it, is where learning starts from: for
            # everyone's region every region moves, else only the region that drifted
            moved = _logit(drift.observed_rate) - _logit(drift.expected_rate)
            where = slice(None) if r == 0 else r
            offset = self.offset[where] + self.staged[where] + moved
            self.offset[where] = np.clip(offset, -MAX_OFFSET, MAX_OFFSET)
            self.staged[where] = 0.0
        return drift

    def _restart(self) -> None:
        """After a confirmation: forget every run, and settle before learning the new levels."""
        for array in (self.cusum, self.run_n, self.run_y, self.run_q, self.since):
            array[:] = 0
        self.since_seconds[:] = 0.0
        self.settling = Settling.after(self.times[: min(self.labels, TIMES)])

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state; the regions come from the reference again."""
        return {
            "format": FORMAT,
            "threshold": self.threshold,
            "shifts": [s for s in self.shifts if s > 0],
            "config": {
                "learn_information": self.learn_information,
                "quiet_information": self.quiet_information,
                "settle_events": self.settle_events,
                "settle_share": self.settle_share,
                "calibration_information": self.calibration_information,
            },
            "regions": list(self.regions.names),
            **{name: getattr(self, name).tolist() for name in _ARRAYS},
            "offset": self.offset.tolist(),
            "staged": self.staged.tolist(),
            "learning": self.learning.tolist(),
            "learnt": self.learnt.tolist(),
            "quiet": self.quiet.tolist(),
            "settling": None if self.settling is None else asdict(self.settling),
            "times": list(self.times),
            "labels": self.labels,
            "confirmed": self.confirmed,
            "direction": self.direction,
            "calibration": None if self.calibration is None else list(self.calibration),
            "gathered_z": list(self.gathered_z),
            "gathered_y": list(self.gathered_y),
            "gathered_information": self.gathered_information,
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any], regions: Regions) -> LabelDriftTest:
        """The test ``to_dict`` described; ValueError when it does not fit these regions."""
        if state.get("format") != FORMAT:
            got = state.get("format")
            raise ValueError(f"label test state format must be {FORMAT}, got {got!r}")
        if list(state["regions"]) != list(regions.names):
            raise ValueError("label test state was saved for other regions (another reference)")
        test = cls(regions, float(state["threshold"]), state["shifts"], **state["config"])
        for name, dtype in _ARRAYS.items():
            array = np.array(state[name], dtype)
            if array.shape != test.cusum.shape:
                raise ValueError(
                    f"label test {name} has shape {array.shape}, not {test.cusum.shape}"
                )
            setattr(test, name, array)
        size = len(regions.names)
        test.offset = _within("offset", state["offset"], -MAX_OFFSET, MAX_OFFSET).reshape(size)
        test.staged = _within("staged", state["staged"], -MAX_OFFSET, MAX_OFFSET).reshape(size)
        test.learning = np.array(state["learning"], bool).reshape(size)
        test.learnt = np.array(state["learnt"], np.int64).reshape(2 + GRID.size, size)
        test.quiet = np.array(state["quiet"], bool).reshape(size)
        settling = state["settling"]
        test.settling = None if settling is None else Settling(**settling)
        test.times = [float(t) for t in state["times"]][:TIMES]
        test.labels, test.confirmed = int(state["labels"]), int(state["confirmed"])
        test.direction = int(state["direction"])
        calibration = state["calibration"]
        if calibration is None:
            test.calibration = None
        else:
            intercept, slope = calibration
            intercept = float(_within("intercept", [intercept], -MAX_OFFSET, MAX_OFFSET)[0])
            test.calibration = (intercept, float(_within("slope", [slope], *SLOPES)[0]))
        # a clipped probability's log-odds are within +-13.8
        test.gathered_z = _within("gathered log-odds", state["gathered_z"], -14.0, 14.0).tolist()
        labels = _within("gathered labels", state["gathered_y"], 0, 1)
        if not np.all(labels == np.rint(labels)):
            raise ValueError("label test gathered labels must be 0 or 1")
        test.gathered_y = labels.astype(int).tolist()
        if len(test.gathered_z) != len(test.gathered_y):
            raise ValueError("label test gathered log-odds and labels differ in length")
        if len(test.gathered_y) > CALIBRATE_LABELS:
            raise ValueError(f"label test gathered more than {CALIBRATE_LABELS} labels")
        test.gathered_information = int(state["gathered_information"])
        return test


def _within(name: str, values: Any, low: float, high: float) -> np.ndarray:
    """``values`` of a restored state as floats, each within [low, high] (NaN is not)."""
    array = np.array(values, float)
    if not np.all((array >= low) & (array <= high)):
        raise ValueError(f"label test {name} must be within [{low:g}, {high:g}]")
    return array


_ARRAYS = {
    "cusum": np.int64,
    "since": np.int64,
    "since_seconds": float,
    "run_n": np.int64,
    "run_y": np.int64,
    "run_q": np.int64,
}


def _gathered(q: np.ndarray, y: np.ndarray) -> np.ndarray:
    """What a region sums of each label to learn its level: the label, its information at the
    stated level, and its probability moved to each level of GRID (one row per label)."""
    moved = _moved(q[:, None], GRID[None, :])
    return np.concatenate((y[:, None], (q * (1.0 - q))[:, None], moved), axis=1)


def _stages(learn: float) -> np.ndarray:
    """The information at which a learning region solves its level again: PRIOR_INFO, then
    growing by STAGE, and last ``learn``, where the level freezes."""
    count = max(0, math.ceil(math.log(learn / PRIOR_INFO) / math.log(STAGE)))
    stages = PRIOR_INFO * STAGE ** np.arange(count)
    return np.append(stages[stages < learn], learn)


def _level(sums: np.ndarray) -> np.ndarray:
    """A region's log-odds level above the one it stated, from the sums of `_gathered` over its
    labels (one row per region): the offset l where the repayments promised at l, plus
    l x PRIOR_INFO, equal those seen (the most likely offset, under a N(0, 1 / PRIOR_INFO)
    prior), solved linearly between the two levels of GRID around it. The logit of the rate
    seen minus that of the rate promised, as used before, says -0.83 where this says -1.19, on a
    drift that moved every probability by about -1.2."""
    excess = sums[:, 2:] + GRID[None, :] * PRIOR_INFO - sums[:, :1]  # rises with the level
    j = np.clip((excess < 0).sum(axis=1), 1, GRID.size - 1)
    rows = np.arange(sums.shape[0])
    low, high = excess[rows, j - 1], excess[rows, j]
    level = GRID[j - 1] - low * (GRID[j] - GRID[j - 1]) / (high - low)
    return np.clip(level, GRID[0], GRID[-1])


def _fit_calibration(z: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """The most likely intercept a and slope b of P(repaid) = 1 / (1 + exp(-(a + b z))), from
    the model's log-odds ``z`` and the labels ``y``, under a N((0, 1), 1 / PRIOR_INFO) prior
    (the model as calibrated, worth ~20 labels); the slope kept within SLOPES. Newton's method
    from (0, 1), a fixed number of steps: the same labels always give the same calibration."""
    x = np.column_stack((np.ones_like(z), z))
    theta = np.array([0.0, 1.0])
    prior = np.array([0.0, 1.0])
    for _ in range(25):
        q = 1.0 / (1.0 + np.exp(-np.clip(x @ theta, -30.0, 30.0)))
        gradient = x.T @ (y - q) - PRIOR_INFO * (theta - prior)
        hessian = (x * (q * (1.0 - q))[:, None]).T @ x + PRIOR_INFO * np.eye(2)
        theta = theta + np.linalg.solve(hessian, gradient)
        theta[1] = min(max(theta[1], SLOPES[0]), SLOPES[1])
        theta[0] = min(max(theta[0], -MAX_OFFSET), MAX_OFFSET)
    return float(theta[0]), float(theta[1])


def _recalibrated(p: np.ndarray, intercept: float, slope: float) -> np.ndarray:
    """Probabilities as the model's calibration relearnt says: log-odds a + b x the model's."""
    if intercept == 0.0 and slope == 1.0:
        return p
    p = np.clip(p, CLIP, 1.0 - CLIP)
    return 1.0 / (1.0 + np.exp(-(intercept + slope * np.log(p / (1.0 - p)))))


def _last_rows(starts: np.ndarray, size: int) -> np.ndarray:
    """The last row of each group, from each one's first row (``starts``) in ``size`` rows."""
    return np.append(starts[1:], size).astype(np.int64)[: starts.size] - 1


def _grouped_cumsum(values: np.ndarray, starts: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """Running sums of ``values`` (rows sorted by group) restarting at each group's first row."""
    total = np.cumsum(values, axis=0)
    before = np.where(starts[:, None] > 0, total[starts - 1], 0)
    return total - before[rank]


class _Batch:
    """Labels as arrays, and their (label, region) pairs sorted by region, then arrival."""

    def __init__(
        self, p: np.ndarray, y: np.ndarray, regions: np.ndarray, seconds: np.ndarray, first: int
    ) -> None:
        if p.size and not (np.all((p >= 0.0) & (p <= 1.0))):
            raise ValueError("probabilities must be within [0, 1]")
        if not np.all((y == 0.0) | (y == 1.0)):
            raise ValueError("labels must be 0 (defaulted) or 1 (repaid)")
        self.p, self.y, self.regions, self.seconds, self.first = p, y, regions, seconds, first

    def pairs(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        block = self.regions[lo:hi]
        event = np.broadcast_to(np.arange(lo, hi)[:, None], block.shape).ravel()
        region = block.ravel()
        keep = region >= 0
        event, region = event[keep], region[keep]
        order = np.argsort(region, kind="stable")
        return event[order], region[order]
