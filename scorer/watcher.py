"""Load the registry's champion in the background, and a new one whenever it changes.

The MLflow registry alone decides what serves: the watcher asks it for the ``champion`` alias
of the configured model name and loads that version verified against the sha256 the registry
recorded. It looks at start, every ``registry_poll_s``, and at once when a ModelUpdate of its
model name arrives on loan.model-updates (signed, when a key is set): a message says "look now",
never what to load. A version numbered before the one serving is refused unless
``loanstream model rollback`` brought it back. A load that fails (MLflow unreachable, sha256
mismatch, untrusted type, bad bands) keeps the old model, is counted and logged, and is tried
again at the next look. At each look it also asks for the ``challenger`` alias (unless
``shadow`` is off) and loads that version with the same verification, to score in shadow
(scorer.app); no alias, or one naming the champion's version, means no shadow. If the watcher
itself dies, it ends the scorer, which its supervisor restarts: a scorer that silently stops
following the registry would serve a stale model.
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
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import pandas as pd

from loanstream.config import KafkaSettings
from loanstream.kafka.clients import arrived, whole_topic_reader
from loanstream.models import (
    CHALLENGER_ALIAS,
    CHAMPION_ALIAS,
    LoadedModel,
    RegisteredModel,
    download_and_load,
    registered,
    registry_client,
    repaid_probability,
)
from loanstream.signing import prompt
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


_clients: dict[str, Any] = {}  # in the loader process: one MLflow client per tracking URI


def registry_alias(tracking_uri: str, name: str, alias: str) -> RegisteredModel | None:
    """In the loader process, where MLflow is imported already: the version the registry's
    ``alias`` (champion or challenger) names, None when there is none."""
    if tracking_uri not in _clients:
        _clients[tracking_uri] = registry_client(tracking_uri)
    return registered(_clients[tracking_uri], name, alias=alias)


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

    def load(self, chosen: RegisteredModel, tracking_uri: str) -> LoadedModel:
        if self._pool is None:
            self.start()
        assert self._pool is not None
        future = self._pool.submit(
            load_compiled, chosen.uri, tracking_uri, chosen.sha256, chosen.name, chosen.version
        )
        try:
            return future.result(timeout=600)
        except BrokenProcessPool:  # the loader died (killed, out of memory): a new one next time
            self.close()
            raise

    def registered(self, tracking_uri: str, name: str, alias: str) -> RegisteredModel | None:
        """The version ``alias`` names, asked from the loader process: MLflow (seconds to
        import, SQLAlchemy at every look) stays out of the scoring process and its GIL."""
        if self._pool is None:
            self.start()
        assert self._pool is not None
        try:
            return self._pool.submit(registry_alias, tracking_uri, name, alias).result(timeout=120)
        except BrokenProcessPool:
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


def end_process() -> None:
    """Stop this process as a signal would (Faust shuts down, committing what it handled), and
    for certain soon after."""
    os.kill(os.getpid(), signal.SIGTERM)
    threading.Timer(30.0, os._exit, args=(70,)).start()


class ModelWatcher(threading.Thread):
    def __init__(
        self,
        kafka: KafkaSettings,
        settings: ScorerSettings,
        holder: ModelHolder,
        metrics: ScorerMetrics,
        on_death: Callable[[], None] = end_process,
    ) -> None:
        super().__init__(name="model-watcher", daemon=True)
        self.kafka = kafka
        self.settings = settings
        self.holder = holder
        self.metrics = metrics
        self.on_death = on_death
        self.stopping = threading.Event()
        self.loaded: RegisteredModel | None = None
        self.shadowed: RegisteredModel | None = None  # the challenger offered to the holder
        self.refused: set[str] = set()  # versions refused as downgrades, logged once each
        self.loader = Loader(settings.loader_niceness)

    def run(self) -> None:
        try:
            self._follow()
        except Exception:
            logger.exception("the model watcher died: ending the scorer, to be restarted")
            self.on_death()
            raise

    def _follow(self) -> None:
        topic = self.kafka.topic(MODEL_UPDATES)
        consumer = whole_topic_reader(self.kafka, topic)
        try:
            self.loader.start()
            next_look = 0.0
            while not self.stopping.is_set():
                prompted = False
                for msg in arrived(consumer, 0.5):  # a burst of updates makes one look
                    if msg.error() is None:
                        prompted = self.prompted(msg.value()) or prompted
                if prompted or time.monotonic() >= next_look:
                    next_look = time.monotonic() + self.settings.registry_poll_s
                    self.look()
        finally:
            consumer.close()
            self.loader.close()

    def prompted(self, value: bytes | None) -> bool:
        """True when ``value`` is a (verified) ModelUpdate of this scorer's model name."""
        key = self.kafka.model_update_key
        asked = prompt(value, self.settings.model_name, key.get_secret_value() if key else None)
        if asked in ("invalid", "unsigned"):
            self.metrics.model_loads.labels(f"{asked}_update").inc()
            logger.error("ignoring a model update: %s", asked)
        return asked == "look"

    def look(self) -> None:
        """Load the registry's champion if it is not the model serving (and not a downgrade),
        then its challenger if it is not the one in shadow."""
        self.look_champion()
        if self.settings.shadow:
            self.look_challenger()

    def look_challenger(self) -> None:
        """Offer the registry's challenger for shadow scoring, or none when there is no alias
        or it names the champion; a challenger that cannot be read or loaded is dropped (the
        shadow must be the registry's challenger or nothing) and tried again at the next look."""
        try:
            uri = self.settings.resolved_tracking_uri()
            chosen = self.loader.registered(uri, self.settings.model_name, CHALLENGER_ALIAS)
        except Exception as err:
            self.metrics.model_loads.labels("challenger_registry_error").inc()
            logger.error(
                "cannot read the challenger from the registry: %s: %s", type(err).__name__, err
            )
            self.drop_challenger()
            return
        champion = self.loaded
        if chosen is None or (champion is not None and chosen.version == champion.version):
            self.drop_challenger()
            return
        shadowed = self.shadowed
        if shadowed and (chosen.version, chosen.sha256) == (shadowed.version, shadowed.sha256):
            return
        logger.info("challenger in the registry: %s v%s; loading it", chosen.name, chosen.version)
        try:
            with quick_gil_switches():
                model = self.loader.load(chosen, uri)
                warm_up(model)
        except Exception as err:
            self.metrics.model_loads.labels("challenger_failed").inc()
            logger.error(
                "no shadow scoring: cannot load the challenger %s v%s: %s: %s",
                chosen.name,
                chosen.version,
                type(err).__name__,
                err,
            )
            self.drop_challenger()
            return
        self.shadowed = chosen
        self.metrics.model_loads.labels("challenger_loaded").inc()
        self.holder.offer_challenger(model)
        logger.info("loaded challenger %s v%s; it scores in shadow", model.name, model.version)

    def drop_challenger(self) -> None:
        if self.shadowed is not None:
            logger.info("challenger v%s leaves the shadow", self.shadowed.version)
            self.shadowed = None
            self.holder.offer_challenger(None)

    def look_champion(self) -> None:
        try:
            uri = self.settings.resolved_tracking_uri()
            champion = self.loader.registered(uri, self.settings.model_name, CHAMPION_ALIAS)
        except Exception as err:  # the registry is down or refuses: serve on, look again later
            self.metrics.model_loads.labels("registry_error").inc()
            logger.error("cannot read the registry: %s: %s", type(err).__name__, err)
            return
        loaded = self.loaded
        if champion is None or (
            loaded and (champion.version, champion.sha256) == (loaded.version, loaded.sha256)
        ):
            return
        serving = self.loaded.version if self.loaded else None
        if not champion.newer_than(serving) and not champion.rollback:
            if champion.version not in self.refused:
                self.refused.add(champion.version)
                self.metrics.model_loads.labels("refused_downgrade").inc()
                logger.error(
                    "refusing %s v%s: it is older than v%s, serving, and no rollback brought it "
                    "back (`loanstream model rollback`)",
                    champion.name,
                    champion.version,
                    serving,
                )
            return
        self.load(champion)

    def load(self, chosen: RegisteredModel) -> None:
        logger.info("champion in the registry: %s v%s; loading it", chosen.name, chosen.version)
        with self.metrics.model_loading.track_inprogress(), quick_gil_switches():
            self._load(chosen)

    def _load(self, chosen: RegisteredModel) -> None:
        try:
            model = self.loader.load(chosen, self.settings.resolved_tracking_uri())
        except Exception as err:  # MLflow raises its own exception types
            self.metrics.model_loads.labels("failed").inc()
            logger.error(
                "keeping the current model: cannot load %s v%s: %s: %s",
                chosen.name,
                chosen.version,
                type(err).__name__,
                err,
            )
            return
        warm_up(model)
        self.loaded = chosen
        self.metrics.model_loads.labels("loaded").inc()
        self.holder.offer(model)
        self.metrics.model.info(
            {"name": model.name, "version": model.version, "sha256": model.sha256}
        )
        self.metrics.ready.set(1)
        logger.info("loaded %s v%s; it scores from the next batch", model.name, model.version)
