"""Running the whole system: the event-time engine and backtests on it, the demo, and local
supervision (``up``/``down``/``ps``). It may import every service; no service imports it.

``run_backtest`` is the notebook entry point (imported on first use: it brings scikit-learn,
River and MLflow with it).
"""

from __future__ import annotations

from typing import Any

__all__ = ["BacktestOptions", "BacktestResult", "run_backtest", "run_policies"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from loop import backtest

        return getattr(backtest, name)
    raise AttributeError(f"module 'loop' has no attribute {name!r}")
