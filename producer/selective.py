"""Selective labels: in lending only approved loans repay or default, so only they get an outcome,
plus a small exploration share of reviews and declines the lender approves anyway.

Pure, no Kafka: which applications are explored (a seeded hash, so reruns agree) and the gate
that says which due outcomes to send, withhold or hold until their decision is known.
``producer/decisions.py`` is its Kafka shell; ``producer/selection_bias.py`` the backtest view of
what the approved-only labels hide.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from loanstream.contracts import Decision

T = TypeVar("T")


class LabelsMode(StrEnum):
    ALL = "all"  # every labelled application gets its outcome (the synthetic ideal)
    APPROVED = "approved"  # approved ones, plus an exploration share of the rest


class Fate(StrEnum):
    """What selective labels do with one due outcome."""

    APPROVED = "approved"  # sent: the lender approved the loan
    EXPLORED = "explored"  # sent: reviewed or declined, approved anyway to keep learning
    WITHHELD = "withheld"  # not sent: reviewed or declined, so no loan and no outcome
    UNDECIDED = "undecided"  # not sent: no prediction came within the timeout


class Selection(BaseModel):
    """How outcomes are chosen: the mode, the exploration share, its seed, and how long a due
    outcome waits for its application's decision."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: LabelsMode = LabelsMode.ALL
    exploration: float = Field(default=0.05, ge=0, le=1)
    seed: int = 0
    decision_timeout_s: float = Field(default=120.0, gt=0)

    def manifest(self) -> dict[str, Any]:
        """What the ground-truth manifest records about the labels mode."""
        if self.mode is LabelsMode.ALL:
            return {"mode": self.mode.value, "exploration": None}
        return {
            "mode": self.mode.value,
            "exploration": self.exploration,
            "exploration_hash": "blake2b-64 of '<seed>:<application_id>' / 2**64 < exploration",
            "seed": self.seed,
            "decision_timeout_s": self.decision_timeout_s,
        }


def exploration_draw(application_id: str, seed: int) -> float:
    """A uniform number in [0, 1) fixed by the application id and the seed (not by the process,
    unlike ``hash``): an application is explored when its draw is below the exploration share.

    >>> exploration_draw("app-7-000000001", 7) == exploration_draw("app-7-000000001", 7)
    True
    """
    digest = hashlib.blake2b(f"{seed}:{application_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def fate_of(decision: Decision | str, application_id: str, exploration: float, seed: int) -> Fate:
    """Approved loans get their outcome; others only when explored."""
    if Decision(decision) is Decision.APPROVE:
        return Fate.APPROVED
    if exploration_draw(application_id, seed) < exploration:
        return Fate.EXPLORED
    return Fate.WITHHELD


@dataclass(frozen=True)
class Released(Generic[T]):
    """What the gate settled in one call: outcomes to send now (approved and explored ones) and
    the counts by fate; ``undecided`` names the applications given up on."""

    send: tuple[T, ...] = ()
    approved: int = 0
    explored: int = 0
    withheld: int = 0
    undecided: tuple[str, ...] = ()


@dataclass
class _Tally(Generic[T]):
    send: list[T] = field(default_factory=list)
    counts: dict[Fate, int] = field(default_factory=lambda: dict.fromkeys(Fate, 0))
    undecided: list[str] = field(default_factory=list)

    def add(self, fate: Fate, item: T) -> None:
        self.counts[fate] += 1
        if fate in (Fate.APPROVED, Fate.EXPLORED):
            self.send.append(item)

    def done(self) -> Released[T]:
        c = self.counts
        return Released(
            tuple(self.send),
            c[Fate.APPROVED],
            c[Fate.EXPLORED],
            c[Fate.WITHHELD],
            tuple(self.undecided),
        )


class SelectiveGate(Generic[T]):
    """Decides which due outcomes go out, from the decisions seen so far.

    ``expect`` names applications whose outcome will come (only their decisions are kept, so
    memory follows the outcomes outstanding, not the predictions read). ``offer`` hands in due
    outcomes: decided ones are settled at once, the others wait up to ``timeout_s`` for their
    decision; ``decide`` settles waiting ones as decisions arrive; ``expire`` gives up on those
    that waited too long (counted undecided, never dropped silently). One outcome per
    application. Times are the caller's clock in seconds.

    >>> gate = SelectiveGate(exploration=0.0, seed=0, timeout_s=10.0)
    >>> gate.expect(["a", "b", "c"])
    >>> gate.decide([("a", "approve"), ("b", "decline")], now=0.0).send
    ()
    >>> r = gate.offer([("a", "outcome-a"), ("b", "outcome-b"), ("c", "outcome-c")], now=1.0)
    >>> r.send, r.approved, r.withheld, gate.waiting
    (('outcome-a',), 1, 1, 1)
    >>> gate.decide([("c", "approve")], now=2.0).send
    ('outcome-c',)
    """

    def __init__(self, exploration: float, seed: int, timeout_s: float) -> None:
        self.exploration = exploration
        self.seed = seed
        self.timeout_s = timeout_s
        self._expected: set[str] = set()
        self._decisions: dict[str, Decision] = {}
        self._held: dict[str, tuple[float, list[T]]] = {}  # insertion order is deadline order

    @property
    def waiting(self) -> int:
        """Due outcomes held until their decision is seen."""
        return sum(len(items) for _, items in self._held.values())

    def expect(self, application_ids: Iterable[str]) -> None:
        self._expected.update(application_ids)

    def decide(self, decisions: Iterable[tuple[str, str]], now: float) -> Released[T]:
        """Take in ``(application_id, decision)`` pairs; release the outcomes that waited."""
        tally: _Tally[T] = _Tally()
        for application_id, decision in decisions:
            held = self._held.pop(application_id, None)
            if held is not None:
                self._expected.discard(application_id)
                fate = fate_of(decision, application_id, self.exploration, self.seed)
                for item in held[1]:
                    tally.add(fate, item)
            elif application_id in self._expected and application_id not in self._decisions:
                self._decisions[application_id] = Decision(decision)  # the first one counts
        return tally.done()

    def offer(self, due: Iterable[tuple[str, T]], now: float) -> Released[T]:
        """Due ``(application_id, outcome)`` pairs: settle the decided, hold the rest."""
        tally: _Tally[T] = _Tally()
        for application_id, item in due:
            decision = self._decisions.pop(application_id, None)
            if decision is None:
                self._expected.add(application_id)
                self._held.setdefault(application_id, (now + self.timeout_s, []))[1].append(item)
                continue
            self._expected.discard(application_id)
            tally.add(fate_of(decision, application_id, self.exploration, self.seed), item)
        return tally.done()

    def expire(self, now: float) -> Released[T]:
        """Give up on the outcomes whose decision did not come by their deadline."""
        tally: _Tally[T] = _Tally()
        while self._held:
            application_id, (deadline, items) = next(iter(self._held.items()))
            if deadline > now:
                break
            del self._held[application_id]
            self._expected.discard(application_id)
            tally.undecided += [application_id] * len(items)
        return tally.done()
