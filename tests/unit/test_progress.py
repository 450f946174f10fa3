"""The demo's and backtest's live view: when a run is quiet, and which services it asks."""

from __future__ import annotations

from loanstream.kafka.broker import free_port
from loop.demo import Progress

SCORED = ("loanstream_scorer_applications_total", (("model_version", "1"),))


def look(view: Progress, seconds: float, scored: float) -> None:
    view.samples["scorer"] = {SCORED: scored}
    view.update(seconds, skip={"scorer"})


def test_a_run_is_quiet_once_nothing_moved_for_five_seconds_of_looks() -> None:
    view = Progress({"scorer": free_port()})  # nothing listens: it must not be asked
    assert not view.settled()
    for t in (0.0, 0.25, 0.5):
        look(view, t, 10)
    assert not view.settled()  # not five seconds of looks yet
    for i in range(1, 21):
        look(view, 0.5 + i * 0.25, 10)
    assert view.settled()  # 5.5 s without change
    look(view, 6.0, 11)
    assert not view.settled()
    for i in range(1, 20):
        look(view, 6.0 + i * 0.25, 11)
    assert not view.settled()  # 4.75 s since the change
    look(view, 11.0, 11)
    assert view.settled() and view.history[0][0] >= 1.0  # ten seconds kept
    assert view.scored() == 11  # the held scorer kept its figures


def test_a_service_that_does_not_answer_keeps_its_last_figures() -> None:
    view = Progress({"scorer": free_port()})
    view.samples["scorer"] = {SCORED: 7}
    view.update(0.0)  # asked, no answer
    assert view.scored() == 7
