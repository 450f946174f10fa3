"""The verdict on a challenger in shadow: promote it or drop it on live applications that both
it and the champion scored and whose outcome is known.

The challenger's probabilities come from loan.shadow-predictions (the scorer's shadow scoring),
the champion's with their labels from loan.labelled (the monitor's join of its predictions with
outcomes). They are joined by application id, so both models are judged on the same live
applicants, and judged once there are ``min_outcomes`` of them: promote when the challenger's
AUC reaches the champion's plus a margin and its ECE is within a bound, else drop it.

Reading is bounded: each topic from the time the challenger was put in shadow (records are
stamped with wall-clock times live: an application's, or an outcome's), at most ``max_rows``
records of the versions judged. Whatever a record holds, it is checked against its contract and
skipped when it fails; nothing read is executed.

>>> shared = SharedOutcomes.of([("a", 0.2, 0.1, 0), ("b", 0.7, 0.9, 1), ("c", 0.6, 0.8, 1)])
>>> verdict = decide_shadow(shared, min_outcomes=10, auc_margin=0.0, ece_bound=0.05)
>>> verdict.verdict.value, verdict.reason
('wait', '3 of the 10 shared live outcomes a verdict needs')
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import numpy as np
from pydantic import ValidationError

from loanstream.config import KafkaSettings
from loanstream.contracts import LabelledExample, Prediction
from loanstream.reading import read_topic
from loanstream.topics import LABELLED, SHADOW_PREDICTIONS
from trainer.evaluate import classification_metrics

logger = logging.getLogger(__name__)

MAX_RECORD_BYTES = 64 * 1024  # a larger record is skipped unread


class Verdict(StrEnum):
    PROMOTE = "promote"
    DROP = "drop"
    WAIT = "wait"


@dataclass(frozen=True)
class SharedOutcomes:
    """Applications both versions scored that have an outcome: P(repaid) by each, and label."""

    application_ids: tuple[str, ...]
    champion: np.ndarray
    challenger: np.ndarray
    labels: np.ndarray

    @classmethod
    def of(cls, rows: list[tuple[str, float, float, int]]) -> SharedOutcomes:
        """From (application id, champion's P, challenger's P, label) rows."""
        return cls(
            tuple(r[0] for r in rows),
            np.array([r[1] for r in rows], dtype=float),
            np.array([r[2] for r in rows], dtype=float),
            np.array([r[3] for r in rows], dtype=int),
        )

    def __len__(self) -> int:
        return len(self.application_ids)


@dataclass(frozen=True)
class ShadowVerdict:
    verdict: Verdict
    reason: str
    outcomes: int
    challenger_metrics: dict[str, float] = field(default_factory=dict)
    champion_metrics: dict[str, float] = field(default_factory=dict)


def decide_shadow(
    shared: SharedOutcomes, min_outcomes: int, auc_margin: float, ece_bound: float
) -> ShadowVerdict:
    """Promote, drop or wait, with the reason a person reads."""
    n = len(shared)
    if n < min_outcomes:
        return ShadowVerdict(
            Verdict.WAIT, f"{n} of the {min_outcomes} shared live outcomes a verdict needs", n
        )
    if len(set(shared.labels.tolist())) < 2:
        return ShadowVerdict(
            Verdict.WAIT, f"all {n} shared live outcomes have one label: no AUC to compare", n
        )
    mine = classification_metrics(shared.labels, shared.challenger)
    theirs = classification_metrics(shared.labels, shared.champion)
    auc, champion_auc, ece = mine["auc"], theirs["auc"], mine["ece"]
    on = f"on {n} shared live outcomes"
    if auc < champion_auc + auc_margin:
        reason = (
            f"live AUC {auc:.4f} vs champion {champion_auc:.4f} {on}: short of the margin "
            f"{auc_margin}"
        )
        return ShadowVerdict(Verdict.DROP, reason, n, mine, theirs)
    if ece > ece_bound:
        reason = f"live ECE {ece:.4f} is above the bound {ece_bound} {on} (AUC {auc:.4f})"
        return ShadowVerdict(Verdict.DROP, reason, n, mine, theirs)
    reason = (
        f"live AUC {auc:.4f} vs champion {champion_auc:.4f} (margin {auc_margin}), ECE "
        f"{ece:.4f} within {ece_bound}, {on}"
    )
    return ShadowVerdict(Verdict.PROMOTE, reason, n, mine, theirs)


class VersionRecords:
    """Collects one value per application from records of one model version, read one by one
    (a ``parse`` for :func:`loanstream.reading.read_topic`): each record is checked against
    ``contract`` (a Prediction or a LabelledExample), records of another model or version are left
    out, invalid ones skipped and counted."""

    def __init__(
        self,
        contract: type[Prediction] | type[LabelledExample],
        model_name: str,
        version: str,
        value: Callable[[Any], Any],
    ) -> None:
        self.contract = contract
        self.model_name = model_name
        self.version = version
        self.value = value
        self.values: dict[str, Any] = {}
        self.invalid = 0

    def __call__(self, key: bytes | None, data: bytes) -> str | None:
        if len(data) > MAX_RECORD_BYTES:
            self.invalid += 1
            return None
        try:
            record = self.contract.from_json(data)
        except (ValidationError, ValueError):
            self.invalid += 1
            return None
        if (record.model_name, record.model_version) != (self.model_name, self.version):
            return None
        self.values[record.application_id] = self.value(record)
        return record.application_id  # counted by read_topic against its cap


def shadow_probabilities(model_name: str, version: str) -> VersionRecords:
    """The challenger's probability per application, from loan.shadow-predictions."""
    return VersionRecords(Prediction, model_name, version, lambda p: p.probability)


def champion_outcomes(model_name: str, version: str) -> VersionRecords:
    """(The champion's probability, the label) per application, from loan.labelled."""
    return VersionRecords(
        LabelledExample, model_name, version, lambda e: (e.probability, int(e.label))
    )


def join_shadow(shadow: dict[str, float], outcomes: dict[str, tuple[float, int]]) -> SharedOutcomes:
    """The applications in both, in id order (so a verdict does not depend on read order)."""
    shared = sorted(shadow.keys() & outcomes.keys())
    return SharedOutcomes.of([(i, outcomes[i][0], shadow[i], outcomes[i][1]) for i in shared])


def read_shared(
    kafka: KafkaSettings,
    model_name: str,
    challenger: str,
    champion: str,
    since: datetime,
    max_rows: int,
    timeout_s: float = 60.0,
) -> SharedOutcomes:
    """Read both topics from ``since`` (bounded by ``max_rows`` records each) and join them."""
    begin_ms = int(since.timestamp() * 1000)
    shadow = shadow_probabilities(model_name, challenger)
    read_topic(kafka, kafka.topic(SHADOW_PREDICTIONS), begin_ms, max_rows, timeout_s, parse=shadow)
    outcomes = champion_outcomes(model_name, champion)
    read_topic(kafka, kafka.topic(LABELLED), begin_ms, max_rows, timeout_s, parse=outcomes)
    if shadow.invalid or outcomes.invalid:
        logger.warning(
            "shadow verdict: skipped %d invalid shadow predictions and %d invalid labelled records",
            shadow.invalid,
            outcomes.invalid,
        )
    return join_shadow(shadow.values, outcomes.values)
