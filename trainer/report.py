"""What people look at for a trained model: reliability diagram, ROC with its KS, confusion matrix
at the decision bands, feature importance (PNG), and a one-page model card (HTML).

The card leads with ranking as a credit-risk team reads it (AUC, Gini, KS) and calibration;
accuracy and F1 at 0.5 come last, as they say little on a portfolio with few defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from jinja2 import Environment, select_autoescape
from sklearn.metrics import roc_auc_score, roc_curve

from trainer.evaluate import reliability
from trainer.train import TrainingResult

CARD_METRICS = ("auc", "gini", "ks", "ece", "brier", "log_loss", "default_rate", "accuracy", "f1")
CARD = """<!doctype html>
<html><head><meta charset="utf-8"><title>{{ name }} v{{ version }}</title>
<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}img{max-width:48%}</style></head><body>
<h1>Model card: {{ name }} version {{ version }}</h1>
<p>{{ model }} with {{ calibration }} calibration, trained on {{ fingerprint.data_rows }} labelled
applications from {{ fingerprint.data_start }} to {{ fingerprint.data_end }}
(feature spec <code>{{ fingerprint.spec_name }}</code>). It predicts the probability that an
applicant repays on time. {{ decision }}</p>
<h2>Test split (the newest {{ calibrated.rows|int }} applications)</h2>
<table><tr><th>metric</th><th>calibrated</th><th>uncalibrated</th></tr>
{% for k in metrics %}<tr><td>{{ k }}</td><td>{{ "%.4f"|format(calibrated[k]) }}</td>
<td>{{ "%.4f"|format(uncalibrated[k]) }}</td></tr>{% endfor %}</table>
<h2>Decisions</h2>
<p>Decline below {{ bands.decline_below }}, review up to {{ bands.approve_from }}, approve from
there: the cheapest decision when a wrong approval costs {{ bands.wrong_approval }}, a wrong
decline {{ bands.wrong_decline }} and a review {{ bands.review }}.</p>
<table><tr><th>decision</th><th>share</th><th>default rate</th></tr>
{% for d in decisions %}<tr><td>{{ d.decision }}</td><td>{{ "%.3f"|format(d.share) }}</td>
<td>{{ "%.3f"|format(d.default_rate) }}</td></tr>{% endfor %}</table>
<h2>Candidates (validation split)</h2>
<table><tr><th>model</th><th>calibration</th><th>log loss</th><th>AUC</th><th>Gini</th>
<th>KS</th><th>ECE</th><th>seconds</th></tr>
{% for c in candidates %}<tr><td>{{ c.name }}</td><td>{{ c.method }}</td>
<td>{{ "%.4f"|format(c.validation.log_loss) }}</td>
<td>{{ "%.4f"|format(c.validation.auc) }}</td>
<td>{{ "%.4f"|format(c.validation.gini) }}</td>
<td>{{ "%.4f"|format(c.validation.ks) }}</td>
<td>{{ "%.4f"|format(c.validation.ece) }}</td><td>{{ "%.1f"|format(c.seconds) }}</td></tr>
{% endfor %}
</table>
<h2>Plots</h2>
<img src="reliability.png" alt="reliability diagram"><img src="roc.png" alt="ROC">
<img src="confusion.png" alt="decisions by outcome"><img src="importance.png" alt="importance">
<p>Data sha256 {{ fingerprint.data_sha256 }}; spec sha256 {{ fingerprint.spec_sha256 }}.</p>
</body></html>"""


def write_report(
    result: TrainingResult,
    y_test: np.ndarray,
    out: Path,
    fingerprint: dict[str, str],
    name: str,
    version: str,
    decision: str,
) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    p, raw = result.test_probability, result.test_uncalibrated
    _reliability(y_test, p, raw, out / "reliability.png")
    _roc(y_test, p, out / "roc.png")
    decisions = _confusion(y_test, result.bands.decide_many(p), out / "confusion.png")
    _importance(result.importance, out / "importance.png")
    html = (
        Environment(autoescape=select_autoescape())
        .from_string(CARD)
        .render(
            name=name,
            version=version,
            model=result.name,
            calibration=result.calibration,
            fingerprint=fingerprint,
            calibrated=result.calibrated,
            uncalibrated=result.uncalibrated,
            metrics=[m for m in CARD_METRICS if m in result.calibrated],
            bands=result.bands,
            decisions=decisions,
            candidates=result.candidates,
            decision=decision,
        )
    )
    path = out / "model_card.html"
    path.write_text(html)
    return path


def _reliability(y: np.ndarray, p: np.ndarray, raw: np.ndarray, path: Path) -> None:
    figure, axis = plt.subplots(figsize=(5, 4.5))
    axis.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
    for label, probs in (("uncalibrated", raw), ("calibrated", p)):
        bins = reliability(y, probs)
        axis.plot(
            [b["mean_probability"] for b in bins],
            [b["observed"] for b in bins],
            marker="o",
            label=label,
        )
    axis.set(
        xlabel="predicted probability of repayment",
        ylabel="observed repayment rate",
        title="Reliability (test split)",
    )
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def _roc(y: np.ndarray, p: np.ndarray, path: Path) -> None:
    """The ROC curve, with the KS as the vertical gap where TPR - FPR is largest."""
    fpr, tpr, _ = roc_curve(y, p)
    auc = float(roc_auc_score(y, p))
    best = int(np.argmax(tpr - fpr))
    figure, axis = plt.subplots(figsize=(5, 4.5))
    axis.plot(fpr, tpr, label=f"AUC {auc:.3f}, Gini {2 * auc - 1:.3f}")
    axis.plot([0, 1], [0, 1], color="grey", linestyle=":")
    axis.vlines(
        fpr[best], fpr[best], tpr[best], color="tab:red", label=f"KS {tpr[best] - fpr[best]:.3f}"
    )
    axis.legend(loc="lower right")
    axis.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test split)")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def _confusion(y: np.ndarray, decisions: np.ndarray, path: Path) -> list[dict[str, Any]]:
    kinds = ["approve", "review", "decline"]
    counts = np.array([[np.sum((decisions == d) & (y == o)) for o in (1, 0)] for d in kinds])
    figure, axis = plt.subplots(figsize=(5, 3.5))
    axis.imshow(counts, cmap="Blues")
    for i in range(3):
        for j in range(2):
            dark = counts[i, j] > counts.max() / 2
            axis.text(
                j,
                i,
                str(counts[i, j]),
                ha="center",
                va="center",
                color="white" if dark else "black",
            )
    axis.set_xticks([0, 1], ["repaid", "defaulted"])
    axis.set_yticks([0, 1, 2], kinds)
    axis.set_title("Decisions by outcome (test split)")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    total = max(1, counts.sum())
    return [
        {
            "decision": d,
            "share": counts[i].sum() / total,
            "default_rate": counts[i, 1] / max(1, counts[i].sum()),
        }
        for i, d in enumerate(kinds)
    ]


def _importance(importance: dict[str, float], path: Path) -> None:
    ordered = sorted(importance.items(), key=lambda kv: kv[1])
    figure, axis = plt.subplots(figsize=(5, 4))
    axis.barh([k for k, _ in ordered], [v for _, v in ordered])
    axis.set(xlabel="permutation importance (log loss increase)", title="Feature importance")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
