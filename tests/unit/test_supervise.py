"""A command that started children stops them when it is sent SIGTERM, not only on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

PARENT = """
import subprocess, sys, time
from loop.supervise import stop_children_on_sigterm
if sys.argv[1] == "handled":
    stop_children_on_sigterm()
child = subprocess.Popen(["sleep", "120"])
print(child.pid, flush=True)
try:
    time.sleep(120)
finally:
    child.kill()
"""


def child_after_sigterm(mode: str) -> tuple[int, bool]:
    """(the parent's exit code, whether its child still runs 5 s after the parent ended)."""
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, mode], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    parent.send_signal(signal.SIGTERM)
    code = parent.wait(30)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if not running(child):
            return code, False
        time.sleep(0.1)
    os.kill(child, signal.SIGKILL)
    return code, True


def running(pid: int) -> bool:
    """Whether ``pid`` still runs. A killed child whose parent is gone stays a zombie until
    init reaps it, and this machine's init can take seconds under load (a CI run saw one
    outlive the 5 s here): a zombie has stopped."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_sigterm_runs_the_finally_that_stops_the_children() -> None:
    assert child_after_sigterm("handled") == (128 + signal.SIGTERM, False)


def test_without_it_sigterm_leaves_the_child_running() -> None:
    # what the handler is for: Python's default SIGTERM skips every finally
    assert child_after_sigterm("default") == (-signal.SIGTERM, True)
