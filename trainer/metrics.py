"""Prometheus metrics of the retrain service, built against an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class TrainerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "loanstream_trainer_requests_total",
            "Retrain requests by what became of them",
            ["outcome"],
            registry=registry,
        )
        self.rounds = Counter(
            "loanstream_trainer_retrains_total",
            "Training rounds by result",
            ["result"],
            registry=registry,
        )
        self.seconds = Histogram(
            "loanstream_trainer_retrain_seconds",
            "Duration of a training round",
            buckets=(5, 10, 30, 60, 120, 300, 600, 1200),
            registry=registry,
        )
        self.rows_missing = Gauge(
            "loanstream_trainer_rows_missing",
            "Labelled rows a waiting retrain request still needs before it can train",
            registry=registry,
        )
        self.row_checks = Counter(
            "loanstream_trainer_row_checks_total",
            "Looks at a waiting retrain's window that found too few labelled rows",
            registry=registry,
        )
        self.dead_letters = Counter(
            "loanstream_trainer_dead_letters_total",
            "Records the trainer could not use, sent to the dead-letter topic, by source topic "
            "and reason code",
            ["source", "reason"],
            registry=registry,
        )
        self.champion = Gauge(
            "loanstream_trainer_champion_version",
            "Version of the current champion",
            registry=registry,
        )
        self.shadow_verdicts = Counter(
            "loanstream_trainer_shadow_verdicts_total",
            "Judgements of the challenger in shadow: promote, drop, wait (too few outcomes) "
            "or failed (could not read or decide)",
            ["verdict"],
            registry=registry,
        )
        self.shadow_outcomes = Gauge(
            "loanstream_trainer_shadow_outcomes",
            "Live outcomes the challenger and champion share, at the last judgement",
            registry=registry,
        )
