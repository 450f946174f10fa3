"""Prometheus metrics of the monitor, built against an injected registry. Labels stay
low-cardinality: join outcome, signal, feature (from the spec), scope (capped), metric name,
labelled population, model version (the newest few) and role."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class MonitorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.join = Gauge(
            "loanstream_monitor_join",
            "Join state: pending predictions, waiting orphan outcomes; and totals joined, "
            "expired (no label within the TTL), orphans dropped, duplicates",
            ["state"],
            registry=registry,
        )
        self.messages = Counter(
            "loanstream_monitor_messages_total",
            "Messages read, by topic kind and result",
            ["kind", "result"],
            registry=registry,
        )
        self.window = Gauge(
            "loanstream_monitor_window_metric",
            "Latest closed count window: realized or estimated metric, per scope (auc, gini = "
            "2 auc - 1, ks = max |TPR - FPR|, ece, brier, and accuracy at 0.5)",
            ["scope", "metric", "source"],
            registry=registry,
        )
        self.psi = Gauge(
            "loanstream_monitor_feature_psi",
            "CSI (the PSI of one characteristic) of the latest drift window against the model's "
            "training reference; feature=probability is the score's PSI. Bands: stable < 0.1 <= "
            "watch < 0.25 <= act",
            ["feature"],
            registry=registry,
        )
        self.drift_events = Counter(
            "loanstream_monitor_drift_events_total",
            "Confirmed drifts published",
            ["signal"],
            registry=registry,
        )
        self.retrain_requests = Counter(
            "loanstream_monitor_retrain_requests_total",
            "Retrain requests published (after the cooldown)",
            registry=registry,
        )
        self.labelled = Counter(
            "loanstream_monitor_labelled_total",
            "Labelled examples sent to loan.labelled, by the population the outcome stands on: "
            "approved, or explored (reviewed or declined, yet it got an outcome)",
            ["population"],
            registry=registry,
        )
        self.state_unreadable = Counter(
            "loanstream_monitor_state_unreadable_total",
            "Saved detector states (a version's, or the whole manifest) that could not be used "
            "at start: that part of the monitor started fresh",
            registry=registry,
        )
        self.snapshot_failures = Counter(
            "loanstream_monitor_snapshot_failures_total",
            "Detector state snapshots that failed to be written (the next one tries again)",
            registry=registry,
        )
        self.version_window = Gauge(
            "loanstream_monitor_version_window_metric",
            "Latest closed count window per model version and role (champion or shadow): on "
            "all its rows, or on the rows both models scored and that have outcomes (paired)",
            ["model_version", "role", "rows", "metric"],
            registry=registry,
        )
        self.version_total = Gauge(
            "loanstream_monitor_version_total_metric",
            "A metric over every joined row so far, per model version and role: a shadow "
            "version on all its rows, or both models on the paired rows",
            ["model_version", "role", "rows", "metric"],
            registry=registry,
        )
        self.shadow_outcomes = Gauge(
            "loanstream_monitor_shadow_outcomes",
            "Labelled rows of each shadow version: all it scored, or paired (shared outcomes)",
            ["model_version", "rows"],
            registry=registry,
        )
        self.shadow_join = Gauge(
            "loanstream_monitor_shadow_join",
            "Shadow join state: pending shadows, waiting outcomes; and totals joined, paired, "
            "expired, dropped, late (the outcome went by first), duplicates",
            ["state"],
            registry=registry,
        )
        self.unmonitored = Counter(
            "loanstream_monitor_unmonitored_total",
            "Events of a model version whose reference is not loaded (joined, not monitored)",
            ["kind"],
            registry=registry,
        )
