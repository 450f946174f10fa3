"""The watcher: its GIL hand-over is quick only while a model comes in, and its loading gauge."""

from __future__ import annotations

import sys

import pytest
from prometheus_client import CollectorRegistry

from loanstream.config import KafkaSettings
from loanstream.contracts import ModelUpdate
from loanstream.errors import LoanStreamError
from loanstream.models import CHAMPION_ALIAS, LoadedModel, RegisteredModel, registered
from loanstream.signing import sign_update
from scorer.holder import ModelHolder
from scorer.metrics import ScorerMetrics
from scorer.settings import ScorerSettings
from scorer.watcher import ModelWatcher, quick_gil_switches
from tests.scorer_model import small_model


def test_switches_are_quick_while_a_model_comes_in_and_as_before_after() -> None:
    before = sys.getswitchinterval()
    with quick_gil_switches(0.0005):
        assert sys.getswitchinterval() == pytest.approx(0.0005)
    assert sys.getswitchinterval() == before
    with pytest.raises(RuntimeError), quick_gil_switches(0.0005):
        raise RuntimeError("a failed load")
    assert sys.getswitchinterval() == before


class RecordingLoader:
    """Stands in for the loader process: returns ``model`` (or raises ``error``) and notes what
    the loading gauge said meanwhile."""

    def __init__(self, metrics: ScorerMetrics, model: LoadedModel | None, error: Exception | None):
        self.metrics, self.model, self.error = metrics, model, error
        self.gauge_while_loading: float | None = None

    def load(self, chosen: RegisteredModel, tracking_uri: str) -> LoadedModel:
        self.gauge_while_loading = self.metrics.model_loading._value.get()
        if self.error is not None:
            raise self.error
        assert self.model is not None
        return self.model


def update(version: str, sha: str) -> RegisteredModel:
    return RegisteredModel("loan-repayment", version, sha * 64)


@pytest.mark.parametrize("fails", [False, True])
def test_the_loading_gauge_is_up_only_while_a_model_comes_in(fails: bool) -> None:
    # The backtest's hold reads it to know that the scorer has seen a promotion.
    metrics, holder = ScorerMetrics(CollectorRegistry()), ModelHolder()
    watcher = ModelWatcher(KafkaSettings(), ScorerSettings(), holder, metrics)
    model = small_model("2")
    loader = RecordingLoader(metrics, model, LoanStreamError("sha256 mismatch") if fails else None)
    watcher.loader = loader  # type: ignore[assignment]
    assert metrics.model_loading._value.get() == 0
    watcher.load(update("2", "a"))
    assert loader.gauge_while_loading == 1
    assert metrics.model_loading._value.get() == 0
    result = "failed" if fails else "loaded"
    assert metrics.model_loads.labels(result)._value.get() == 1
    assert (holder.current is None) == fails


class Registry:
    """Stands in for MlflowClient: the champion alias and each version's tags."""

    def __init__(self) -> None:
        self.champion: str | None = None
        self.challenger: str | None = None
        self.tags: dict[str, dict[str, str]] = {}
        self.error: Exception | None = None

    def get_model_version_by_alias(self, name: str, alias: str) -> object:
        if self.error is not None:
            raise self.error
        assert self.champion is not None
        return self.get_model_version(name, self.champion)

    def get_model_version(self, name: str, version: str) -> object:
        class Found:
            pass

        found = Found()
        found.version, found.tags = version, self.tags[version]  # type: ignore[attr-defined]
        return found


def watching(registry: Registry) -> tuple[ModelWatcher, list[str], ScorerMetrics]:
    metrics, loaded = ScorerMetrics(CollectorRegistry()), []

    class Loader:
        def load(self, chosen: RegisteredModel, tracking_uri: str) -> LoadedModel:
            loaded.append(chosen.version)
            return small_model(chosen.version)

        def registered(self, tracking_uri: str, name: str, alias: str) -> RegisteredModel | None:
            if alias == CHAMPION_ALIAS:
                return registered(registry, name)
            if registry.challenger is None:
                return None
            return registered(registry, name, registry.challenger)

    watcher = ModelWatcher(KafkaSettings(), ScorerSettings(), ModelHolder(), metrics)
    watcher.loader = Loader()  # type: ignore[assignment]
    return watcher, loaded, metrics


