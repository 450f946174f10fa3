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
