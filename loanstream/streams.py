"""Faust plumbing shared by the stream services: the app, its credentials, reliable sends.

Every service app consumes with Faust's at-least-once defaults, never declares topics (they come
from ``loanstream topics create``), and lowers Faust's session and poll timeouts, whose defaults
(60 s, 1000 s) leave a SIGKILLed worker's partitions idle that long.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import sys
import tempfile
import threading
from collections.abc import Coroutine, Iterable
from typing import Any, NamedTuple, cast

import faust
from confluent_kafka import KafkaError, Message, Producer

from loanstream.config import KafkaSettings
from loanstream.delivery import use_transport
from loanstream.kafka.clients import PRODUCER_DEFAULTS
from loanstream.logs import LIBRARIES, LogSettings, logging_config, throttle_library_logs

logger = logging.getLogger(__name__)

Outgoing = tuple[str, bytes | None, bytes, float | None]  # topic, key, value, timestamp (s)


def faust_credentials(kafka: KafkaSettings) -> Any:
    """SASL/SSL settings of the project, in Faust's terms (None for PLAINTEXT)."""
    if kafka.security_protocol == "PLAINTEXT":
        return None
    context = None
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(
            cafile=str(kafka.ssl_ca_location) if kafka.ssl_ca_location else None
        )
        if kafka.ssl_certificate_location:
            context.load_cert_chain(
                str(kafka.ssl_certificate_location),
                str(kafka.ssl_key_location) if kafka.ssl_key_location else None,
                kafka.ssl_key_password.get_secret_value() if kafka.ssl_key_password else None,
            )
    if kafka.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password.get_secret_value() if kafka.sasl_password else None,
            mechanism=kafka.sasl_mechanism or "PLAIN",
            ssl_context=context,
        )
    return faust.SSLCredentials(context)


def faust_app(
    kafka: KafkaSettings,
    app_id: str,
    session_timeout_s: float,
    max_poll_interval_s: float,
    fetch: tuple[int, int] = (1, 1500),
) -> faust.App:
    """A Faust app with the project's settings (in-memory tables, raw bytes in and out), whose
    fetches wait for ``fetch`` = (min bytes, max wait ms); the default is Faust's own."""
    app = faust.App(
        app_id,
        broker=[f"kafka://{server}" for server in kafka.bootstrap_servers.split(",")],
        broker_credentials=faust_credentials(kafka),
        broker_client_id=kafka.client_id,
        store="memory://",
        datadir=tempfile.mkdtemp(prefix="loanstream-faust-"),
        value_serializer="raw",
        key_serializer="raw",
        topic_allow_declare=False,  # topics come from `loanstream topics create`
        topic_disable_leader=True,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        broker_session_timeout=session_timeout_s,
        broker_heartbeat_interval=min(3.0, session_timeout_s / 3),
        broker_max_poll_interval=max_poll_interval_s,
        stream_buffer_maxsize=kafka.faust_stream_buffer,
    )
    use_transport(
        app,
        prompt=kafka.faust_prompt_delivery,
        fetch_min_bytes=fetch[0],
        fetch_max_wait_ms=fetch[1],
    )
    return app


def run_worker(app: faust.App, name: str) -> None:
    """Run ``app`` as a Faust worker in this process, logging warnings and errors only.

    Faust's worker draws a terminal spinner that turns on every log record: it sets the root
    logger to DEBUG and filters in its handlers, so every ``log.debug`` in aiokafka and Faust (one
    per message sent) builds a record only to drop it, ~10% of the monitor's CPU. The libraries'
    own loggers are held at WARNING instead, and their repeats throttled (loanstream.logs): a
    broker outage made aiokafka log ~65,000 errors in 20 s.
    """
    for library in LIBRARIES:
        logging.getLogger(library).setLevel(logging.WARNING)
    throttle_library_logs()
    # the worker replaces the root logger's handlers: it gets the process's own configuration
    app.conf.logging_config = logging_config(LogSettings())
    sys.argv = [name, "worker", "--loglevel", "warn", "--without-web"]
    app.main()


class Record(NamedTuple):
    """One message to send: an ``Outgoing`` with, when it matters, its partition and headers."""

    topic: str
    key: bytes | None
    value: bytes | None  # None: a tombstone (a table's deleted key)
    timestamp: float | None = None  # seconds
    partition: int | None = None  # None: the key's murmur2 partition
    headers: list[tuple[str, bytes]] | None = None


