"""The Faust scorer: loan.applications -> micro-batches -> loan.predictions (+ dead letters).

A thin shell around :func:`scorer.core.score_batch`. Every record of a batch ends as exactly one
prediction or one dead letter, and the batch is acknowledged only after Kafka has acknowledged
all of them: Faust acks a ``take`` batch when the loop body returns, even after an error, so
nothing here may raise, and sends are retried until they succeed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import faust

from loanstream.config import KafkaSettings
from loanstream.contracts import DeadLetter, LoanApplication
from loanstream.errors import InvalidRecord
from loanstream.streams import Outgoing, Sender, faust_app
from loanstream.topics import APPLICATIONS, DEAD_LETTER, PREDICTIONS
from loanstream.validation import ApplicationValidator
from scorer.core import score_batch
from scorer.holder import ModelHolder
from scorer.metrics import ScorerMetrics
from scorer.settings import ScorerSettings

logger = logging.getLogger(__name__)


class BatchScorer:
    """Turns one batch of raw records into outgoing messages; never raises."""

    def __init__(
        self,
        kafka: KafkaSettings,
        settings: ScorerSettings,
        holder: ModelHolder,
        metrics: ScorerMetrics,
        validator: ApplicationValidator,
    ) -> None:
        self.kafka = kafka
        self.settings = settings
        self.holder = holder
        self.metrics = metrics
        self.validator = validator  # its max_bytes should equal settings.max_message_bytes
        self.predictions = kafka.topic(PREDICTIONS)
        self.dead_letter = kafka.topic(DEAD_LETTER)

    def dead(self, message: Any, reason: str, error: str) -> Outgoing:
        self.metrics.dead_letters.labels(reason).inc()
        value = message.value
        limit = self.settings.max_message_bytes
        if value is not None and len(value) > limit:  # keep the dead letter itself sendable
            error += (
                f" (value kept to its first {limit} of {len(value)} bytes; sha256 "
                f"{hashlib.sha256(value).hexdigest()})"
            )
            value = value[:limit]
        key = message.key[:1024] if message.key else message.key
        letter = DeadLetter.of(
            source_topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=key,
            value=value,
            reason=reason,
            error=error[:4000],
            service="scorer",
        )
        return (self.dead_letter, message.key, letter.to_json(), None)

    def process(self, messages: list[Any]) -> list[Outgoing]:
        received = datetime.now(UTC)
        out: list[Outgoing] = []
        apps: list[LoanApplication] = []
        sources: list[Any] = []
        for message in messages:
            try:
                apps.append(self.validator.parse(message.value or b""))
                sources.append(message)
            except InvalidRecord as err:
                out.append(self.dead(message, err.reason, str(err)))
            except Exception as err:  # a validator bug must not lose the record
                out.append(self.dead(message, "internal", f"{type(err).__name__}: {err}"))
        if not apps:
            return out
        model, typical, swapped = self.holder.take()
        if swapped and model is not None:
            self.metrics.model.info(
                {"name": model.name, "version": model.version, "sha256": model.sha256}
            )
            logger.info("scoring with %s v%s from this batch on", model.name, model.version)
        began = time.perf_counter()
        try:
            assert model is not None, "no model loaded"
            predictions = score_batch(
                model, apps, received, datetime.now(UTC), self.settings.reasons, typical
            )
        except Exception as err:
            logger.exception("scoring a batch of %d failed; dead-lettering it", len(apps))
            return out + [
                self.dead(m, "scoring_failed", f"{type(err).__name__}: {err}") for m in sources
            ]
        self.metrics.model_seconds.observe(time.perf_counter() - began)
        self.metrics.batch_size.observe(len(apps))
        for decision, count in Counter(p.decision.value for p in predictions).items():
            self.metrics.scored.labels(decision, model.version, "stream").inc(count)
        for prediction, message in zip(predictions, sources, strict=True):
            out.append(
                (
                    self.predictions,
                    # keyed by application id as the topic table says, whatever key a client sent
                    prediction.application_id.encode(),
                    prediction.to_json(),
                    message.timestamp or None,  # seconds, as Faust counts them
                )
            )
        return out


def build_app(kafka: KafkaSettings, settings: ScorerSettings, scorer: BatchScorer) -> faust.App:
    app = faust_app(
        kafka, settings.app_id, settings.session_timeout_s, settings.max_poll_interval_s
    )
    source = app.topic(kafka.topic(APPLICATIONS), value_serializer="raw", key_serializer="raw")
    holder = scorer.holder
    sender = Sender(kafka)

    @app.agent(source, concurrency=1)  # >1 can commit past unprocessed records (faust #606)
    async def score(stream: Any) -> None:
        while not holder.ready.is_set():  # consume nothing until a model is loaded
            await asyncio.sleep(0.1)
        async for events in stream.take_events(settings.batch_max, within=settings.batch_within_s):
            messages = [event.message for event in events]
            outgoing = scorer.process(messages)
            await sender.send_all(outgoing)
            now = time.time()
            for message in messages:
                if message.timestamp and 0 <= now - message.timestamp < 3600:
                    scorer.metrics.latency.observe(now - message.timestamp)

    return app
