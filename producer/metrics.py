"""Prometheus metrics of the producer and replay, built against an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class ProducerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.produced = Counter(
            "loanstream_producer_messages_total",
            "Messages handed to Kafka (failed deliveries are counted apart and retried)",
            ["kind"],
            registry=registry,
        )
        self.delivery_errors = Counter(
            "loanstream_producer_delivery_errors_total",
            "Deliveries Kafka did not acknowledge (each is retried)",
            registry=registry,
        )
        self.rejected = Counter(
            "loanstream_producer_rejected_rows_total",
            "Rows refused by the feature spec",
            ["reason"],
            registry=registry,
        )
        self.rate = Gauge(
            "loanstream_producer_applications_per_second",
            "Applications produced per second, over the last progress interval",
            registry=registry,
        )
        self.outcome_fates = Counter(
            "loanstream_producer_outcome_fates_total",
            "Due outcomes under --labels approved, by fate: approved and explored (sent), "
            "withheld (declined or reviewed, not explored), undecided (no prediction in time)",
            ["fate"],
            registry=registry,
        )
        self.awaiting_decision = Gauge(
            "loanstream_producer_outcomes_awaiting_decision",
            "Due outcomes held until their application's prediction is seen (--labels approved)",
            registry=registry,
        )
