"""The models in use, swapped between batches: a loader thread offers a new champion (or a new
challenger to score in shadow), the scoring loop takes them at the start of its next batch, so a
batch is scored by one champion and at most one challenger, and each swap is one reference
assignment."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from loanstream.models import LoadedModel
from scorer.core import typical_values


@dataclass(frozen=True)
class Taken:
    """What the next batch is scored with: the champion (None before the first load) and its
    typical values, whether it was swapped in just now, and the challenger in shadow, if any."""

    model: LoadedModel | None
    typical: dict[str, Any] = field(default_factory=dict)
    swapped: bool = False
    challenger: LoadedModel | None = None


class ModelHolder:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: LoadedModel | None = None
        self._typical: dict[str, Any] = {}
        self._offered: LoadedModel | None = None
        self._offered_typical: dict[str, Any] = {}
        self._challenger: LoadedModel | None = None
        self._offered_challenger: LoadedModel | None = None
        self._challenger_offered = False
        self.ready = threading.Event()

    def offer(self, model: LoadedModel) -> None:
        """Called by the loader once a model is fully loaded and verified."""
        typical = typical_values(model.reference)
        with self._lock:
            self._offered = model
            self._offered_typical = typical
        if self._current is None:
            self.take()

    def offer_challenger(self, model: LoadedModel | None) -> None:
        """Called by the loader with the verified challenger to score in shadow, or None to
        score without one; it takes effect at the next batch, like a champion."""
        with self._lock:
            self._offered_challenger = model
            self._challenger_offered = True

    def take(self) -> Taken:
        """The models to score the next batch with. A challenger of the champion's own version
        (just promoted) is no challenger."""
        swapped = False
        with self._lock:
            if self._offered is not None:
                self._current, self._typical = self._offered, self._offered_typical
                self._offered = None
                swapped = True
            if self._challenger_offered:
                self._challenger = self._offered_challenger
                self._offered_challenger, self._challenger_offered = None, False
            current, typical, challenger = self._current, self._typical, self._challenger
        if current is not None:
            self.ready.set()
            if challenger is not None and challenger.version == current.version:
                challenger = None
        return Taken(current, typical, swapped, challenger)

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    @property
    def challenger(self) -> LoadedModel | None:
        """The challenger the last batch was scored with in shadow (None: none)."""
        return self._challenger