class Sender:
    """Sends a Faust service's output through librdkafka, and waits until Kafka has all of it.

    Faust's own producer (aiokafka, in Python) costs ~120 us of the event loop's CPU per message
    sent, more than the monitor's whole work on it: librdkafka batches and sends from its own
    threads. ``send_all`` returns once every record is acknowledged (``acks=all``, idempotent),
    so a service that awaits it before taking its next batch (which lets Faust commit the last
    one) keeps the at-least-once contract. A record Kafka refuses is sent again, with back-off,
    until it is taken; a broker that is down is waited for, with a warning every few seconds.

    Calls may overlap (the monitor's two streams). Each waits until librdkafka's queue is empty
    and no refused record is left to send again, which covers its own records. Records of one
    partition keep the order they were given in, as one idempotent producer sends them all.
    Failures reach one producer-wide callback: a callback per message would make every
    acknowledgement wait for the event loop's thread to let go of the GIL (a flush of 1,000
    records took 134 ms instead of 21 beside a busy thread).
    """

    def __init__(
        self, kafka: KafkaSettings, flush_wait_s: float = 5.0, each_batch: bool = False
    ) -> None:
        conf = {**kafka.confluent(), **PRODUCER_DEFAULTS, "on_delivery": self._on_delivery}
        if each_batch:  # submit_batch counts every acknowledgement (see Delivery)
            conf["delivery.report.only.error"] = False
        self._producer = Producer(conf)
        self._flush_wait_s = flush_wait_s
        self._failed: list[tuple[Record, str]] = []
        self._failed_lock = threading.Lock()  # delivery reports come on the flushing thread

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:  # called for failures only (delivery.report.only.error)
            with self._failed_lock:
                self._failed.append((record_of(msg), err.str()))

    def _produce(self, record: Record, on_delivery: Delivery | None = None) -> None:
        kwargs: dict[str, Any] = {} if on_delivery is None else {"on_delivery": on_delivery}
        if record.timestamp is not None:
            kwargs["timestamp"] = int(record.timestamp * 1000)
        if record.partition is not None:
            kwargs["partition"] = record.partition
        if record.headers:
            kwargs["headers"] = record.headers
        while True:
            try:
                self._producer.produce(record.topic, record.value, record.key, **kwargs)
                if on_delivery is not None:  # one more acknowledgement it waits for
                    on_delivery.remaining += 1
                return
            except BufferError:  # the local queue is full: let librdkafka drain it
                self._producer.poll(0.05)

    async def send_all(self, records: Iterable[Outgoing | Record]) -> None:
        """Send ``records`` and return once Kafka has acknowledged every one of them."""
        await self.submit(records)

    def submit(self, records: Iterable[Outgoing | Record]) -> Coroutine[Any, Any, None]:
        """Hand ``records`` to librdkafka now, in order; await the result for their delivery."""
        for record in records:
            self._produce(record if isinstance(record, Record) else Record(*record))
        return self._delivered()

    def submit_batch(self, records: Iterable[Outgoing | Record]) -> Delivery:
        """Hand ``records`` to librdkafka now, in order, and count their acknowledgements.

        Unlike ``submit`` (a flush, which waits for every record produced so far), the
        delivery of one batch completes when its own records are in Kafka, while later
        batches are still being produced. Needs ``each_batch=True``.
        """
        delivery = Delivery()
        for record in records:
            self._produce(record if isinstance(record, Record) else Record(*record), delivery)
        return delivery

    async def settle(self, delivery: Delivery, every_s: float = 0.005) -> None:
        """Return once every record of ``delivery`` is acknowledged, sending refused ones again.

        Acknowledgements are served here, on the event loop's thread, every ``every_s``: a
        callback per record on a flushing thread would wait for the GIL each time.
        """
        delay, waited = 0.1, 0.0
        while True:
            self._producer.poll(0)
            if delivery.remaining == 0:
                if not delivery.failed:
                    return
                failed, delivery.failed = delivery.failed, []
                delay = await self._send_again(failed, delay, delivery)
                continue
            await asyncio.sleep(every_s)
            waited += every_s
            if waited >= self._flush_wait_s:
                logger.warning(
                    "%d records not acknowledged after %.0f s; still waiting for Kafka",
                    delivery.remaining,
                    waited,
                )
                waited = 0.0

    async def _delivered(self) -> None:
        loop = asyncio.get_running_loop()
        delay = 0.1
        while True:
            while remaining := await loop.run_in_executor(
                None, self._producer.flush, self._flush_wait_s
            ):
                logger.warning(
                    "%d records not acknowledged after %.0f s; still waiting for Kafka",
                    remaining,
                    self._flush_wait_s,
                )
            with self._failed_lock:
                failed, self._failed = self._failed, []
            if not failed:
                return
            delay = await self._send_again(failed, delay)

    async def _send_again(
        self, failed: list[tuple[Record, str]], delay: float, delivery: Delivery | None = None
    ) -> float:
        """Send refused records again after ``delay`` (counted by ``delivery``); the next delay."""
        logger.error(
            "Kafka refused %d records (%s); sending them again in %.1f s",
            len(failed),
            failed[0][1],
            delay,
        )
        await asyncio.sleep(delay)
        for record, _ in failed:
            self._produce(record, delivery)
        return min(delay * 2, 5.0)


class Delivery:
    """The acknowledgements one batch of records still waits for, counted on delivery."""

    def __init__(self) -> None:
        self.remaining = 0
        self.failed: list[tuple[Record, str]] = []

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        self.remaining -= 1
        if err is not None:
            self.failed.append((record_of(msg), err.str()))


def record_of(msg: Message) -> Record:
    """The record a producer's delivery report is about, to send it again."""
    ts = msg.timestamp()[1]
    return Record(
        msg.topic() or "",
        msg.key(),
        msg.value(),
        ts / 1000 if ts > 0 else None,
        msg.partition(),
        cast(list[tuple[str, bytes]] | None, msg.headers()),
    )
