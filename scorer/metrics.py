"""Prometheus metrics of the scorer, built against an injected registry. Labels stay
low-cardinality: decision, model version, reason code, source."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class ScorerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.scored = Counter(
            "loanstream_scorer_applications_total",
            "Applications scored",
            ["decision", "model_version", "source"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "loanstream_scorer_dead_letters_total",
            "Messages sent to the dead-letter topic",
            ["reason"],
            registry=registry,
        )
        self.rejected_requests = Counter(
            "loanstream_scorer_rest_rejected_total",
            "REST requests refused",
            ["reason"],
            registry=registry,
        )
        self.latency = Histogram(
            "loanstream_scorer_end_to_end_seconds",
            "Kafka record timestamp to prediction sent",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.model_seconds = Histogram(
            "loanstream_scorer_model_seconds",
            "Model time per batch (probabilities and reasons)",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "loanstream_scorer_batch_size",
            "Applications per batch",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000),
            registry=registry,
        )
        self.model_loads = Counter(
            "loanstream_scorer_model_loads_total",
            "Model loads by result",
            ["result"],
            registry=registry,
        )
        self.model_loading = Gauge(
            "loanstream_scorer_model_loading",
            "1 while a model update is being downloaded, verified and compiled",
            registry=registry,
        )
        self.model = Info("loanstream_scorer_model", "The model scoring now", registry=registry)
        self.ready = Gauge("loanstream_scorer_ready", "1 when a model is loaded", registry=registry)
        self.shadow_scored = Counter(
            "loanstream_scorer_shadow_predictions_total",
            "Applications the challenger scored in shadow (no decision depends on them)",
            ["model_version"],
            registry=registry,
        )
        self.shadow_failures = Counter(
            "loanstream_scorer_shadow_failures_total",
            "Batches the challenger failed to score (the champion's predictions went out)",
            registry=registry,
        )
        self.shadow_seconds = Histogram(
            "loanstream_scorer_shadow_seconds",
            "Challenger model time per batch, after the champion's predictions are built",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.shadow = Info(
            "loanstream_scorer_shadow",
            "The challenger scoring in shadow (version empty: none)",
            registry=registry,
        )
