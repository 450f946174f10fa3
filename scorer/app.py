"""The Faust scorer: loan.applications -> micro-batches -> loan.predictions (+ dead letters).

A thin shell around :func:`scorer.core.score_batch`. Every record of a batch ends as exactly one
prediction or one dead letter, and the batch is acknowledged (so Faust may commit its offsets)
only after Kafka has acknowledged all of them: batches come from ``noack_take`` and an
:class:`Acknowledger` acks them once delivered, while the loop scores the next one. Nothing in
the loop may raise, and sends are retried until they succeed.

A challenger in shadow (the registry's ``challenger`` alias, see scorer.watcher) scores the same
valid applications of the batch after the champion's predictions are built, into
loan.shadow-predictions: the champion's predictions are the same bytes with or without it, and a
challenger that fails is counted and logged, its batch simply has no shadow predictions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import faust

from loanstream.bulk import bulk_take
from loanstream.config import KafkaSettings
from loanstream.contracts import DeadLetter, LoanApplication, Prediction
from loanstream.errors import InvalidRecord
from loanstream.models import LoadedModel
from loanstream.streams import Outgoing, Sender, faust_app
from loanstream.topics import APPLICATIONS, DEAD_LETTER, PREDICTIONS, SHADOW_PREDICTIONS
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
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.kafka = kafka
        self.settings = settings
        self.holder = holder
        self.metrics = metrics
        self.validator = validator  # its max_bytes should equal settings.max_message_bytes
        self.clock = clock
        self.predictions = kafka.topic(PREDICTIONS)
        self.shadow_predictions = kafka.topic(SHADOW_PREDICTIONS)
        self.dead_letter = kafka.topic(DEAD_LETTER)
        self._shadow_version: str | None = None  # the challenger the shadow-info metric names

    def dead(self, message: Any, reason: str, error: str | Exception) -> Outgoing:
        """The dead letter of an application (bounded, without its values: see DeadLetter)."""
        self.metrics.dead_letters.labels(reason).inc()
        letter = DeadLetter.of(
            source_topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=message.value,
            reason=reason,
            error=error,
            service="scorer",
            raw=self.kafka.dead_letter_raw,
        )
        return (self.dead_letter, letter.key(), letter.to_json(), None)

    def process(self, messages: list[Any]) -> list[Outgoing]:
        received = self.clock()
        out: list[Outgoing] = []
        apps: list[LoanApplication] = []
        sources: list[Any] = []
        for message in messages:
            try:
                apps.append(self.validator.parse(message.value or b""))
                sources.append(message)
            except InvalidRecord as err:
                out.append(self.dead(message, err.reason, err))
            except Exception as err:  # a validator bug must not lose the record
                out.append(self.dead(message, "internal", err))
        if not apps:
            return out
        taken = self.holder.take()
        model, typical = taken.model, taken.typical
        if taken.swapped and model is not None:
            self.metrics.model.info(
                {"name": model.name, "version": model.version, "sha256": model.sha256}
            )
            logger.info("scoring with %s v%s from this batch on", model.name, model.version)
        began = time.perf_counter()
        try:
            assert model is not None, "no model loaded"
            predictions = score_batch(
                model,
                apps,
                received,
                self.clock(),
                self.settings.reasons,
                typical,
                self.validator.spec,
            )
        except Exception as err:
            logger.exception("scoring a batch of %d failed; dead-lettering it", len(apps))
            return out + [self.dead(m, "scoring_failed", err) for m in sources]
        self.metrics.model_seconds.observe(time.perf_counter() - began)
        self.metrics.batch_size.observe(len(apps))
        for decision, count in Counter(p.decision.value for p in predictions).items():
            self.metrics.scored.labels(decision, model.version, "stream").inc(count)
        out += self.outgoing(self.predictions, predictions, sources)
        challenger = taken.challenger if self.settings.shadow else None
        self.note_shadow(challenger)
        shadow = self.shadow(challenger, apps, received) if challenger is not None else []
        if shadow:  # none when the challenger failed
            out += self.outgoing(self.shadow_predictions, shadow, sources)
        return out

    @staticmethod
    def outgoing(
        topic: str, predictions: Sequence[Prediction], sources: list[Any]
    ) -> list[Outgoing]:
        """One record per prediction, keyed by application id as the topic table says (whatever
        key a client sent), stamped with its application's timestamp."""
        return [
            (
                topic,
                prediction.application_id.encode(),
                prediction.to_json(),
                message.timestamp or None,  # seconds, as Faust counts them
            )
            for prediction, message in zip(predictions, sources, strict=True)
        ]

    def shadow(
        self, challenger: LoadedModel, apps: list[LoanApplication], received: datetime
    ) -> list[Prediction]:
        """The challenger's predictions of ``apps``, without reasons; none when it fails (it
        never dead-letters an application: the champion answered for each)."""
        began = time.perf_counter()
        try:
            predictions = score_batch(challenger, apps, received, self.clock(), False)
        except Exception as err:
            self.metrics.shadow_failures.inc()
            logger.error(
                "the challenger %s v%s failed on a batch of %d; no shadow predictions for it: "
                "%s: %s",
                challenger.name,
                challenger.version,
                len(apps),
                type(err).__name__,
                err,
            )
            return []
        self.metrics.shadow_seconds.observe(time.perf_counter() - began)
        self.metrics.shadow_scored.labels(challenger.version).inc(len(predictions))
        return predictions

    def note_shadow(self, challenger: LoadedModel | None) -> None:
        """Keep ``loanstream_scorer_shadow`` on the challenger scoring now, logging changes."""
        version = challenger.version if challenger is not None else None
        if version == self._shadow_version:
            return
        self._shadow_version = version
        if challenger is None:
            self.metrics.shadow.info({"name": "", "version": "", "sha256": ""})
            logger.info("no challenger in shadow from this batch on")
            return
        self.metrics.shadow.info(
            {"name": challenger.name, "version": challenger.version, "sha256": challenger.sha256}
        )
        logger.info(
            "challenger %s v%s scores in shadow from this batch on",
            challenger.name,
            challenger.version,
        )


