"""Read a topic from a start time up to its end as it was when the read began (for reports,
retraining and backtests): every record once, decoded, no consumer group left behind."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from loanstream.config import KafkaSettings
from loanstream.errors import LoanStreamError


def read_topic(
    kafka: KafkaSettings,
    topic: str,
    begin_ms: int = 0,
    max_rows: int | None = None,
    timeout_s: float = 60.0,
    on_progress: Callable[[int, int], None] | None = None,
    parse: Callable[[bytes | None, bytes], Any] | None = None,
) -> list[Any]:
    """Records of ``topic`` stamped at or after ``begin_ms``: JSON objects, or what
    ``parse(key, value)`` makes of each (None: skipped); undecodable ones are skipped.

    ``on_progress(read, total)`` is called after each poll, ``total`` being the records between
    the start offsets and the end offsets seen when the read began.
    """
    consumer = Consumer(
        {
            **kafka.confluent(),
            "group.id": f"read-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        if metadata.error:
            raise LoanStreamError(f"cannot read {topic}: {metadata.error.str()}")
        partitions = sorted(metadata.partitions)
        starts = consumer.offsets_for_times(
            [TopicPartition(topic, p, begin_ms) for p in partitions], timeout=10
        )
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        }
        assignment = [tp for tp in starts if 0 <= tp.offset < ends[tp.partition]]
        total = sum(ends[tp.partition] - tp.offset for tp in assignment)
        consumer.assign(assignment)
        pending = {tp.partition for tp in assignment}
        rows: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, 0.5):
                if msg.error():
                    continue
                partition, offset = msg.partition() or 0, msg.offset() or 0
                if offset + 1 >= ends[partition]:
                    pending.discard(partition)
                record = (parse or _json_object)(msg.key(), msg.value() or b"")
                if record is not None:
                    rows.append(record)
            if on_progress is not None:
                on_progress(len(rows), total)
            if max_rows is not None and len(rows) >= max_rows:
                return rows[:max_rows]
        if pending:
            raise LoanStreamError(f"reading {topic} did not finish within {timeout_s:.0f} s")
        return rows
    finally:
        consumer.close()


def _json_object(key: bytes | None, value: bytes) -> dict[str, Any] | None:
    try:
        record = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None
