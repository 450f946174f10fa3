"""LoanStream's shared package: config, feature spec, event contracts, topics, Kafka helpers,
the local broker and the CLI. Every service (producer, scorer, monitor, trainer) depends on it,
never on another service."""

__version__ = "0.1.0"
