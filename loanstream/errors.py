"""The project's exceptions: one base class, and subclasses where a caller can act on them."""

from __future__ import annotations


class LoanStreamError(Exception):
    """Base class of every error LoanStream raises on purpose."""


class SpecError(LoanStreamError):
    """A feature spec file is missing, unreadable or invalid."""


class InvalidRecord(LoanStreamError):
    """A record does not match its contract or the feature spec.

    ``problems`` lists every violation, each naming the field, what was expected and what came;
    ``reason`` is a short, low-cardinality code fit for a metric label or a dead-letter record.
    """

    def __init__(self, problems: list[str], reason: str = "invalid") -> None:
        self.problems = problems
        self.reason = reason
        super().__init__("; ".join(problems))


class BrokerError(LoanStreamError):
    """The local Kafka broker could not be fetched, started, stopped or reached."""


class DeliveryError(LoanStreamError):
    """Kafka did not acknowledge every produced message."""


class TopicError(LoanStreamError):
    """Topics could not be created, or exist with a shape other than the declared one."""
