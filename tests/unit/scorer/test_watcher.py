"""The watcher: its GIL hand-over is quick only while a model comes in, and its loading gauge."""

from __future__ import annotations

import sys

import pytest
from prometheus_client import CollectorRegistry

from loanstream.config import KafkaSettings
from loanstream.contracts import ModelUpdate
from loanstream.errors import LoanStreamError
from loanstream.models import LoadedModel
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

    def load(self, update: ModelUpdate, tracking_uri: str) -> LoadedModel:
        self.gauge_while_loading = self.metrics.model_loading._value.get()
        if self.error is not None:
            raise self.error
        assert self.model is not None
        return self.model


def update(version: str, sha: str) -> ModelUpdate:
    return ModelUpdate(
        model_name="loan-repayment",
        version=version,
        run_id="r",
        model_uri="models:/loan-repayment/" + version,
        sha256=sha * 64,
    )


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
