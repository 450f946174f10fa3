"""The backtest's HTML report: the loop's moments, the detections, the retrain attempts, the
phases with and without retraining (ranking first: AUC, Gini, KS; accuracy at 0.5 last), and a
plot of rolling AUC with the drift drawn where its confirming label arrived, evidence shaded."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from loop.measures import NAMES

if TYPE_CHECKING:
    from loop.backtest import BacktestResult

TEMPLATE = """<!doctype html><html><head><meta charset="utf-8"><title>LoanStream backtest</title>
<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}
td,th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:left;font-size:14px}</style>
</head><body><h1>Backtest in event time</h1>
<p>{{ "{:,}".format(s.rows.train) }} oldest rows trained the first champion;
{{ "{:,}".format(s.rows.replayed) }} were replayed in event time ({{ s.settings.labels }};
policy <b>{{ s.settings.policy }}</b>; training latency {{ s.settings.training_latency }},
deploy latency {{ s.settings.deploy_latency }}). Positions count replayed applications.
Measures use every label the history holds (the truth a backtest knows); the loop itself saw
{{ "{:,}".format(s.rows.labelled_in_loop) }} of them.</p>
<h2>What the loop did</h2><table>
{% for name, m in moments %}<tr><th>{{ name }}</th><td>{{ m }}</td></tr>{% endfor %}</table>
<img src="{{ plot }}" alt="rolling AUC and Gini, with and without retraining" width="100%">
<p>The drift is drawn where it became knowable: the application the stream had reached when the
label that confirmed it arrived. The shaded band spans the applications whose labels were its
evidence, from the first to the confirming one; labels come late, so it lies before that line
and can start before the onset.</p>
<h2>Phases and with / without retraining</h2>
<table><tr><th>stretch</th>{% for n in names %}<th>{{ n }}</th>{% endfor %}</tr>
{% for name, m in phases %}<tr><td>{{ name }}</td>
{% for n in names %}<td>{{ fmt(m[n]) }}</td>{% endfor %}</tr>{% endfor %}</table>
<h2>Detections (every signal)</h2><table><tr><th>signal</th><th>detector</th><th>feature</th>
<th>version</th><th>evidence from</th><th>evidence to</th><th>known at</th>
<th>statistic / threshold</th><th>false alarm</th></tr>
{% for e in s.detections.events %}<tr><td>{{ e.signal }}</td><td>{{ e.detector }}</td>
<td>{{ e.feature or "" }}</td><td>{{ e.model_version }}</td><td>{{ pos(e.evidence) }}</td>
<td>{{ pos(e.confirmed_on) }}</td><td>{{ pos(e.known) }}</td>
<td>{{ fmt(e.statistic) }} / {{ fmt(e.threshold) }}</td>
<td>{{ "yes" if e.false_alarm else "" }}</td></tr>
{% else %}<tr><td>none</td></tr>{% endfor %}</table>
<h2>Retrain attempts</h2><table><tr><th>#</th><th>by</th><th>requested</th><th>window from</th>
<th>rows</th><th>training</th><th>result known</th><th>version</th><th>outcome</th><th>why</th>
</tr>{% for a in s.retraining.attempts %}<tr><td>{{ a.attempt }}</td><td>{{ a.requested_by }}</td>
<td>{{ pos(a.requested) }}</td><td>{{ a.window_start or "" }}</td><td>{{ a.rows }}</td>
<td>{{ pos(a.training_started) }}</td><td>{{ pos(a.result_known) }}</td>
<td>{{ a.version or "" }}</td><td>{{ a.outcome }}</td><td>{{ a.why }}</td></tr>
{% else %}<tr><td>none</td></tr>{% endfor %}</table>
<p>The numbers: <a href="summary.json">summary.json</a>.</p></body></html>
"""


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def _pos(moment: dict[str, Any] | None) -> str:
    if not moment:
        return "-"
    return f"{moment['position']:,} ({moment['event_time'][:16]})"


def moments(s: dict[str, Any]) -> list[tuple[str, str]]:
    loop = s["loop"]
    by = loop["detected_by"]
    return [
        ("drift onset (manifest)", _pos(s["onset"])),
        ("first evidence", _pos(loop["first_evidence"])),
        (
            "confirmed (label known)",
            _pos(loop["confirmed"])
            + (f" by {by['signal']}/{by['detector']} {by['feature'] or ''}" if by else ""),
        ),
        ("retrain requested", _pos(loop["retrain_requested"])),
        ("training started", _pos(loop["training_started"])),
        (f"v{loop['promoted_version'] or '-'} promoted", _pos(loop["promoted"])),
        ("... first served", _pos(loop["first_served"])),
        ("attempts until promotion", _fmt(loop["attempts_until_promotion"])),
        ("stale scoring from the onset", _fmt(s["stale_scoring"]["from_onset"])),
        (
            "stale scoring from the first knowable new-regime label",
            _fmt(s["stale_scoring"]["from_first_knowable_label"]),
        ),
    ]


def evidence_span(loop: dict[str, Any]) -> tuple[int, int] | None:
    """Positions of the first and the confirming application of the first detection, in
    order, at least one position wide; None without a detection.

    >>> evidence_span({"first_evidence": {"position": 40}, "confirming_application": None})
    >>> evidence_span({"first_evidence": {"position": 40},
    ...                "confirming_application": {"position": 25}})
    (25, 40)
    """
    first, confirming = loop.get("first_evidence"), loop.get("confirming_application")
    if not first or not confirming:
        return None
    low, high = sorted((int(first["position"]), int(confirming["position"])))
    return low, max(high, low + 1)


def _to_gini(auc: Any) -> Any:
    return 2 * auc - 1


def _from_gini(gini: Any) -> Any:
    return (gini + 1) / 2


def plot(result: BacktestResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score

    p = result.predictions
    p = p[p["label"].isin([0, 1])]
    window = max(500, len(p) // 30)
    xs, with_, without = [], [], []
    for start in range(0, max(len(p) - window, 0) + 1, max(window // 2, 1)):
        chunk = p.iloc[start : start + window]
        y = chunk["label"].to_numpy()
        if 0 < y.sum() < len(y):
            xs.append(int(chunk["position"].iloc[-1]))
            with_.append(roc_auc_score(y, chunk["probability"]))
            without.append(roc_auc_score(y, chunk["first_champion_probability"]))
    fig, ax = plt.subplots(figsize=(11, 4.5))
    ax.plot(xs, with_, label="served (with retraining)")
    ax.plot(xs, without, linestyle="--", label="first champion (without)")
    s = result.data
    span = evidence_span(s["loop"])
    if span is not None:
        ax.axvspan(*span, color="tab:red", alpha=0.12, lw=0, label="evidence (labels used)")
    marks = [
        (s["onset"], "onset", "black"),
        (s["loop"]["confirmed"], "drift known (confirming label arrived)", "tab:red"),
        (s["loop"]["first_served"], "new model serves", "tab:green"),
    ]
    for moment, name, colour in marks:
        if moment:
            ax.axvline(moment["position"], color=colour, linestyle=":", label=name)
    ax.set_xlabel("application position")
    ax.set_ylabel(f"AUC over {window:,} labelled applications")
    gini_axis = ax.secondary_yaxis("right", functions=(_to_gini, _from_gini))
    gini_axis.set_ylabel("Gini = 2 AUC - 1")
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_html(result: BacktestResult, path: Path) -> Path:
    import jinja2

    path.parent.mkdir(parents=True, exist_ok=True)
    picture = path.with_suffix(".png")
    plot(result, picture)
    s = result.data
    phases = list(s["phases"].items())
    for name, c in s["with_vs_without_retraining"].items():
        phases += [(f"{name}: with retraining", c["with_retraining"])]
        phases += [(f"{name}: without retraining", c["without_retraining"])]
    html = jinja2.Environment(autoescape=True).from_string(TEMPLATE)
    path.write_text(
        html.render(
            s=s,
            moments=moments(s),
            phases=phases,
            names=NAMES,
            fmt=_fmt,
            pos=_pos,
            plot=picture.name,
        )
    )
    return path


__all__ = ["write_html"]
