"""Join a challenger's shadow predictions with the same outcomes as the champion's.

A challenger (registry alias ``challenger``) scores every application beside the champion and
its predictions arrive on loan.shadow-predictions; they decide nothing. Each one is joined once
with the application's outcome, into windows of its own version, and, where the champion's
prediction of the same application is joined too, into a *paired* window that holds both
models' figures on exactly the rows both scored: the like-for-like comparison a promotion needs.
Shadow joins never reach loan.labelled (the log of what served) nor the drift detectors (drift
is about the serving model).

One store, keyed by application id like the source topics (a changelogged table in the service,
a dict in tests), holds what waits, as compact JSON: ``s`` the shadow prediction (probability,
version, event time, approved), ``o`` its outcome (label, outcome time) and ``c`` the champion's
half (probability, version, approved). The arrival orders:

- shadow, then outcome (the usual case, labels come late): joined when the outcome comes; the
  champion's prediction is joined by that same outcome, so the pair is complete at once;
- outcome, then shadow: the outcome waits (with the champion's half if the champion was joined
  by it) for ``orphan_ttl`` of processing time, as the champion's orphans do;
- outcome before the champion's prediction too: the shadow joins when it comes and the entry
  waits for the champion's half, which the champion's orphan join hands over (`on_champion`).

An outcome that finds no shadow prediction waits only while the shadow join is *active* (a
shadow prediction came within ``orphan_ttl``, or one is pending): with no challenger every
outcome would otherwise cost two changelog writes. So a shadow prediction whose outcome went by
while the join was idle (the first ones of a new challenger, if their outcomes beat them) is
not joined: it is counted ``late`` (the champion's joiner remembers the recently joined ids) and
dropped. One shadow prediction per application: the scorer has one challenger at a time, and a
repeat, of any version, is a duplicate (at-least-once).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from loanstream.contracts import Decision, Outcome, Prediction
from monitor.join import RECENT_JOINED, RecentKeys
from monitor.performance import CountWindows, Stats, WindowMetrics, WindowResult

FORMAT = 1  # of to_dict()
KEEP_VERSIONS = 3  # challenger versions whose windows are kept (the newest)
METRICS = ("auc", "gini", "ks", "brier", "log_loss", "ece", "accuracy")
ROLES = ("champion", "shadow")


@dataclass(frozen=True)
class Half:
    """One model's answer for an application, as the windows need it."""

    probability: float
    version: str
    approved: bool


@dataclass(frozen=True)
class ShadowCounts:
    """What the shadow join has seen since it started."""

    pending: int  # shadow predictions waiting for their outcome
    waiting: int  # outcomes waiting for a shadow prediction or the champion's half
    joined: int
    paired: int
    expired: int  # no label within the label TTL
    dropped: int  # waited past the orphan TTL
    late: int  # the outcome had gone by while the join was idle
    duplicates: int


@dataclass(frozen=True)
class Closed:
    """A count window of a challenger version closed: ``rows`` "all" (the challenger alone) or
    "paired" (both models on the same rows, ``role`` says whose figures)."""

    version: str
    role: str
    rows: str
    champion_version: str | None
    window: WindowResult


class VersionWindows:
    """Count windows and running totals of one challenger version: on all its joined rows, and
    for both models on the rows both scored (the paired rows close their windows together)."""

    def __init__(self, version: str, size: int, step: int) -> None:
        self.version = version
        self.own = CountWindows(size, step, f"model_version={version}")
        self.paired = {role: CountWindows(size, step, f"paired:{role}") for role in ROLES}
        self.totals = {"all": Stats(), "champion": Stats(), "shadow": Stats()}
        self.champion_version: str | None = None  # of the latest paired row

    def add(self, shadow: Half, label: int) -> list[Closed]:
        self.totals["all"].add(shadow.probability, label, shadow.approved)
        closed = self.own.add(shadow.probability, label, shadow.approved)
        return [] if closed is None else [Closed(self.version, "shadow", "all", None, closed)]

    def add_pair(self, champion: Half, shadow: Half, label: int) -> list[Closed]:
        self.champion_version = champion.version
        out = []
        for role, half in (("champion", champion), ("shadow", shadow)):
            self.totals[role].add(half.probability, label, half.approved)
            closed = self.paired[role].add(half.probability, label, half.approved)
            if closed is not None:
                out.append(Closed(self.version, role, "paired", champion.version, closed))
        return out

    def total(self, rows: str) -> WindowMetrics | None:
        """All rows so far: ``rows`` "all", "champion" or "shadow" (the last two paired)."""
        stats = self.totals[rows]
        return stats.metrics() if stats.count else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "own": self.own.to_dict(),
            "paired": {role: w.to_dict() for role, w in self.paired.items()},
            "totals": {rows: s.to_dict() for rows, s in self.totals.items()},
            "champion_version": self.champion_version,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VersionWindows:
        own = CountWindows.from_dict(data["own"])
        windows = cls(str(data["version"]), own.size, own.step)
        windows.own = own
        windows.paired = {r: CountWindows.from_dict(data["paired"][r]) for r in ROLES}
        windows.totals = {r: Stats.from_dict(data["totals"][r]) for r in windows.totals}
        champion = data.get("champion_version")
        windows.champion_version = None if champion is None else str(champion)
        return windows


