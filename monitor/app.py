"""The Faust monitor: loan.predictions + loan.outcomes -> loan.labelled, drift events, requests;
with loan.shadow-predictions, a challenger's windows beside the champion's.

A thin shell around :class:`monitor.service.MonitorCore`. The join's stores are Faust tables
(changelogged, so pending predictions survive a restart or move with their partition), whose
changelog partition is the key's own, as the producers partition the source topics, for any
batch. Detector state is snapshotted to the compacted loan.monitor-state topic
every few seconds and read back on start, so a restart does not reset a drift in progress.

A snapshot covers whole batches only (handled, sent and acknowledged), and names in a header the
last source offset of each partition it covers. Faust commits offsets on its own schedule, often
behind the snapshot, so a restarted monitor reads records again that the restored detectors have
already counted: those are skipped, or the detectors would count them twice, and a drift
confirmed before the restart would be confirmed again under a new id (the SIGKILL fault test).
At a graceful stop Faust handles and commits everything it has fetched, so a last snapshot is
written after that. A SIGKILL can leave commits ahead of the last snapshot: the detectors of the
next monitor never count the records in between (at most ``state_every_s`` worth; the join and
loan.labelled lose nothing).

Everything the monitor writes (loan.labelled, events, requests, dead letters, the tables'
changelogs, snapshots) goes through one librdkafka producer (:class:`loanstream.streams.Sender`):
through Faust's producer the service ran at ~1,100 labelled events/s on this machine, ~2,300
through librdkafka (``python -m bench.monitor_service``). Batches are handled one at a time, and
one stream's batch is handled while the other's is being acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Coroutine, Iterator, MutableMapping
from datetime import UTC, datetime
from typing import Any

import faust
import orjson
from aiokafka.partitioner import DefaultPartitioner
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from loanstream.config import KafkaSettings
from loanstream.streams import Outgoing, Record, Sender, faust_app
from loanstream.topics import MONITOR_STATE, OUTCOMES, PREDICTIONS, SHADOW_PREDICTIONS
from monitor.service import BATCH, MonitorCore
from monitor.settings import MonitorSettings
from monitor.state import OFFSETS_HEADER, SavedState, StateWriter

logger = logging.getLogger(__name__)

TABLES = ("pending-predictions", "orphan-outcomes", "pending-shadow")
WITHIN_S = 0.05

Offsets = dict[tuple[str, int], int]  # (topic, partition) -> last offset covered


def changelog_topics(settings: MonitorSettings) -> list[str]:
    """Names of the tables' changelog topics (created with the other topics, never by Faust)."""
    return [f"{settings.app_id}-{table}-changelog" for table in TABLES]


class KeyPartitionedTable(faust.Table):
    """A table whose changelog partition is its key's, as the producers partition the source
    topics (murmur2), not the partition of the event being processed: a batch mixes partitions.

    Its changes are not sent one by one through Faust's producer, but kept, the last one per key,
    until ``changes()`` hands them to the service's :class:`Sender` with the batch that made
    them: a key set and deleted within a batch costs one tombstone instead of two writes. Faust
    still recovers the table from the same changelog on start and on rebalance.
    """

    _partitioner = DefaultPartitioner()

    def __post_init__(self) -> None:
        super().__post_init__()
        self._changes: dict[bytes, bytes | None] = {}

    def partition_for_key(self, key: Any) -> int:
        partitions = list(range(self.partitions or 1))
        partition: int = self._partitioner(key, partitions, partitions)
        return partition

    def on_key_set(self, key: Any, value: Any) -> None:
        self._changes[key] = value

    def on_key_del(self, key: Any) -> None:
        self._changes[key] = None

    def changes(self) -> list[Record]:
        """The changelog records of what changed since the last call (a tombstone per delete)."""
        topic = self.changelog_topic.get_topic_name()
        records = [
            Record(topic, key, value, partition=self.partition_for_key(key))
            for key, value in self._changes.items()
        ]
        self._changes = {}
        return records


