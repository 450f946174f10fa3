"""The backtest's progress bar: applications replayed, rows/s, and the event time reached."""

from __future__ import annotations

from datetime import UTC, datetime
from types import TracebackType

from rich.console import Console
from rich.progress import TaskID

from loanstream.progress import progress_bar


class EngineProgress:
    """One bar per policy run; ``step`` shows what the trainer does meanwhile."""

    def __init__(self, console: Console) -> None:
        self.bar = progress_bar(console)
        self.tasks: dict[str, TaskID] = {}
        self.console = console

    def __enter__(self) -> EngineProgress:
        self.bar.__enter__()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        err: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.bar.__exit__(kind, err, trace)

    def policy_update(self, policy: str, done: int, total: int, ms: int) -> None:
        task = self.tasks.get(policy)
        if task is None:
            task = self.tasks[policy] = self.bar.add_task(policy, total=total)
        reached = datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")
        self.bar.update(task, completed=done, description=f"{policy}: event time {reached}")

    def update(self, done: int, total: int, ms: int) -> None:
        self.policy_update("replay", done, total, ms)

    def step(self, text: str) -> None:
        self.console.print(f"[dim]trainer: {text}[/]")
