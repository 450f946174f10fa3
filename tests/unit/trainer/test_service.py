"""The retrain service cannot be crashed by what it reads: without a broker, each failure is a
dead letter with its reason, and a registry that cannot answer promotes nothing."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry

import trainer.service
from loanstream.config import KafkaSettings
from loanstream.contracts import DeadLetter, ModelUpdate, RetrainRequest, RetrainResult
from loanstream.errors import DeliveryError, InvalidRecord
from loanstream.spec import load_spec
from tests.trainer_data import history
from trainer.metrics import TrainerMetrics
from trainer.registry import RegisteredVersion, Registry, RegistryError
from trainer.service import Received, RetrainService
from trainer.settings import TrainerSettings

T = datetime(2026, 3, 1, tzinfo=UTC)
RESULTS: list[RetrainResult] = []  # what services built here publish on loan.retrain-results


class Message:
    """What the service reads of a confluent-kafka message."""

    def __init__(self, value: bytes, offset: int = 0, timestamp_ms: int = 10**13) -> None:
        self._value, self._offset, self._timestamp = value, offset, timestamp_ms

    def value(self) -> bytes:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return (1, self._timestamp)

    def topic(self) -> str:
        return "loan.retrain-requests"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return b"m"


class FailingRegistry(Registry):
    """A registry whose champion cannot be read, as with a locked database."""

    def __init__(self, settings: TrainerSettings) -> None:
        super().__init__(settings)
        self.asked = 0

    def champion(self) -> RegisteredVersion | None:
        self.asked += 1
        raise RegistryError("cannot read the champion: database is locked")


class KnownRegistry(Registry):
    def __init__(self, settings: TrainerSettings, champion: RegisteredVersion | None) -> None:
        super().__init__(settings)
        self._champion = champion

    def champion(self) -> RegisteredVersion | None:
        return self._champion


def build(
    tmp_path: Path, registry: type[Registry] | None = None, **settings: Any
) -> tuple[RetrainService, list[DeadLetter], list[ModelUpdate], CollectorRegistry]:
    config = TrainerSettings(data_dir=tmp_path, **settings)
    letters: list[DeadLetter] = []
    published: list[ModelUpdate] = []
    metrics = CollectorRegistry()
    service = RetrainService(
        KafkaSettings(),
        load_spec(),
        config,
        (registry or Registry)(config),
        TrainerMetrics(metrics),
        published.append,
        letters=lambda key, letter: letters.append(letter),
        results=RESULTS.append,
    )
    return service, letters, published, metrics


def request(**fields: Any) -> bytes:
    values: dict[str, Any] = {
        "request_id": "r1",
        "model_name": "loan-repayment",
        "reason": "drift",
        "requested_by": "test",
        "window_start": T.isoformat(),
        **fields,
    }
    return orjson.dumps(values)


def test_requests_it_will_not_train_on_are_dead_lettered_with_their_reason(
    tmp_path: Path,
) -> None:
    service, letters, _, metrics = build(tmp_path, max_request_bytes=4096)
    far = datetime(9999, 12, 31, tzinfo=UTC).isoformat()
    batch = [
        Message(request(model_name="another"), offset=1),
        Message(request(window_end=(T - timedelta(days=1)).isoformat()), offset=2),
        Message(request(window_start="1926-03-01T00:00:00Z", window_end=T.isoformat()), 3),
        Message(request(window_start=far), offset=4),
        Message(b"{}", offset=5),
        Message(request(reason="x" * 5000), offset=6),
        Message(request(), offset=7),
    ]
    taken = service.parse(batch)  # type: ignore[arg-type]
    assert [r.request.request_id for r in taken] == ["r1"]
    assert [(d.offset, d.reason) for d in letters] == [
        (1, "other_model"),
        (2, "inverted_window"),
        (3, "window_too_long"),
        (4, "future_window"),
        (5, "invalid"),
        (6, "oversize"),
    ]
    assert letters[0].error.startswith("model_name must be 'loan-repayment'")
    assert letters[5].error == "a retrain request must be at most 4096 bytes"  # no values
    assert letters[4].field_paths == ["request_id", "model_name", "reason", "requested_by"]
    assert {d.source_topic for d in letters} == {"loan.retrain-requests"}
    assert {d.service for d in letters} == {"trainer"}
    sample = metrics.get_sample_value
    assert sample("loanstream_trainer_requests_total", {"outcome": "refused"}) == 4
    assert sample("loanstream_trainer_requests_total", {"outcome": "invalid"}) == 2
    assert (
        sample(
            "loanstream_trainer_dead_letters_total",
            {"source": "loan.retrain-requests", "reason": "window_too_long"},
        )
        == 1
    )


def received(offset: int = 7) -> list[Received]:
    value = request()
    return [Received(RetrainRequest.from_json(value), Message(value, offset))]  # type: ignore[arg-type]


def test_a_registry_that_cannot_answer_is_tried_again_then_its_requests_are_dead_lettered(
    tmp_path: Path,
) -> None:
    service, letters, published, metrics = build(
        tmp_path, FailingRegistry, registry_attempts=3, registry_retry_s=0, min_rows=300
    )
    frame, _ = history(1500, seed=4)
    service.window_frame = lambda window: frame  # type: ignore[method-assign]
    assert service.handle(received()) is None
    assert service.registry.asked == 3  # type: ignore[attr-defined]
    assert published == []  # nothing promoted, nothing announced
    assert [(d.offset, d.reason, d.error) for d in letters] == [
        (7, "registry_unavailable", "cannot read the champion: database is locked")
    ]
    sample = metrics.get_sample_value
    assert sample("loanstream_trainer_retrains_total", {"result": "failed"}) == 3
    assert sample("loanstream_trainer_requests_total", {"outcome": "failed"}) == 1
    assert not (tmp_path / "mlflow.db").exists()  # the round stopped before registering


def test_a_stop_while_waiting_to_retry_leaves_the_requests_to_be_read_again(
    tmp_path: Path,
) -> None:
    service, letters, _, _ = build(
        tmp_path, FailingRegistry, registry_attempts=3, registry_retry_s=60, min_rows=300
    )
    frame, _ = history(1500, seed=4)
    service.window_frame = lambda window: frame  # type: ignore[method-assign]
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    assert service.handle(received(), stop) is None
    assert letters == [] and service.registry.asked == 1  # type: ignore[attr-defined]


def test_a_round_that_fails_dead_letters_its_requests_and_the_service_goes_on(
    tmp_path: Path,
) -> None:
    service, letters, _, metrics = build(tmp_path, min_rows=300, wait_for_rows_s=0)
    frame, _ = history(200, seed=4)
    service.window_frame = lambda window: frame  # type: ignore[method-assign]
    assert service.handle(received(offset=11)) is None
    assert [(d.offset, d.reason) for d in letters] == [(11, "round_failed")]
    assert "at least 300 labelled rows" in letters[0].error
    assert metrics.get_sample_value("loanstream_trainer_retrains_total", {"result": "failed"}) == 1

    def broken(window: object) -> pd.DataFrame:
        raise KeyError("application_id")

    service.window_frame = broken  # type: ignore[method-assign]
    assert service.handle(received(offset=12)) is None
    assert [(d.offset, d.reason, d.error) for d in letters[1:]] == [
        (12, "round_failed", "KeyError: 'application_id'")
    ]


def test_an_invalid_labelled_record_is_dead_lettered_once_however_often_it_is_read(
    tmp_path: Path,
) -> None:
    service, letters, _, metrics = build(tmp_path)
    error = InvalidRecord(["application_id is required but missing"], "missing_field")
    for _ in range(3):
        service.labelled_invalid(b"a-1", b"{}", error)
    service.labelled_invalid(b"a-2", b"{}", error)
    assert [(d.source_topic, d.partition, d.key(), d.reason, d.error) for d in letters] == [
        ("loan.labelled", -1, b"a-1", "missing_field", "application_id is required but missing"),
        ("loan.labelled", -1, b"a-2", "missing_field", "application_id is required but missing"),
    ]
    assert letters[0].value() is None and letters[0].value_bytes == 2  # no raw values
    assert (
        metrics.get_sample_value(
            "loanstream_trainer_dead_letters_total",
            {"source": "loan.labelled", "reason": "missing_field"},
        )
        == 2
    )


CHAMPION = RegisteredVersion("loan-repayment", "2", "run-2", "b" * 64, {"auc": 0.8})


@pytest.mark.parametrize(
    ("champion", "last", "announced"),
    [
        (CHAMPION, RegisteredVersion("loan-repayment", "1", "run-1", "a" * 64, {}).update(), "2"),
        (CHAMPION, None, "2"),
        (CHAMPION, CHAMPION.update(), None),
        (None, None, None),
    ],
)
def test_at_start_the_registry_champion_is_announced_when_the_topic_says_otherwise(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    champion: RegisteredVersion | None,
    last: ModelUpdate | None,
    announced: str | None,
) -> None:
    service, _, published, metrics = build(tmp_path)
    service.registry = KnownRegistry(service.settings, champion)
    monkeypatch.setattr(trainer.service, "last_update", lambda kafka, name: last)
    service.reconcile()
    assert [u.version for u in published] == ([announced] if announced else [])
    expected = float(champion.version) if champion else 0.0
    assert metrics.get_sample_value("loanstream_trainer_champion_version") == expected


def test_reconciling_with_a_registry_or_broker_down_is_logged_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service, _, published, _ = build(tmp_path, FailingRegistry)
    assert service.reconcile() is None
    service.registry = KnownRegistry(service.settings, CHAMPION)

    def unreadable(kafka: KafkaSettings, name: str) -> ModelUpdate | None:
        raise DeliveryError("reading loan.model-updates did not finish within 30 s")

    monkeypatch.setattr(trainer.service, "last_update", unreadable)
    assert service.reconcile() is None and published == []


def test_a_promotion_whose_update_cannot_be_published_still_stands(tmp_path: Path) -> None:
    service, _, _, _ = build(tmp_path)

    def down(update: ModelUpdate) -> None:
        raise DeliveryError("1 messages failed")

    service.publisher = down
    service.announce(CHAMPION.update())  # logged, not raised