def _half(prediction: Prediction) -> Half:
    fields = vars(prediction)
    return Half(
        fields["probability"], fields["model_version"], fields["decision"] == Decision.APPROVE
    )


class ShadowJoiner:
    """Joins shadow predictions with outcomes once each, into per-version windows.

    >>> from datetime import UTC, datetime, timedelta
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> s = Prediction(application_id="a1", event_time=t, probability=0.7,
    ...     decision=Decision.APPROVE, model_name="m", model_version="2", features={},
    ...     received_at=t, scored_at=t)
    >>> o = Outcome(application_id="a1", label=1, outcome_time=t + timedelta(days=30))
    >>> join = ShadowJoiner({}, timedelta(days=400), timedelta(hours=1), size=1, step=1)
    >>> join.on_shadow(s, now=t)
    []
    >>> join.on_outcome(o, Half(0.6, "1", True), now=t)[0].rows  # its windows of 1 row close
    'all'
    >>> join.counts().paired, join.windows["2"].total("champion").count
    (1, 1)
    """

    def __init__(
        self,
        store: MutableMapping[str, bytes],
        label_ttl: timedelta,
        orphan_ttl: timedelta,
        size: int = 5000,
        step: int = 1000,
        version_order: Callable[[str], Any] = str,
    ) -> None:
        self.store = store
        self.label_ttl = label_ttl
        self.orphan_ttl = orphan_ttl
        self.size, self.step = size, step
        self.version_order = version_order
        self.windows: dict[str, VersionWindows] = {}
        # Expiry order: (event time, id) of pending shadows, (arrival, id) of waiting outcomes;
        # an entry that changed state since is skipped when it reaches the front.
        self._pending: deque[tuple[datetime, str]] = deque()
        self._waiting: deque[tuple[datetime, str]] = deque()
        self._joined = RecentKeys(RECENT_JOINED)
        self._last_shadow: datetime | None = None
        self._held = {False: 0, True: 0}  # entries in the store: pending shadows, waiting outcomes
        self.joined = self.paired = self.expired = self.dropped = 0
        self.late = self.duplicates = 0

    # ---- the store: one small JSON object per application id ----

    def _get(self, key: str) -> dict[str, Any] | None:
        raw = self.store.get(key)
        return None if raw is None else orjson.loads(raw)

    def _set(self, key: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        """Replace ``old`` (the entry read) by ``new`` (None: delete it), keeping the counts of
        pending shadows and waiting outcomes."""
        for entry, change in ((old, -1), (new, 1)):
            if entry is not None:
                self._held["o" in entry] += change
        if new is None:
            del self.store[key]
        else:
            self.store[key] = orjson.dumps(new)

    def restore(self, now: datetime) -> None:
        """Rebuild the expiry order from the store (after a restart or a rebalance); waiting
        outcomes get a full TTL again, as with the champion's orphans."""
        pending, waiting = [], []
        self._held = {False: 0, True: 0}
        for key, raw in list(self.store.items()):
            entry = orjson.loads(raw)
            self._held["o" in entry] += 1
            if "o" in entry:
                waiting.append((now, key))
            else:
                pending.append((datetime.fromisoformat(entry["s"][2]), key))
        self._pending, self._waiting = deque(sorted(pending)), deque(waiting)

    def active(self, now: datetime) -> bool:
        """Whether an outcome with no shadow prediction should wait for one (see the module)."""
        last = self._last_shadow
        return self._held[False] > 0 or (last is not None and now - last <= self.orphan_ttl)

    # ---- the three arrivals ----

    def on_shadow(
        self, shadow: Prediction, now: datetime, champion_joined: bool = False
    ) -> list[Closed]:
        """One shadow prediction; ``champion_joined``: the champion's prediction of this
        application was joined already (its outcome went by)."""
        self._last_shadow = now
        key = vars(shadow)["application_id"]
        entry = self._get(key)
        if key in self._joined or (entry is not None and "s" in entry):
            self.duplicates += 1
            return []
        half = _half(shadow)
        if entry is None:
            if champion_joined:
                self.late += 1
                return []
            self._set(key, None, {"s": _stored_shadow(half, shadow.event_time)})
            self._pending.append((shadow.event_time, key))
            return []
        label, outcome_time = entry["o"]
        if datetime.fromisoformat(outcome_time) < shadow.event_time:
            self._set(key, entry, None)  # a label from before the loan (see on_outcome)
            return []
        closed = self._join(key, half, int(label))
        champion = entry.get("c")
        if champion is not None:
            self._set(key, entry, None)
            return closed + self._pair(_stored_half(champion), half, int(label))
        # joined; waits, with the outcome, for the champion's half
        self._set(key, entry, {**entry, "s": _stored_shadow(half, shadow.event_time)})
        return closed

    def on_outcome(self, outcome: Outcome, champion: Half | None, now: datetime) -> list[Closed]:
        """One outcome; ``champion`` is the champion's half if this outcome joined it."""
        fields = vars(outcome)
        key, label = fields["application_id"], fields["label"]
        entry = self._get(key)
        if key in self._joined or (entry is not None and "o" in entry):
            self.duplicates += 1
            return []
        if entry is None:
            if self.active(now):
                c = None if champion is None else _stored(champion)
                self._set(key, None, {"o": [label, outcome.outcome_time.isoformat()], "c": c})
                self._waiting.append((now, key))
            return []
        probability, version, event_time, approved = entry["s"]
        if outcome.outcome_time < datetime.fromisoformat(event_time):
            # a label from before the loan: the champion's join dead-letters the outcome
            self._set(key, entry, None)
            return []
        half = Half(float(probability), str(version), bool(approved))
        closed = self._join(key, half, label)
        if champion is not None:
            self._set(key, entry, None)
            return closed + self._pair(champion, half, label)
        # the champion's prediction has not come yet: wait for its half
        waiting = {"s": entry["s"], "o": [label, outcome.outcome_time.isoformat()]}
        self._set(key, entry, waiting)
        self._waiting.append((now, key))
        return closed

    def on_champion(self, application_id: str, champion: Half) -> list[Closed]:
        """The champion's prediction joined an outcome that came before it: its half completes a
        pair, or waits with the outcome for the shadow prediction."""
        entry = self._get(application_id)
        if entry is None or "o" not in entry:
            return []
        if "s" in entry:
            self._set(application_id, entry, None)
            probability, version, _, approved = entry["s"]
            shadow = Half(float(probability), str(version), bool(approved))
            return self._pair(champion, shadow, int(entry["o"][0]))
        self._set(application_id, entry, {**entry, "c": _stored(champion)})
        return []

    # ---- joins, windows, expiry ----

    def _version(self, version: str) -> VersionWindows:
        windows = self.windows.get(version)
        if windows is None:
            windows = self.windows[version] = VersionWindows(version, self.size, self.step)
            for old in sorted(self.windows, key=self.version_order)[:-KEEP_VERSIONS]:
                del self.windows[old]
        return windows

    def _join(self, key: str, shadow: Half, label: int) -> list[Closed]:
        self.joined += 1
        self._joined.add(key)
        return self._version(shadow.version).add(shadow, label)

    def _pair(self, champion: Half, shadow: Half, label: int) -> list[Closed]:
        self.paired += 1
        return self._version(shadow.version).add_pair(champion, shadow, label)

    def expire(self, now: datetime, label_clock: datetime | None) -> ShadowCounts:
        """Give up on shadows past the label TTL (``label_clock`` is the champion joiner's) and
        on outcomes that waited past the orphan TTL."""
        if label_clock is not None:
            horizon = label_clock - self.label_ttl
            while self._pending and self._pending[0][0] < horizon:
                _, key = self._pending.popleft()
                entry = self._get(key)
                if entry is not None and "o" not in entry:
                    self._set(key, entry, None)
                    self.expired += 1
        while self._waiting and self._waiting[0][0] < now - self.orphan_ttl:
            _, key = self._waiting.popleft()
            entry = self._get(key)
            if entry is not None and "o" in entry:
                self._set(key, entry, None)
                self.dropped += 1
        return self.counts()

    def counts(self) -> ShadowCounts:
        return ShadowCounts(
            pending=self._held[False],
            waiting=self._held[True],
            joined=self.joined,
            paired=self.paired,
            expired=self.expired,
            dropped=self.dropped,
            late=self.late,
            duplicates=self.duplicates,
        )

    def to_dict(self) -> dict[str, Any]:
        """The windows and counts as plain data; the store is its own (changelogged) state."""
        return {
            "format": FORMAT,
            "size": self.size,
            "step": self.step,
            "windows": {v: w.to_dict() for v, w in self.windows.items()},
            "counts": [
                self.joined,
                self.paired,
                self.expired,
                self.dropped,
                self.late,
                self.duplicates,
            ],
        }

    def load(self, data: dict[str, Any]) -> None:
        """Carry on from ``to_dict``'s state (the windows' shapes come from the state)."""
        if data.get("format") != FORMAT:
            raise ValueError(f"shadow state format must be {FORMAT}, got {data.get('format')!r}")
        windows = {str(v): VersionWindows.from_dict(w) for v, w in data["windows"].items()}
        counts = [int(x) for x in data["counts"]]
        if len(counts) != 6:
            raise ValueError(f"shadow state needs 6 counts, got {len(counts)}")
        self.windows = windows
        self.joined, self.paired, self.expired, self.dropped, self.late, self.duplicates = counts


def _stored_shadow(half: Half, event_time: datetime) -> list[Any]:
    return [half.probability, half.version, event_time.isoformat(), half.approved]


def _stored(half: Half) -> list[Any]:
    return [half.probability, half.version, half.approved]


def _stored_half(values: list[Any]) -> Half:
    probability, version, approved = values
    return Half(float(probability), str(version), bool(approved))
