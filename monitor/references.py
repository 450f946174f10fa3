"""The training reference of every model version, from loan.model-updates and MLflow.

The data-drift tests compare live traffic with the reference stored beside each model, so the
monitor follows the compacted topic from the beginning, like the scorer, and keeps the reference
of each version it sees. A version that cannot be loaded is logged and skipped: its predictions
are still joined, only not monitored.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from pydantic import ValidationError

from loanstream.config import KafkaSettings
from loanstream.contracts import ModelUpdate
from loanstream.kafka.clients import arrived, whole_topic_reader
from loanstream.models import download_and_load
from loanstream.topics import MODEL_UPDATES

logger = logging.getLogger(__name__)


class ReferenceWatcher(threading.Thread):
    def __init__(self, kafka: KafkaSettings, model_name: str, tracking_uri: str) -> None:
        super().__init__(name="reference-watcher", daemon=True)
        self.kafka = kafka
        self.model_name = model_name
        self.tracking_uri = tracking_uri
        self.references: dict[str, dict[str, Any]] = {}
        self.current: str | None = None
        self.ready = threading.Event()
        self.stopping = threading.Event()

    def run(self) -> None:
        topic = self.kafka.topic(MODEL_UPDATES)
        consumer = whole_topic_reader(self.kafka, topic)
        try:
            while not self.stopping.is_set():
                for message in arrived(consumer, 0.5):
                    if message.error() is None:
                        self._load(message.value())
        except Exception:
            logger.exception("reference watcher stopped")
            raise
        finally:
            consumer.close()

    def _load(self, value: bytes | None) -> None:
        try:
            update = ModelUpdate.from_json(value or b"")
        except ValidationError as err:
            logger.error("ignoring an invalid model update: %s", str(err)[:300])
            return
        if update.model_name != self.model_name or update.version in self.references:
            return
        try:
            model = download_and_load(
                update.model_uri,
                self.tracking_uri,
                update.sha256,
                update.model_name,
                update.version,
            )
        except Exception as err:  # MLflow raises its own types; never stop watching
            logger.error(
                "cannot load the reference of %s v%s: %s: %s",
                update.model_name,
                update.version,
                type(err).__name__,
                err,
            )
            return
        self.references[update.version] = model.reference
        self.current = update.version
        self.ready.set()
        logger.info("monitoring %s v%s against its reference", update.model_name, update.version)
