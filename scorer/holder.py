"""The model in use, swapped between batches: a loader thread offers a new model, the scoring
loop takes it at the start of its next batch, so a batch is never scored by two models and the
swap itself is one reference assignment."""

from __future__ import annotations

import threading
from typing import Any

from loanstream.models import LoadedModel
from scorer.core import typical_values


class ModelHolder:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: LoadedModel | None = None
        self._typical: dict[str, Any] = {}
        self._offered: LoadedModel | None = None
        self._offered_typical: dict[str, Any] = {}
        self.ready = threading.Event()

    def offer(self, model: LoadedModel) -> None:
        """Called by the loader once a model is fully loaded and verified."""
        typical = typical_values(model.reference)
        with self._lock:
            self._offered = model
            self._offered_typical = typical
        if self._current is None:
            self.take()

    def take(self) -> tuple[LoadedModel | None, dict[str, Any], bool]:
        """(model, typical values, swapped) to score the next batch with."""
        swapped = False
        with self._lock:
            if self._offered is not None:
                self._current, self._typical = self._offered, self._offered_typical
                self._offered = None
                swapped = True
        if self._current is not None:
            self.ready.set()
        return self._current, self._typical, swapped

    @property
    def current(self) -> LoadedModel | None:
        return self._current
