"""Read a whole topic back for assertions (a test's own group, from the beginning)."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, Message

from loanstream.config import KafkaSettings


def read_all(
    kafka: KafkaSettings, topic: str, expected: int, timeout_s: float = 60.0, settle_s: float = 1.0
) -> list[Message]:
    """Consume until ``expected`` messages came and nothing more arrives for ``settle_s``."""
    consumer = Consumer(
        {
            **kafka.confluent(),
            "group.id": f"read-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    out: list[Message] = []
    deadline = time.monotonic() + timeout_s
    quiet_since = None
    try:
        while time.monotonic() < deadline:
            batch = [m for m in consumer.consume(10_000, 0.2) if m.error() is None]
            out.extend(batch)
            if batch:
                quiet_since = None
            elif len(out) >= expected:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since >= settle_s:
                    break
    finally:
        consumer.close()
    return out
