"""The training reference of each model version the monitor watches, from the MLflow registry.

The data-drift tests compare live traffic with the reference stored beside each model. The
registry decides which version is champion and what its file's sha256 must be: the watcher looks
at start, every ``registry_poll_s``, and at once when a (verified) ModelUpdate of its model name
arrives, and loads the champion's reference. The versions a restored snapshot names are loaded by
number, from the same registry. A version that cannot be loaded is logged and skipped: its
predictions are still joined, only not monitored.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from loanstream.config import KafkaSettings
from loanstream.kafka.clients import arrived, whole_topic_reader
from loanstream.models import RegisteredModel, download_and_load, registered, registry_client
from loanstream.signing import prompt
from loanstream.topics import MODEL_UPDATES

logger = logging.getLogger(__name__)


class ReferenceWatcher(threading.Thread):
    def __init__(
        self, kafka: KafkaSettings, model_name: str, tracking_uri: str, poll_s: float = 30.0
    ) -> None:
        super().__init__(name="reference-watcher", daemon=True)
        self.kafka = kafka
        self.model_name = model_name
        self.tracking_uri = tracking_uri
        self.poll_s = poll_s
        self.references: dict[str, dict[str, Any]] = {}
        self.current: str | None = None
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self._client: Any = None

    def run(self) -> None:
        topic = self.kafka.topic(MODEL_UPDATES)
        consumer = whole_topic_reader(self.kafka, topic)
        try:
            next_look = 0.0
            while not self.stopping.is_set():
                prompted = False
                for message in arrived(consumer, 0.5):
                    if message.error() is None:
                        prompted = self.prompted(message.value()) or prompted
                if prompted or time.monotonic() >= next_look:
                    next_look = time.monotonic() + self.poll_s
                    self.look()
        except Exception:
            logger.exception("reference watcher stopped")
            raise
        finally:
            consumer.close()

    def prompted(self, value: bytes | None) -> bool:
        """True when ``value`` is a (verified) ModelUpdate of the monitored model name."""
        key = self.kafka.model_update_key
        asked = prompt(value, self.model_name, key.get_secret_value() if key else None)
        if asked in ("invalid", "unsigned"):
            logger.error("ignoring a model update: %s", asked)
        return asked == "look"

    def look(self) -> None:
        """Load the reference of the registry's champion, if it is not loaded yet."""
        found = self._registered(None)
        if found is not None:
            self._load(found)
            if found.version in self.references:
                self.current = found.version
                self.ready.set()

    def ensure(self, versions: Iterable[str]) -> None:
        """Load the references of ``versions`` (e.g. those a saved state names), by number."""
        for version in versions:
            if version not in self.references:
                found = self._registered(version)
                if found is not None:
                    self._load(found)

    def _registered(self, version: str | None) -> RegisteredModel | None:
        try:
            if self._client is None:
                self._client = registry_client(self.tracking_uri)
            return registered(self._client, self.model_name, version)
        except Exception as err:  # the registry is down or refuses: look again later
            logger.error("cannot read the registry: %s: %s", type(err).__name__, err)
            return None

    def _load(self, chosen: RegisteredModel) -> None:
        if chosen.version in self.references:
            return
        try:
            model = download_and_load(
                chosen.uri, self.tracking_uri, chosen.sha256, chosen.name, chosen.version
            )
        except Exception as err:  # MLflow raises its own types; never stop watching
            logger.error(
                "cannot load the reference of %s v%s: %s: %s",
                chosen.name,
                chosen.version,
                type(err).__name__,
                err,
            )
            return
        self.references[chosen.version] = model.reference
        logger.info("monitoring %s v%s against its reference", chosen.name, chosen.version)
