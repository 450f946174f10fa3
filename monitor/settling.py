"""Waiting for labels to settle after a confirmed drift, for the label test (monitor.labeltest).

Labels arrive in label-time order, so for as long as label delays spread, the outcomes of
applications from before a drift keep arriving mixed with those from after it. A monitor that
learnt its new level from that still-tipping mix would confirm the same drift again; it waits
instead until the arriving labels are (mostly) for applications after the confirmation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class Settling:
    """The share of arriving labels older than ``watermark`` (a moving average, from 1).

    >>> s = Settling.after([10.0, 20.0, 30.0])  # event times of the confirmation's evidence
    >>> [s.settled(seconds, horizon=2, share=0.3) for seconds in (5.0, 40.0, 40.0)]
    [False, False, True]
    """

    watermark: float | None  # None: no event times known, only the minimum wait
    stale: float = 1.0

    @classmethod
    def after(cls, times: Sequence[float]) -> Settling:
        """After a confirmation whose evidence had these event times: their 90th percentile
        marks the drift's side (a quantile, so a few absurd times do not move it)."""
        return cls(float(np.quantile(times, 0.9)) if len(times) else None)

    def settled(self, seconds: float | None, horizon: int, share: float) -> bool:
        """One more label, of an application at ``seconds``: whether fewer than ``share`` of
        the recent ones (a moving average over ~``horizon``) are from before the watermark."""
        old = seconds is not None and self.watermark is not None and seconds < self.watermark
        self.stale += (old - self.stale) / horizon
        return self.stale < share
