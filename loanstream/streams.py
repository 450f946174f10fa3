"""Faust plumbing shared by the stream services: the app, its credentials, reliable sends.

Every service app consumes with Faust's at-least-once defaults, never declares topics (they come
from ``loanstream topics create``), and lowers Faust's session and poll timeouts, whose defaults
(60 s, 1000 s) leave a SIGKILLed worker's partitions idle that long.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import tempfile
from typing import Any

import faust

from loanstream.config import KafkaSettings

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
    kafka: KafkaSettings, app_id: str, session_timeout_s: float, max_poll_interval_s: float
) -> faust.App:
    """A Faust app with the project's settings (in-memory tables, raw bytes in and out)."""
    return faust.App(
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
    )


async def send_all(app: faust.App, outgoing: list[Outgoing]) -> None:
    """Send and wait for every acknowledgement; retry until Kafka takes them all."""
    pending = outgoing
    delay = 0.1
    while pending:
        futures = [
            await app.producer.send(topic, key, value, None, ts, None)
            for topic, key, value, ts in pending
        ]
        results = await asyncio.gather(*futures, return_exceptions=True)
        failed = [o for o, r in zip(pending, results, strict=True) if isinstance(r, BaseException)]
        if failed:
            first = next(r for r in results if isinstance(r, BaseException))
            logger.error(
                "%d of %d sends failed (%r); retrying in %.1f s",
                len(failed),
                len(pending),
                first,
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        pending = failed
