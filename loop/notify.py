"""``loanstream notify``: tell a webhook (Slack or any JSON receiver) about drift events,
promotions and rejected challengers.

Its own process, so that nothing a slow or failing webhook does can delay the monitor or the
trainer. It reads loan.drift-events, loan.retrain-results (every outcome but ``waiting``) and,
when asked, loan.model-updates (promotions, manual promote and rollback included) in the
consumer group ``loanstream-notifier``, and POSTs one message per record through
:class:`loop.webhook.WebhookSink`. A message the webhook never accepts goes, after the last
retry, to loan.dead-letter (reason ``webhook_failed``). A record that does not parse is skipped
and counted: whoever wrote it dead-letters it.

An offset is committed once its record and every record before it in its partition is
delivered, dead-lettered or skipped: at-least-once. A crash, or a stop before the webhook
answered, sends those messages again on the next start, so a receiver may see one twice.
A record older than ``max_age_s`` (by its own time) is skipped, so a new notifier does not
post the whole history of alerts.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

import orjson
import typer
from confluent_kafka import KafkaError, KafkaException, Message
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode
from rich.console import Console

from loanstream.config import KafkaSettings, kafka_settings, settings_config
from loanstream.contracts import (
    Contract,
    DeadLetter,
    DriftEvent,
    ModelUpdate,
    RetrainOutcome,
    RetrainResult,
)
from loanstream.deadletters import error_text
from loanstream.errors import LoanStreamError
from loanstream.kafka.clients import CommittingConsumer, IdempotentProducer
from loanstream.topics import DEAD_LETTER, DRIFT_EVENTS, MODEL_UPDATES, RETRAIN_RESULTS
from loop.telling import drift_sentence, result_sentence, update_sentence
from loop.webhook import (
    Backoff,
    Notice,
    Outcome,
    WebhookMetrics,
    WebhookSink,
    WebhookTarget,
    redact_url,
)

logger = logging.getLogger(__name__)
console = Console(soft_wrap=True)

GROUP_ID = "loanstream-notifier"


class Kind(StrEnum):
    """What a message tells of: a drift, how a retrain round ended, a new champion."""

    DRIFT = "drift"
    PROMOTED = RetrainOutcome.PROMOTED.value
    SHADOWING = RetrainOutcome.SHADOWING.value
    KEPT_CHAMPION = RetrainOutcome.KEPT_CHAMPION.value  # a rejected challenger
    FAILED = RetrainOutcome.FAILED.value
    MODEL_UPDATE = "model_update"


RESULT_KINDS = frozenset({Kind.PROMOTED, Kind.SHADOWING, Kind.KEPT_CHAMPION, Kind.FAILED})
DEFAULT_KINDS = frozenset({Kind.DRIFT, *RESULT_KINDS})


class NotifySettings(BaseSettings):
    """The notifier (env prefix ``LOANSTREAM_NOTIFY_``); it runs only with a webhook URL."""

    model_config = settings_config("LOANSTREAM_NOTIFY_")

    webhook_url: SecretStr | None = Field(
        default=None, description="http(s) URL to POST to; a secret (a Slack URL's path is one)"
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="HMAC-SHA256 key: each request carries X-LoanStream-Timestamp and "
        "X-LoanStream-Signature (sha256=<hex of '<timestamp>.' + body>)",
    )
    webhook_format: Literal["slack", "json"] = Field(
        default="slack", description='slack: {"text": ...}; json: {"kind", "text", "record"}'
    )
    kinds: Annotated[frozenset[Kind], NoDecode] = Field(
        default=DEFAULT_KINDS,
        description="comma-separated kinds to send: drift, promoted, shadowing, kept_champion, "
        "failed, model_update (reads loan.model-updates too)",
    )
    retries: int = Field(default=5, ge=0, le=30, description="attempts after the first")
    backoff_s: float = Field(default=1.0, gt=0, description="first retry after this; doubles")
    backoff_max_s: float = Field(default=60.0, gt=0, description="longest wait between tries")
    timeout_s: float = Field(default=10.0, gt=0, le=300, description="per request")
    queue_size: int = Field(default=1000, ge=1, description="messages outstanding at most")
    senders: int = Field(default=1, ge=1, le=16, description="POSTs at once (1: in order)")
    max_age_s: float | None = Field(
        default=24 * 3600.0, gt=0, description="skip records older than this; none: send all"
    )
    drain_s: float = Field(
        default=10.0, ge=0, description="on stop, wait this long for outstanding messages"
    )
    metrics_port: int | None = Field(default=8004, description="Prometheus /metrics; none: off")
    group_id: str = Field(default=GROUP_ID, min_length=1, description="its consumer group")

    @field_validator("webhook_url", "webhook_secret", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        """Compose passes an unset variable as ``""``: that means no URL, no secret."""
        return None if value == "" else value

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, url: SecretStr | None) -> SecretStr | None:
        if url is None:
            return None
        value = url.get_secret_value()
        scheme, _, rest = value.partition("://")
        if scheme not in ("http", "https") or not rest or rest.startswith("/"):
            raise ValueError(f"must be an http:// or https:// URL with a host, got {scheme!r}://…")
        return url

    @field_validator("kinds", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return frozenset(k.strip() for k in value.split(",") if k.strip())
        return value

    def topics(self) -> list[str]:
        """The declared topics that the chosen kinds come from."""
        wanted = [
            (DRIFT_EVENTS, Kind.DRIFT in self.kinds),
            (RETRAIN_RESULTS, bool(self.kinds & RESULT_KINDS)),
            (MODEL_UPDATES, Kind.MODEL_UPDATE in self.kinds),
        ]
        return [topic for topic, on in wanted if on]

    def target(self) -> WebhookTarget:
        if self.webhook_url is None:
            raise LoanStreamError(
                "the notifier needs a webhook: set LOANSTREAM_NOTIFY_WEBHOOK_URL to the http(s) "
                "URL to POST to (and LOANSTREAM_NOTIFY_WEBHOOK_SECRET to sign the requests)"
            )
        secret = self.webhook_secret.get_secret_value() if self.webhook_secret else None
        url = self.webhook_url.get_secret_value()
        return WebhookTarget(url, secret, self.webhook_format, self.timeout_s)

    def backoff(self) -> Backoff:
        return Backoff(self.retries, self.backoff_s, self.backoff_max_s)


def load_settings() -> NotifySettings:
    """The environment's settings; an invalid one is an error that does not quote the value
    (pydantic's would: the URL is a secret)."""
    try:
        return NotifySettings()
    except ValidationError as err:
        raise LoanStreamError(f"notifier settings: {error_text(err)}") from None


def notifier_configured() -> bool:
    """Whether the environment names a webhook (``loanstream up`` then starts the notifier)."""
    return load_settings().webhook_url is not None


def read_record(source: str, value: bytes | None) -> tuple[Contract, Kind | None, datetime, str]:
    """The record of a declared ``source`` topic: the contract, its kind (None: a round still
    waiting, never sent), its own time and the sentence that tells it. Raises ValidationError
    when it is not the topic's contract."""
    data = value or b""
    if source == DRIFT_EVENTS:
        event = DriftEvent.from_json(data)
        return event, Kind.DRIFT, event.detected_at, drift_sentence(event)
    if source == RETRAIN_RESULTS:
        result = RetrainResult.from_json(data)
        waiting = result.outcome == RetrainOutcome.WAITING
        kind = None if waiting else Kind(result.outcome.value)
        return result, kind, result.finished_at, result_sentence(result)
    update = ModelUpdate.from_json(data)
    return update, Kind.MODEL_UPDATE, update.promoted_at, update_sentence(update)


def skip_reason(
    kind: Kind | None, at: datetime, kinds: frozenset[Kind], oldest: datetime | None
) -> str | None:
    """Why a record of ``kind`` made at ``at`` is not sent (``waiting``, ``kind_off``,
    ``stale``), or None."""
    if kind is None:
        return "waiting"
    if kind not in kinds:
        return "kind_off"
    if oldest is not None and at < oldest:
        return "stale"
    return None


class OffsetTracker:
    """Offsets handed out and not yet done, per partition: says up to which message every
    offset is done, so only that much is committed (a retried message holds its partition's
    commit back, never its delivery).

    >>> t = OffsetTracker()
    >>> for offset in (5, 6, 7):
    ...     t.add(("t", 0), offset, f"m{offset}")
    >>> t.done(("t", 0), 6), t.done(("t", 0), 5), t.done(("t", 0), 7), t.open
    (None, 'm6', 'm7', 0)
    """

    def __init__(self) -> None:
        self._partitions: dict[tuple[str, int], OrderedDict[int, tuple[bool, Any]]] = {}

    @property
    def open(self) -> int:
        return sum(len(offsets) for offsets in self._partitions.values())

    def add(self, partition: tuple[str, int], offset: int, message: Any) -> None:
        self._partitions.setdefault(partition, OrderedDict())[offset] = (False, message)

    def done(self, partition: tuple[str, int], offset: int) -> Any:
        """Mark ``offset`` done; the last message of the done prefix it completes, or None."""
        offsets = self._partitions.get(partition)
        if offsets is None or offset not in offsets:
            return None  # read again after a rebalance, and done twice: nothing more to commit
        offsets[offset] = (True, offsets[offset][1])
        last = None
        while offsets and next(iter(offsets.values()))[0]:
            last = offsets.popitem(last=False)[1][1]
        return last


def _where(msg: Message) -> tuple[str, int]:
    return str(msg.topic()), int(msg.partition() or 0)


class Notifier:
    """Reads the chosen topics, hands each record to the sink, dead-letters what the webhook
    never took, and commits what is done. Kafka clients are used from ``run``'s thread only:
    the sink's senders report back through a queue."""

    def __init__(
        self,
        kafka: KafkaSettings,
        settings: NotifySettings,
        metrics: WebhookMetrics,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.kafka = kafka
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.tracker = OffsetTracker()
        self._done: queue.SimpleQueue[tuple[Notice, Outcome]] = queue.SimpleQueue()
        self._producer: IdempotentProducer | None = None
        self._sources = {kafka.topic(t): t for t in settings.topics()}

    @property
    def producer(self) -> IdempotentProducer:
        if self._producer is None:
            self._producer = IdempotentProducer(self.kafka)
        return self._producer

    def notice(self, msg: Message) -> Notice | None:
        """The message to send for ``msg``, or None (skipped and counted)."""
        source = self._sources.get(str(msg.topic()), "")
        age = self.settings.max_age_s
        oldest = self.clock() - timedelta(seconds=age) if age else None
        try:
            record, kind, at, text = read_record(source, msg.value())
        except ValidationError as err:
            self.metrics.skipped.labels(source, "invalid").inc()
            logger.warning(
                "skipped a record that is no %s topic=%s partition=%s offset=%s: %d errors",
                source,
                msg.topic(),
                msg.partition(),
                msg.offset(),
                err.error_count(),
            )
            return None
        except Exception:  # a record the sentences cannot tell: a bug, never a crash
            self.metrics.skipped.labels(source, "error").inc()
            logger.exception(
                "could not tell a record topic=%s partition=%s offset=%s",
                msg.topic(),
                msg.partition(),
                msg.offset(),
            )
            return None
        reason = skip_reason(kind, at, self.settings.kinds, oldest)
        if reason is not None or kind is None:
            self.metrics.skipped.labels(source, reason or "waiting").inc()
            return None
        return Notice(kind.value, text, orjson.loads(record.to_json()), msg)

    def dead_letter(self, msg: Message, outcome: Outcome) -> None:
        letter = DeadLetter.of(
            source_topic=str(msg.topic()),
            partition=int(msg.partition() or 0),
            offset=int(msg.offset() or 0),
            key=msg.key(),
            value=msg.value(),
            reason="webhook_failed",
            error=f"the webhook did not take the message in {outcome.attempts} attempts; "
            f"the last: {outcome.error}",
            service="notifier",
            raw=self.kafka.dead_letter_raw,
        )
        try:
            self.producer.produce(self.kafka.topic(DEAD_LETTER), msg.key(), letter.to_json())
        except KafkaException as err:
            logger.error("could not send a dead letter: %s", err)

    def finish(self, consumer: CommittingConsumer, msg: Message) -> None:
        """``msg`` is done: store the offsets it completes."""
        last = self.tracker.done(_where(msg), int(msg.offset() or 0))
        if last is None:
            return
        try:
            consumer.mark_processed([last])
        except KafkaException as err:  # its partition was revoked meanwhile: read again
            logger.warning("offset not stored topic=%s: %s", last.topic(), err)

    def settle(self, consumer: CommittingConsumer, wait_s: float = 0.0) -> None:
        """Handle what the senders finished: dead letters, then offsets."""
        try:
            done = [self._done.get(timeout=wait_s) if wait_s else self._done.get_nowait()]
        except queue.Empty:
            return
        while True:
            try:
                done.append(self._done.get_nowait())
            except queue.Empty:
                break
        for notice, outcome in done:
            if not outcome.delivered:
                self.dead_letter(notice.ref, outcome)
            self.finish(consumer, notice.ref)
        if self._producer is not None:
            self._producer.poll(0)

    def handle(
        self, consumer: CommittingConsumer, sink: WebhookSink, msg: Message, stop: threading.Event
    ) -> None:
        self.tracker.add(_where(msg), int(msg.offset() or 0), msg)
        notice = self.notice(msg)
        if notice is None:
            self.finish(consumer, msg)
            return
        while not sink.submit(notice, timeout_s=0.2):  # full: wait (backpressure), settling
            self.settle(consumer)
            if stop.is_set():
                return  # never queued: left uncommitted, read again on the next start

    def run(self, stop: threading.Event) -> None:
        target = self.settings.target()
        topics = list(self._sources)
        sink = WebhookSink(
            target,
            self.settings.backoff(),
            self.settings.queue_size,
            self.metrics,
            lambda notice, outcome: self._done.put((notice, outcome)),
            self.settings.senders,
        )
        # A full queue waits for the webhook without polling Kafka: the group must not count
        # the notifier as dead meanwhile (librdkafka's default allows 5 minutes).
        overrides = {"max.poll.interval.ms": 3_600_000}
        group = self.settings.group_id
        with CommittingConsumer(self.kafka, group, topics, overrides) as consumer:
            sink.start()
            logger.info("notifier: %s to %s", ", ".join(topics), redact_url(target.url))
            while not stop.is_set():
                self.settle(consumer)
                for msg in consumer.consumer.consume(100, 0.2):
                    err = msg.error()
                    if err is None:
                        self.handle(consumer, sink, msg, stop)
                    elif err.fatal():
                        raise KafkaException(err)
                    elif err.code() != KafkaError._PARTITION_EOF:
                        logger.warning("consumer error topic=%s: %s", msg.topic(), err.str())
            self.stop(consumer, sink)

    def stop(self, consumer: CommittingConsumer, sink: WebhookSink) -> None:
        """Give outstanding messages ``drain_s`` to end, then commit what is done."""
        deadline = time.monotonic() + self.settings.drain_s
        while sink.outstanding and time.monotonic() < deadline:
            self.settle(consumer, wait_s=0.1)
        left = sink.close()
        self.settle(consumer)
        if left:
            logger.warning(
                "%d messages were not sent before the stop: sent on the next start", left
            )
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.flush()
            except LoanStreamError as err:
                logger.error("not every dead letter was delivered: %s", err)


def notify(
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", help="Prometheus /metrics (0: none)")
    ] = None,
    bootstrap_servers: Annotated[str | None, typer.Option("--bootstrap-servers", "-b")] = None,
) -> None:
    """Post drift events, promotions and rejected challengers to a webhook (Slack or JSON):
    LOANSTREAM_NOTIFY_WEBHOOK_URL, and LOANSTREAM_NOTIFY_WEBHOOK_SECRET to sign them."""
    from prometheus_client import CollectorRegistry, start_http_server

    settings = load_settings()
    target = settings.target()  # refuses to start without a URL, before anything else
    kafka = kafka_settings(bootstrap_servers)
    registry = CollectorRegistry()
    port = settings.metrics_port if metrics_port is None else metrics_port  # 0: none
    if port:
        start_http_server(port, registry=registry)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    kinds = ",".join(sorted(settings.kinds))
    console.print(f"notifier: {kinds} to {redact_url(target.url)} ({settings.webhook_format})")
    Notifier(kafka, settings, WebhookMetrics(registry)).run(stop)
    console.print("notifier stopped")


def register(app: typer.Typer) -> None:
    app.command("notify")(notify)
