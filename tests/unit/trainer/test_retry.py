"""The trainer's side of the retry policy, without a broker: which requests a round covers and
which follow-ups it sends."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from loanstream.config import KafkaSettings
from loanstream.contracts import RetrainRequest
from loanstream.retraining import RETRY_BY
from loanstream.spec import load_spec
from trainer.metrics import TrainerMetrics
from trainer.registry import Registry
from trainer.service import RetrainService
from trainer.settings import TrainerSettings

T = datetime(2026, 3, 1, tzinfo=UTC)


class Message:
    """What the service reads of a confluent-kafka message."""

    def __init__(self, request: RetrainRequest, timestamp_ms: int) -> None:
        self._value, self._timestamp = request.to_json(), timestamp_ms

    def value(self) -> bytes:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return (1, self._timestamp)

    def topic(self) -> str:
        return "loan.retrain-requests"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 0

    def key(self) -> bytes:
        return b"m"


def service(tmp_path: Path, **settings: Any) -> RetrainService:
    trainer = TrainerSettings(data_dir=tmp_path, **settings)
    return RetrainService(
        KafkaSettings(),
        load_spec(),
        trainer,
        Registry(trainer),
        TrainerMetrics(CollectorRegistry()),
        lambda update: None,
        results=lambda result: None,
    )


def request(attempt: int = 1, **fields: Any) -> RetrainRequest:
    return RetrainRequest(
        request_id="retrain-drift-1" + (f"-attempt-{attempt}" if attempt > 1 else ""),
        model_name="loan-repayment",
        reason="concept drift",
        requested_by="monitor" if attempt == 1 else RETRY_BY,
        window_start=T,
        drift_event_id="drift-1",
        drift_confirmed_at=datetime(2026, 3, 3, tzinfo=UTC),
        attempt=attempt,
        requested_at=T,
        **fields,
    )


def test_a_round_covers_the_requests_sent_during_it_but_never_its_own_follow_up(
    tmp_path: Path,
) -> None:
    trainer = service(tmp_path)
    trainer.last_round_end_ms = 1_000
    read = trainer.parse(
        [Message(request(), 1_000), Message(request(attempt=2), 1_000), Message(request(), 1_001)]
    )
    assert [(r.request.attempt, r.request.request_id) for r in read] == [
        (2, "retrain-drift-1-attempt-2"),
        (1, "retrain-drift-1"),
    ]


def test_a_lost_round_asks_again_once_per_drift_until_the_attempts_are_spent(
    tmp_path: Path,
) -> None:
    trainer = service(tmp_path, retry_attempts=2, min_rows=700)
    other = request().model_copy(update={"request_id": "r2", "drift_event_id": "drift-2"})
    (one, two) = trainer.follow_ups([request(), request(), other], promoted=False, rows_used=3000)
    assert (one.drift_event_id, two.drift_event_id) == ("drift-1", "drift-2")
    assert one.attempt == 2 and one.window_start == datetime(2026, 3, 3, tzinfo=UTC)
    assert one.min_rows == 3000 and one.requested_by == RETRY_BY
    assert trainer.follow_ups([one], promoted=False, rows_used=3000) == []  # two rounds in all
    assert trainer.follow_ups([request()], promoted=True, rows_used=3000) == []
    no_drift = request().model_copy(update={"drift_event_id": None})
    assert trainer.follow_ups([no_drift], promoted=False, rows_used=3000) == []


def test_the_drill_makes_only_the_first_rounds_lose(tmp_path: Path) -> None:
    trainer = service(tmp_path, drill_losing_rounds=2)
    assert [trainer.drilled() for _ in range(4)] == [True, True, False, False]
