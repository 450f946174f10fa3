"""When outcomes become known: a label delay in event time, and a share never labelled."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

OUTCOME_TIME = "outcome_time"  # history-file column: when the label became known (NaT: never)


class LabelPolicy(BaseModel):
    """Lognormal label delay (median and spread in days) and the share never labelled."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    median_days: float = Field(default=30.0, gt=0)
    sigma: float = Field(default=0.5, ge=0)
    unlabelled_fraction: float = Field(default=0.1, ge=0, le=1)

    def delays_ns(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Delay of each label in nanoseconds of event time; -1 where it never comes."""
        days = self.median_days * np.exp(self.sigma * rng.standard_normal(n))
        never = rng.random(n) < self.unlabelled_fraction
        return np.where(never, -1, (days * 86_400e9).astype(np.int64))


class OutcomeQueue:
    """Outcomes waiting for their time (ns of event time), earliest first.

    Kept as one array of due times beside the messages and re-sorted (in C) only when new
    outcomes arrived since the last pop, so a queue of 100k outcomes costs little per chunk.
    Equal due times keep their arrival order.
    """

    def __init__(self) -> None:
        self._due = np.empty(0, dtype=np.int64)
        self._items: list[tuple[bytes, bytes, int]] = []
        self._head = 0  # items before it were popped; dropped at the next push
        self._sorted = True

    def push_many(self, due_ns: np.ndarray, items: list[tuple[bytes, bytes, int]]) -> None:
        self._due = np.concatenate([self._due[self._head :], due_ns.astype(np.int64)])
        self._items = self._items[self._head :] + items
        self._head = 0
        self._sorted = False

    def pop_due(self, now_ns: int) -> list[tuple[bytes, bytes, int]]:
        if not self._sorted:
            order = np.argsort(self._due, kind="stable")
            self._due = self._due[order]
            self._items = [self._items[i] for i in order.tolist()]
            self._sorted = True
        cut = int(np.searchsorted(self._due, now_ns, side="right"))
        if cut <= self._head:
            return []
        out = self._items[self._head : cut]
        self._head = cut
        return out

    def __len__(self) -> int:
        return len(self._items) - self._head
