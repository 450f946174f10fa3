"""Follow the compacted loan.model-updates topic and load each new champion in the background.

Every scorer worker reads the whole topic (no consumer group: each must see every update), from
the beginning, so on start the last value is the current champion. A load that fails (MLflow
unreachable, sha256 mismatch, untrusted type) keeps the old model, is counted and logged.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import pandas as pd
from pydantic import ValidationError

from loanstream.config import KafkaSettings
from loanstream.contracts import ModelUpdate
from loanstream.errors import LoanStreamError
from loanstream.kafka.clients import arrived, whole_topic_reader
from loanstream.models import LoadedModel, download_and_load, repaid_probability
from loanstream.topics import MODEL_UPDATES
from scorer.compiled import CompiledModel, attribution_model, compile_model
from scorer.core import typical_values
from scorer.holder import ModelHolder
from scorer.metrics import ScorerMetrics
from scorer.settings import ScorerSettings

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # prctl(2)


def load_compiled(
    model_uri: str, tracking_uri: str, expected_sha256: str | None, name: str, version: str
) -> LoadedModel:
    """Download, verify, and compile (see scorer.compiled) the model."""
    return compile_model(download_and_load(model_uri, tracking_uri, expected_sha256, name, version))


def _loader_started(niceness: int) -> None:
    """In the loader process: lower its priority, and end it when the scorer ends."""
    os.nice(niceness)
    if sys.platform == "linux":  # otherwise a loader whose scorer was killed waits forever
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _imports() -> None:
    """In the loader process, at start: pay for the heavy imports before any swap needs them."""
    for module in ("mlflow.artifacts", "skops.io", "sklearn.calibration", "sklearn.ensemble"):
        importlib.import_module(module)


class Loader:
    """A process of its own that downloads, verifies and compiles models, so their CPU work
    (MLflow, skops) never holds the scorer's GIL while batches are scored; only the verified
    model comes back.

    It is started, and its imports paid for (~5 s of CPU), when the scorer starts: a swap then
    costs only the model's own download and load, which matters on a busy machine where the
    loader runs at a lower priority than the scorer (see ``niceness``).
    """

    def __init__(self, niceness: int = 5) -> None:
        self.niceness = niceness
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> None:
        # Not at nice 19, nor 10: on a busy 2-core machine those starved it and a swap waited
        # for minutes. "spawn": never fork a process with threads.
        self._pool = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_loader_started,
            initargs=(self.niceness,),
        )
        self._pool.submit(_imports).result(timeout=600)

    def load(self, update: ModelUpdate, tracking_uri: str) -> LoadedModel:
        if self._pool is None:
            self.start()
        assert self._pool is not None
        future = self._pool.submit(
            load_compiled,
            update.model_uri,
            tracking_uri,
            update.sha256,
            update.model_name,
            update.version,
        )
        try:
            return future.result(timeout=600)
        except BrokenProcessPool:  # the loader died (killed, out of memory): a new one next time
            self.close()
            raise

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def warm_up(model: LoadedModel) -> None:
    """Score the typical applicant once, so first-call costs are paid here, not in a batch."""
    typical = typical_values(model.reference)
    rows = [{n: typical.get(n) for n in model.feature_names}] * 8
    if isinstance(model.model, CompiledModel):
        X = model.model.matrix(rows)
        model.model.probability(X)
        model.model.raw_probability(X)
        return
    frame = pd.DataFrame(rows)
    repaid_probability(model.model, frame)
    repaid_probability(attribution_model(model.model), frame)


@contextlib.contextmanager
def quick_gil_switches(interval_s: float = 0.0005) -> Iterator[None]:
    """While a new model comes in (unpickled from the loader, then warmed up) on this thread, the
    event loop waits for the GIL at every switch: hand it over every 0.5 ms instead of Python's
    5 ms, so the swap barely pauses scoring. Only then: frequent switches between the event loop
    and Faust's consumer thread cost throughput the rest of the time."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(interval_s)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


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
        self.loader = Loader(settings.loader_niceness)

    def run(self) -> None:
        topic = self.kafka.topic(MODEL_UPDATES)
        consumer = whole_topic_reader(self.kafka, topic)
        try:
            self.loader.start()
            while not self.stopping.is_set():
                latest: ModelUpdate | None = None
                for msg in arrived(consumer, 0.5):  # keep only the newest of a burst
                    if msg.error() is None:
                        latest = self._parse(msg.value()) or latest
                if latest is not None:
                    self.load(latest)
        except Exception:
            logger.exception("model watcher stopped")
            raise
        finally:
            consumer.close()
            self.loader.close()

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
        logger.info("model update: %s v%s; loading it", update.model_name, update.version)
        with self.metrics.model_loading.track_inprogress(), quick_gil_switches():
            self._load(update)

    def _load(self, update: ModelUpdate) -> None:
        try:
            model = self.loader.load(update, self.settings.resolved_tracking_uri())
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
        warm_up(model)
        self.loaded_sha256 = update.sha256
        self.metrics.model_loads.labels("loaded").inc()
        self.holder.offer(model)
        logger.info("loaded %s v%s; it scores from the next batch", model.name, model.version)