class ByteKeys(MutableMapping[str, bytes]):
    """A Faust table with raw byte keys, seen as a mapping from application id to bytes."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def __getitem__(self, key: str) -> bytes:
        value: bytes = self.table[key.encode()]
        return value

    def __setitem__(self, key: str, value: bytes) -> None:
        self.table[key.encode()] = value

    def __delitem__(self, key: str) -> None:
        del self.table[key.encode()]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.encode() in self.table

    def __iter__(self) -> Iterator[str]:
        return (k.decode() for k in list(self.table.keys()))

    def __len__(self) -> int:
        return len(self.table)


def covered_offsets(kafka: KafkaSettings, app_id: str, timeout_s: float = 30.0) -> Offsets:
    """The source offsets the newest snapshot of ``app_id`` covers (empty if it names none)."""
    topic = kafka.topic(MONITOR_STATE)
    consumer = Consumer(
        {**kafka.confluent(), "group.id": f"state-{uuid.uuid4().hex}", "enable.auto.commit": False}
    )
    found: Offsets = {}
    try:
        end = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=timeout_s)[1]
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        position = -1
        while position < end - 1:
            message = consumer.poll(timeout_s)
            if message is None:
                raise TimeoutError(f"{topic} was not read to its end in {timeout_s:.0f} s")
            if message.error():
                continue
            position = message.offset() or 0
            if message.key() == app_id.encode():
                headers = dict(message.headers() or [])
                raw = headers.get(OFFSETS_HEADER)
                found = {(t, p): o for t, p, o in orjson.loads(raw)} if raw else {}
    finally:
        consumer.close()
    return found


def build_app(
    kafka: KafkaSettings,
    settings: MonitorSettings,
    make_core: Any,
    partitions: int,
    saved: SavedState | None = None,
) -> tuple[faust.App, list[MonitorCore]]:
    """The app, and (once built inside) the core that ``make_core(predictions, outcomes,
    shadow)`` makes (the stores of the join and of the shadow join);
    ``saved`` is the state the core restored, which the next snapshots replace."""
    app = faust_app(
        kafka, settings.app_id, settings.session_timeout_s, settings.max_poll_interval_s
    )
    sender = Sender(kafka)
    tables: list[KeyPartitionedTable] = [
        KeyPartitionedTable(
            app,
            name=name,
            partitions=partitions,
            key_type=bytes,  # raw bytes in and out
            value_type=bytes,
            changelog_topic=app.topic(
                changelog, partitions=partitions, key_serializer="raw", value_serializer="raw"
            ),
        )
        for name, changelog in zip(TABLES, changelog_topics(settings), strict=True)
    ]
    for table in tables:
        app.tables.add(table)
    core: MonitorCore = make_core(*(ByteKeys(table) for table in tables))
    writer = StateWriter(kafka.topic(MONITOR_STATE), settings.app_id)
    if saved is not None:
        writer.resume(saved)

    def source(name: str) -> tuple[str, Any]:
        return name, app.topic(kafka.topic(name), key_serializer="raw", value_serializer="raw")

    changes_sent: list[asyncio.Future[None] | None] = [None]  # the last batch's, handed over

    def submit(outgoing: list[Outgoing]) -> Coroutine[Any, Any, None]:
        """Send the records now and, once Kafka has them, the tables' changes they come with,
        after the changes of the batches before; await both. Kafka never has a change (a
        joined prediction gone from its store) without the output that made it (its labelled
        example): a monitor killed in between would find the outcome again and nothing to
        join it with. Killed after the output, the next one joins it again (a duplicate)."""
        changes = [record for table in tables for record in table.changes()]
        previous, handed = changes_sent[0], asyncio.get_running_loop().create_future()
        changes_sent[0] = handed
        delivered = sender.submit(outgoing)

        async def then_the_changes() -> None:
            try:
                await delivered
                if previous is not None:
                    await previous
                changes_delivered = sender.submit(changes)
            finally:
                if not handed.done():
                    handed.set_result(None)
            await changes_delivered

        return then_the_changes()

    rebalanced = [True]
    restored = covered_offsets(kafka, settings.app_id)  # counted by the restored detectors
    covered: Offsets = dict(restored)  # what a snapshot taken now would cover
    # Batches are handled one at a time; while one stream's batch is being sent, the other's is
    # handled. A snapshot holds the handling lock and waits for the batches in flight to be sent.
    handling = asyncio.Lock()
    in_flight = [0]
    sent = asyncio.Condition()

    async def consume(stream: Any, kind: str, handle: Any) -> None:
        # take_events acks a batch once this loop's body is done: its records are in Kafka
        async for events in stream.take_events(BATCH, within=WITHIN_S):
            async with handling:
                if rebalanced[0]:  # agents resume only once the tables are recovered
                    rebalanced[0] = False
                    core.joiner.restore(datetime.now(UTC))
                    core.shadow.restore(datetime.now(UTC))
                records, replayed = [], 0
                for event in events:
                    m = event.message
                    if m.offset <= restored.get((m.topic, m.partition), -1):
                        replayed += 1  # handled and sent before the restart (see above)
                        continue
                    records.append((m.value, (m.topic, m.partition, m.offset)))
                try:
                    outgoing = handle(records)  # dead-letters each record it cannot use
                except Exception as err:  # a bug must not stop the join, nor lose the records
                    outgoing = [core.internal_error(v, at, kind, err) for v, at in records]
                in_flight[0] += 1
                delivered = submit(outgoing)  # in Kafka's hands before the next batch's
            try:
                await delivered
                for event in events:
                    covered[(event.message.topic, event.message.partition)] = event.message.offset
            finally:
                async with sent:
                    in_flight[0] -= 1
                    sent.notify_all()
            if replayed:
                logger.warning("skipped %d %ss the restored snapshot had counted", replayed, kind)

    @app.agent(source(PREDICTIONS)[1], concurrency=1)
    async def predictions(stream: Any) -> None:
        await consume(stream, "prediction", core.on_predictions)

    @app.agent(source(OUTCOMES)[1], concurrency=1)
    async def outcomes(stream: Any) -> None:
        await consume(stream, "outcome", core.on_outcomes)

    @app.agent(source(SHADOW_PREDICTIONS)[1], concurrency=1)
    async def shadow_predictions(stream: Any) -> None:
        await consume(stream, "shadow", core.on_shadow_predictions)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def assigned(_: Any, *args: Any, **kwargs: Any) -> None:
        rebalanced[0] = True

    async def snapshot(tick: bool = True) -> None:
        """Write the detectors' state, with the source offsets it covers, once no batch is in
        flight; ``tick`` first expires what is due and sends that."""
        async with handling:
            async with sent:
                await sent.wait_for(lambda: in_flight[0] == 0)
            if tick:
                core.tick(datetime.now(UTC))
                await submit([])  # what expired, before a snapshot that covers it
            offsets = orjson.dumps([[t, p, o] for (t, p), o in covered.items()])
            parts, manifest = writer.records(core.snapshot(), offsets)
        await sender.send_all(parts)  # every part in Kafka before the manifest that names them
        await sender.send_all([manifest])
        writer.sent()

    @app.timer(interval=settings.state_every_s)
    async def housekeeping() -> None:
        try:
            await snapshot()
        except Exception:  # never let housekeeping stop the join; the next round tries again
            core.metrics.snapshot_failures.inc()
            logger.exception("monitor housekeeping failed")

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def last_snapshot(_: Any, **kwargs: Any) -> None:
        """At a graceful stop Faust first handles and commits what it has fetched; without a
        snapshot after that, the next monitor would resume past records that its restored
        detectors never counted (the restart test lost ~3,000 labelled positions)."""
        try:
            await snapshot(tick=False)
            logger.info("detector state written at stop (%d source partitions)", len(covered))
        except Exception:
            logger.exception(
                "the last snapshot at stop failed; the next monitor resumes from an older one"
            )

    return app, [core]
