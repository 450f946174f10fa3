"""Consumer lag: the arithmetic on offsets and watermarks, and a watcher that never raises."""

from __future__ import annotations

import logging
import time

import pytest
from prometheus_client import CollectorRegistry

from loanstream.config import KafkaSettings
from loanstream.kafka.broker import free_port
from loanstream.lag import (
    BrokerOffsets,
    LagMetrics,
    LagSettings,
    LagWatcher,
    PartitionOffsets,
    lag_by_topic,
)

GROUP = "g"


def lag(registry: CollectorRegistry, topic: str) -> float | None:
    return registry.get_sample_value("loanstream_consumer_lag", {"group": GROUP, "topic": topic})


def errors(registry: CollectorRegistry) -> float | None:
    return registry.get_sample_value("loanstream_consumer_lag_errors_total", {"group": GROUP})


class Scripted:
    """An offset reader that answers from a script: a list of offsets, or an exception."""

    def __init__(self, *answers: list[PartitionOffsets] | Exception) -> None:
        self.answers = list(answers)

    def read(self) -> list[PartitionOffsets]:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.mark.parametrize(
    ("low", "high", "committed", "expected"),
    [
        (0, 0, None, 0),  # empty, never read
        (0, 10, None, 10),  # never committed: everything is still to read
        (4, 10, None, 6),  # ... from the low watermark
        (0, 10, 0, 10),
        (0, 10, 7, 3),
        (0, 10, 10, 0),  # caught up
        (6, 10, 2, 4),  # retention deleted past the commit: resumes at the low watermark
        (0, 10, 12, 0),  # a commit past the end (a truncated partition) is no negative lag
    ],
)
def test_partition_lag(low: int, high: int, committed: int | None, expected: int) -> None:
    assert PartitionOffsets("t", 0, low, high, committed).lag == expected


def test_lag_sums_partitions_per_topic() -> None:
    offsets = [
        PartitionOffsets("apps", 0, 0, 100, 40),
        PartitionOffsets("apps", 1, 10, 50, None),
        PartitionOffsets("apps", 2, 0, 30, 30),
        PartitionOffsets("outcomes", 0, 0, 9, 1),
    ]
    assert lag_by_topic(offsets) == {"apps": 60 + 40 + 0, "outcomes": 8}
    assert lag_by_topic([]) == {}


def test_a_failed_reading_keeps_the_last_values_and_counts_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = CollectorRegistry()
    reader = Scripted(
        [PartitionOffsets("apps", 0, 0, 10, 3)],
        TimeoutError("no answer"),
        RuntimeError("still none"),
        [PartitionOffsets("apps", 0, 0, 12, 12)],
    )
    watcher = LagWatcher(GROUP, reader, LagMetrics(registry), interval_s=60)
    assert watcher.refresh()
    assert lag(registry, "apps") == 7
    with caplog.at_level(logging.DEBUG, logger="loanstream.lag"):
        assert not watcher.refresh()
        assert not watcher.refresh()
    assert lag(registry, "apps") == 7
    assert errors(registry) == 2
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "no answer" in warned[0].getMessage()  # once per run of failures
    assert watcher.refresh()
    assert lag(registry, "apps") == 0
    assert watcher.failures == 0


def test_seconds_since_update_grows_until_a_reading_succeeds() -> None:
    registry = CollectorRegistry()
    watcher = LagWatcher(GROUP, Scripted(OSError("down")), LagMetrics(registry), interval_s=60)
    watcher.start()
    try:
        deadline = time.monotonic() + 5
        while errors(registry) != 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert errors(registry) == 1
        first = registry.get_sample_value(
            "loanstream_consumer_lag_seconds_since_update", {"group": GROUP}
        )
        time.sleep(0.05)
        later = registry.get_sample_value(
            "loanstream_consumer_lag_seconds_since_update", {"group": GROUP}
        )
        assert first is not None and later is not None and later > first
        watcher.reader = Scripted([PartitionOffsets("apps", 0, 0, 5, None)])
        assert watcher.refresh()
        assert watcher.seconds_since_update() < later
    finally:
        watcher.stop()
    assert watcher._thread is not None and not watcher._thread.is_alive()


def test_a_broker_that_is_not_there_is_an_error_not_an_exception() -> None:
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}")
    registry = CollectorRegistry()
    reader = BrokerOffsets(kafka, GROUP, ["loan.applications"], timeout=0.5)
    watcher = LagWatcher(GROUP, reader, LagMetrics(registry), interval_s=60)
    started = time.monotonic()
    assert not watcher.refresh()
    assert time.monotonic() - started < 5
    assert errors(registry) == 1
    assert lag(registry, "loan.applications") is None


def test_settings_default_to_ten_seconds_and_refuse_nonsense() -> None:
    assert LagSettings().interval_s == 10.0
    with pytest.raises(ValueError):
        LagSettings(interval_s=0)
