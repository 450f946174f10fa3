"""Follow the compacted loan.model-updates topic and load each new champion in the background.

Every scorer worker reads the whole topic (no consumer group: each must see every update), from
the beginning, so on start the last value is the current champion. A load that fails (MLflow
unreachable, sha256 mismatch, untrusted type) keeps the old model, is counted and logged.
"""

from __future__ import annotations

import logging
import threading
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from pydantic import ValidationError

from loanstream.config import KafkaSettings
from loanstream.contracts import ModelUpdate
from loanstream.errors import LoanStreamError
from loanstream.models import download_and_load
from loanstream.topics import MODEL_UPDATES
from scorer.holder import ModelHolder
from scorer.metrics import ScorerMetrics
from scorer.settings import ScorerSettings

logger = logging.getLogger(__name__)


class ModelWatcher(threading.Thread):
    def __init__(
        self,
        kafka: KafkaSettings,
        settings: ScorerSettings,
        holder: ModelHolder,
        metrics: ScorerMetrics,
    ) -> None:
        super().__init__(name="model-watcher", daemon=True)
        self.kafka = kafka
        self.settings = settings
        self.holder = holder
        self.metrics = metrics
        self.stopping = threading.Event()
        self.loaded_sha256: str | None = None

    def run(self) -> None:
        topic = self.kafka.topic(MODEL_UPDATES)
        consumer = Consumer(
            {
                **self.kafka.confluent(),
                "group.id": f"watch-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        try:
            partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
            consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
            while not self.stopping.is_set():
                latest: ModelUpdate | None = None
                for msg in consumer.consume(100, 0.5):  # keep only the newest of a burst
                    if msg.error() is None:
                        latest = self._parse(msg.value()) or latest
                if latest is not None:
                    self.load(latest)
        except Exception:
            logger.exception("model watcher stopped")
            raise
        finally:
            consumer.close()

    def _parse(self, value: bytes | None) -> ModelUpdate | None:
        try:
            update = ModelUpdate.from_json(value or b"")
        except ValidationError as err:
            self.metrics.model_loads.labels("invalid_update").inc()
            logger.error("ignoring an invalid model update: %s", str(err)[:300])
            return None
        return update if update.model_name == self.settings.model_name else None

    def load(self, update: ModelUpdate) -> None:
        if update.sha256 == self.loaded_sha256:
            return
        try:
            model = download_and_load(
                update.model_uri,
                self.settings.resolved_tracking_uri(),
                update.sha256,
                update.model_name,
                update.version,
            )
        except (LoanStreamError, OSError, KeyError) as err:
            self.metrics.model_loads.labels("failed").inc()
            logger.error(
                "keeping the current model: cannot load %s v%s: %s",
                update.model_name,
                update.version,
                err,
            )
            return
        except Exception as err:  # MLflow raises its own exception types
            self.metrics.model_loads.labels("failed").inc()
            logger.error(
                "keeping the current model: cannot load %s v%s: %s: %s",
                update.model_name,
                update.version,
                type(err).__name__,
                err,
            )
            return
        self.loaded_sha256 = update.sha256
        self.metrics.model_loads.labels("loaded").inc()
        self.holder.offer(model)
        logger.info("loaded %s v%s; it scores from the next batch", model.name, model.version)
