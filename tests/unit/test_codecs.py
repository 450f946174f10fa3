"""The project's confluent-kafka producers compress with lz4; Faust's aiokafka consumers must be
able to read that, or the scorer crashes on the first batch (it did, once)."""

from aiokafka.codec import has_lz4

from loanstream.kafka.clients import PRODUCER_DEFAULTS


def test_aiokafka_can_read_what_our_producers_write() -> None:
    assert PRODUCER_DEFAULTS["compression.type"] == "lz4"
    assert has_lz4(), "aiokafka needs cramjam for lz4 (a dependency in pyproject.toml)"
