"""One line of plain English per record of the loop, for people: what a drift event measured, how
a retrain round ended, which champion was promoted.

Pure and small on purpose: ``loanstream alerts`` (loop.alerts) builds its blocks from these
lines and the webhook notifier (loop.notify) sends them as message text, so both say the same
thing in the same words. Each statistic is named after what its detector reports (see
monitor/pipeline.py): PSI with the credit-risk bands for data and prediction drift, a log
likelihood ratio for concept drift, a CUSUM for a segment's performance.

>>> from datetime import UTC, datetime
>>> t = datetime(2026, 3, 1, tzinfo=UTC)
>>> e = DriftEvent(event_id="drift-1", signal="data", detector="psi[act]", feature="income",
...     statistic=0.312, threshold=0.1, p_value=0.0001, window_size=5000, first_position=1200,
...     confirmed_position=1500, first_event_time=t, confirmed_event_time=t,
...     model_name="loan-default", model_version="3")
>>> print(drift_sentence(e))
data drift in income on loan-default v3: PSI 0.312 (act band, ≥ 0.25) against threshold 0.1,
p=0.0001, psi[act] over 5,000 events
"""

from __future__ import annotations

from collections.abc import Mapping

from loanstream.contracts import (
    DriftEvent,
    DriftSignal,
    ModelUpdate,
    RetrainOutcome,
    RetrainResult,
)
from loanstream.creditrisk import ACT, WATCH, psi_band

SHOWN_METRICS = ("auc", "gini", "ks", "ece", "brier", "log_loss", "accuracy")


def statistic_name(e: DriftEvent) -> str:
    """What ``e.statistic`` is, after the detector that reported it."""
    if e.detector.startswith("psi"):
        return "PSI"
    if e.detector.startswith(("segment-cusum", "label-cusum")):
        return "CUSUM"
    if e.signal == DriftSignal.CONCEPT:
        return "log-likelihood ratio"
    return "statistic"


def measured(e: DriftEvent) -> str:
    """The statistic against its threshold, with the PSI band where the statistic is a PSI."""
    text = f"{statistic_name(e)} {_num(e.statistic)}"
    if e.detector.startswith("psi"):
        band = psi_band(e.statistic)
        edge = {"act": f"≥ {ACT:g}", "watch": f"≥ {WATCH:g}", "stable": f"< {WATCH:g}"}[band]
        text += f" ({band} band, {edge})"
    text += f" against threshold {_num(e.threshold)}"
    if e.p_value is not None:
        text += f", p={_num(e.p_value)}"
    return text


def drift_sentence(e: DriftEvent) -> str:
    """What moved, on which model version, and by how much against its threshold."""
    subject = f" in {e.feature}" if e.feature else ""
    found = effect(e)
    return (
        f"{e.signal.value} drift{subject} on {e.model_name} v{e.model_version}: {measured(e)}, "
        f"{e.detector} over {e.window_size:,} events" + (f"; {found}" if found else "")
    )


def effect(e: DriftEvent) -> str | None:
    """What the labels showed against what the model promised, when the event says."""
    if e.expected_rate is None or e.observed_rate is None:
        return None
    return f"repaid {e.observed_rate:.1%} where the model promised {e.expected_rate:.1%}"


def result_sentence(r: RetrainResult) -> str:
    """How a retrain round ended, and why, in one line."""
    challenger = f"v{r.challenger_version}" if r.challenger_version else "the challenger"
    champion = f"v{r.champion_version}" if r.champion_version else "the champion"
    if r.outcome == RetrainOutcome.PROMOTED:
        head = f"promoted {challenger} of {r.model_name}"
    elif r.outcome == RetrainOutcome.KEPT_CHAMPION:
        head = f"kept {champion} of {r.model_name}: {challenger} lost"
    elif r.outcome == RetrainOutcome.SHADOWING:
        head = f"{challenger} of {r.model_name} scores in shadow beside {champion}"
    elif r.outcome == RetrainOutcome.WAITING:
        rows = "" if r.rows is None else f" ({r.rows:,} of {r.rows_needed or 0:,} rows)"
        head = f"retrain of {r.model_name} still waiting for labels{rows}"
    else:
        head = f"retrain of {r.model_name} failed"
    compared = compare_metrics(r.metrics, r.champion_metrics)
    parts = [head, r.reason.strip(), compared]
    return "; ".join(p for p in parts if p)


def update_sentence(u: ModelUpdate) -> str:
    """A champion was promoted: which version, with which metrics."""
    shown = compare_metrics(u.metrics, {})
    return f"{u.model_name} v{u.version} is the champion now (run {u.run_id[:12]})" + (
        f"; {shown}" if shown else ""
    )


def compare_metrics(challenger: Mapping[str, float], champion: Mapping[str, float]) -> str:
    """``auc 0.8123 vs 0.7710, gini 0.6246 vs 0.5420, ece 0.0100 vs 0.0300``: the usual
    metrics that ``challenger`` holds, ranking first and accuracy last, challenger first."""
    names = [m for m in SHOWN_METRICS if m in challenger] or sorted(challenger)[:4]
    parts = []
    for name in names:
        text = f"{name} {challenger[name]:.4f}"
        if name in champion:
            text += f" vs {champion[name]:.4f}"
        parts.append(text)
    return ", ".join(parts)


def _num(x: float) -> str:
    """Short but exact enough: 0.312, 13.8, 1.2e-07."""
    return f"{x:.4g}"
