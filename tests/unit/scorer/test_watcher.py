"""The watcher's GIL hand-over: quick only while a model comes in."""

from __future__ import annotations

import sys

import pytest

from scorer.watcher import quick_gil_switches


def test_switches_are_quick_while_a_model_comes_in_and_as_before_after() -> None:
    before = sys.getswitchinterval()
    with quick_gil_switches(0.0005):
        assert sys.getswitchinterval() == pytest.approx(0.0005)
    assert sys.getswitchinterval() == before
    with pytest.raises(RuntimeError), quick_gil_switches(0.0005):
        raise RuntimeError("a failed load")
    assert sys.getswitchinterval() == before