def test_the_registry_champion_serves_and_an_older_one_only_after_a_rollback() -> None:
    registry = Registry()
    registry.tags = {v: {"sha256": v * 64} for v in ("1", "2", "3")}
    watcher, loaded, metrics = watching(registry)
    registry.champion = "2"
    watcher.look()
    watcher.look()  # the same champion: nothing to do
    assert loaded == ["2"] and metrics.ready._value.get() == 1
    assert metrics.model._value["version"] == "2"  # the model-info metric follows at once
    registry.champion = "1"  # moved back by hand, or a forged store: refused, once logged
    watcher.look()
    watcher.look()
    assert loaded == ["2"]
    assert metrics.model_loads.labels("refused_downgrade")._value.get() == 1
    registry.tags["1"]["promoted_by"] = "rollback"  # `loanstream model rollback`
    watcher.look()
    registry.champion = "3"
    watcher.look()
    assert loaded == ["2", "1", "3"]


def test_a_registry_that_fails_keeps_the_model_serving_and_is_counted() -> None:
    registry = Registry()
    registry.tags = {"1": {"sha256": "1" * 64}, "2": {}}
    watcher, loaded, metrics = watching(registry)
    registry.champion = "1"
    watcher.look()
    registry.error = RuntimeError("database is locked")
    watcher.look()
    registry.error, registry.champion = None, "2"  # no sha256 recorded: never loaded
    watcher.look()
    assert loaded == ["1"] and watcher.holder.current is not None
    assert metrics.model_loads.labels("registry_error")._value.get() == 2


def test_only_signed_updates_of_its_own_model_prompt_a_look_when_a_key_is_set() -> None:
    settings = KafkaSettings(model_update_key="s3cret")
    metrics = ScorerMetrics(CollectorRegistry())
    watcher = ModelWatcher(settings, ScorerSettings(), ModelHolder(), metrics)
    mine = ModelUpdate(
        model_name="loan-repayment",
        version="9",
        run_id="r",
        model_uri="file:///etc",
        sha256="0" * 64,
    )
    assert watcher.prompted(sign_update(mine, "s3cret").to_json())
    assert not watcher.prompted(mine.to_json())
    assert not watcher.prompted(sign_update(mine, "guess").to_json())
    other = mine.model_copy(update={"model_name": "other"})
    assert not watcher.prompted(sign_update(other, "s3cret").to_json())
    assert not watcher.prompted(b"{}")
    assert metrics.model_loads.labels("unsigned_update")._value.get() == 2


def test_a_watcher_that_dies_ends_the_scorer() -> None:
    ended = []
    bad = KafkaSettings(bootstrap_servers="127.0.0.1:1")
    watcher = ModelWatcher(
        bad,
        ScorerSettings(),
        ModelHolder(),
        ScorerMetrics(CollectorRegistry()),
        on_death=lambda: ended.append(True),
    )

    def broken() -> None:
        raise RuntimeError("consumer gone")

    watcher._follow = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        watcher.run()
    assert ended == [True]


def test_the_registry_challenger_is_offered_for_shadow_scoring_and_withdrawn() -> None:
    registry = Registry()
    registry.tags = {v: {"sha256": v * 64} for v in ("1", "2", "3")}
    watcher, loaded, metrics = watching(registry)
    registry.champion, registry.challenger = "1", "2"
    watcher.look()
    watcher.look()  # the same challenger: loaded once
    assert loaded == ["1", "2"]
    taken = watcher.holder.take()
    assert taken.model.version == "1" and taken.challenger.version == "2"  # type: ignore[union-attr]
    assert metrics.model_loads.labels("challenger_loaded")._value.get() == 1
    registry.challenger = "3"  # another challenger replaces it
    watcher.look()
    assert watcher.holder.take().challenger.version == "3"  # type: ignore[union-attr]
    registry.champion = "3"  # promoted: the alias naming the champion means no shadow
    watcher.look()
    taken = watcher.holder.take()
    assert taken.model.version == "3" and taken.challenger is None  # type: ignore[union-attr]
    registry.champion, registry.challenger = "3", "2"
    registry.tags["2"] = {}  # no sha256 recorded: never loaded, no shadow
    watcher.look()
    assert watcher.holder.take().challenger is None and loaded == ["1", "2", "3", "3"]
    registry.challenger = None
    watcher.look()
    assert watcher.holder.take().challenger is None


def test_no_challenger_is_looked_for_when_shadow_scoring_is_off() -> None:
    registry = Registry()
    registry.tags = {v: {"sha256": v * 64} for v in ("1", "2")}
    watcher, loaded, _ = watching(registry)
    watcher.settings = ScorerSettings(shadow=False)
    registry.champion, registry.challenger = "1", "2"
    watcher.look()
    assert loaded == ["1"] and watcher.holder.take().challenger is None
