"""The throttle on the Kafka libraries' logs: repeats held back, then counted."""

from __future__ import annotations

import logging

import pytest

from loanstream.logs import Throttle, throttle_library_logs


def test_the_libraries_repeated_errors_are_held_back_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    child = logging.getLogger("aiokafka.conn")  # records are logged to children like this one
    throttle = throttle_library_logs(every_s=3600)
    try:
        with caplog.at_level(logging.ERROR, logger="aiokafka"):
            for attempt in range(1000):
                child.error("Unable connect to node with id %s: attempt %d", 1, attempt)
            child.error("another complaint")
        shown = [r.getMessage() for r in caplog.records]
        assert shown == ["Unable connect to node with id 1: attempt 0", "another complaint"]
    finally:
        for name in [*logging.Logger.manager.loggerDict, "aiokafka", "faust", "mode"]:
            logging.getLogger(name).removeFilter(throttle)


def test_a_record_let_through_again_says_how_many_were_held_back() -> None:
    times = iter([0.0, 5.0, 9.0, 30.0, 31.0])
    throttle = Throttle(every_s=20.0, clock=lambda: next(times))

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("faust", logging.WARNING, "", 0, msg, None, None)

    passed = [throttle.filter(r) for r in (record("slow"), record("slow"), record("other"))]
    assert passed == [True, False, True]  # another template is not held back
    again = record("slow")
    assert throttle.filter(again)
    assert again.getMessage() == "slow [1 alike held back in the last 30 s]"
    assert not throttle.filter(record("slow"))


def test_messages_formatted_before_logging_do_not_pile_up() -> None:
    """Each distinct message is a template of its own: once past ``every_s`` they are dropped."""
    now = [0.0]
    throttle = Throttle(every_s=10.0, clock=lambda: now[0], max_templates=100)
    for i in range(10_000):
        now[0] = i * 0.1  # 100 new messages every 10 s
        record = logging.LogRecord(
            "faust", logging.WARNING, "", 0, f"seek failed at {i}", None, None
        )
        assert throttle.filter(record)
    assert len(throttle._seen) <= throttle.max_templates + 1
    repeated = logging.LogRecord("faust", logging.WARNING, "", 0, "seek failed at 9999", None, None)
    assert not throttle.filter(repeated)  # what is recent is still held back