class Acknowledger:
    """Acks each batch's records once Kafka holds everything the batch produced.

    The scoring loop hands a batch's outputs to librdkafka and takes the next batch at once;
    this task waits for their delivery and only then acks the batch's events, so Faust commits
    no offset whose prediction is not in Kafka (at-least-once, as before). Scoring then waits
    only for its own work, not for the broker's round trip: 13 ms at the median but up to 280
    ms on this 2-core machine beside the broker and a producer (hot-swap test). Each batch's
    delivery is its own (``Sender.submit_batch``): a flush would wait for every record
    produced so far, and under a steady stream it did not return for 100-600 ms. Batches are
    acked in order; besides the one being settled, at most ``depth`` wait, and the loop waits
    when one more would.
    """

    def __init__(
        self,
        stream: Any,
        depth: int = 16,
        on_acked: Callable[[list[Any]], None] | None = None,
    ) -> None:
        self._stream = stream
        self._queue: asyncio.Queue[tuple[list[Any], Awaitable[None]]] = asyncio.Queue(depth)
        self._on_acked = on_acked

    async def put(self, events: list[Any], delivery: Awaitable[None]) -> None:
        """Ack ``events`` once ``delivery`` (of what they produced) has completed."""
        await self._queue.put((events, delivery))

    async def run(self) -> None:
        while True:
            events, delivery = await self._queue.get()
            try:
                await delivery
                for event in events:
                    await self._stream.ack(event)
                if self._on_acked is not None:
                    self._on_acked(events)
            finally:
                self._queue.task_done()

    async def drain(self) -> None:
        """Wait until every batch handed over so far is acked."""
        await self._queue.join()


def build_app(kafka: KafkaSettings, settings: ScorerSettings, scorer: BatchScorer) -> faust.App:
    app = faust_app(
        kafka,
        settings.app_id,
        settings.session_timeout_s,
        settings.max_poll_interval_s,
        fetch=(settings.fetch_min_bytes, settings.fetch_max_wait_ms),
    )
    source = app.topic(kafka.topic(APPLICATIONS), value_serializer="raw", key_serializer="raw")
    holder = scorer.holder
    sender = Sender(kafka, each_batch=True)

    def observe_latency(events: list[Any]) -> None:
        now = time.time()
        for event in events:
            timestamp = event.message.timestamp
            if timestamp and 0 <= now - timestamp < 3600:
                scorer.metrics.latency.observe(now - timestamp)

    @app.agent(source, concurrency=1)  # >1 can commit past unprocessed records (faust #606)
    async def score(stream: Any) -> None:
        while not holder.ready.is_set():  # consume nothing until a model is loaded
            await asyncio.sleep(0.1)
        acks = Acknowledger(stream, on_acked=observe_latency)
        acking = asyncio.ensure_future(acks.run())
        try:
            batches = (
                bulk_take(stream, settings.batch_max, settings.batch_within_s)
                if settings.bulk_take
                else stream.noack_take(settings.batch_max, within=settings.batch_within_s)
            )
            async for events in batches:
                if acking.done():  # it only stops on a bug: crash rather than ack nothing
                    raise RuntimeError("the scorer's acknowledger stopped") from acking.exception()
                outgoing = scorer.process([event.message for event in events])
                await acks.put(events, sender.settle(sender.submit_batch(outgoing)))
        finally:  # a graceful stop acks what was delivered, so fewer records come again
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(acks.drain(), timeout=10)
            acking.cancel()

    return app
