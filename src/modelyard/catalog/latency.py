"""What the router measures of each model and task: a bounded, in-memory window of recent call timings."""

from __future__ import annotations

import math
import time
from array import array
from typing import Any

from ..types import Task

WINDOW_SECONDS = 3600.0
# Samples kept per (model, task). Past this many calls in the window, the profile covers the latest ones only;
# `samples` in the profile says how many it read.
CAPACITY = 2048
_NONE = math.nan  # a call with no first byte of its own (a whole answer): counts in total, not in ttfb


class LatencyWindow:
    """A ring buffer of (finished at, time to first byte, total seconds), preallocated: recording a call writes three
    floats in place and allocates nothing."""

    __slots__ = ("_at", "_ttfb", "_total", "_next", "_count")

    def __init__(self, capacity: int = CAPACITY) -> None:
        self._at = array("d", bytes(8 * capacity))
        self._ttfb = array("d", bytes(8 * capacity))
        self._total = array("d", bytes(8 * capacity))
        self._next = 0
        self._count = 0

    def record(self, at: float, ttfb: float | None, total: float) -> None:
        i = self._next
        self._at[i] = at
        self._ttfb[i] = _NONE if ttfb is None else ttfb
        self._total[i] = total
        self._next = (i + 1) % len(self._at)
        if self._count < len(self._at):
            self._count += 1

    def profile(self, now: float, window: float = WINDOW_SECONDS) -> dict[str, Any] | None:
        """p50/p95 of the calls that finished within `window` seconds of `now` (None when there are none)."""
        since = now - window
        ttfb: list[float] = []
        total: list[float] = []
        for i in range(self._count):
            if self._at[i] >= since:
                total.append(self._total[i])
                if not math.isnan(self._ttfb[i]):
                    ttfb.append(self._ttfb[i])
        if not total:
            return None
        return {"samples": len(total), "ttfb_ms": _percentiles(ttfb), "total_ms": _percentiles(total)}


def _percentiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    values.sort()
    return {"p50": _rank(values, 0.50), "p95": _rank(values, 0.95)}


def _rank(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile, in milliseconds to the microsecond: a value that was observed, never interpolated."""
    return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000, 3)


class LatencyBook:
    """Every (model, task)'s window, made on its first call. Lives in the router, in memory, per process."""

    __slots__ = ("_windows", "capacity")

    def __init__(self, capacity: int = CAPACITY) -> None:
        self._windows: dict[tuple[str, Task], LatencyWindow] = {}
        self.capacity = capacity

    def record(self, model_id: str, task: Task, started: float, first: float | None, ended: float) -> None:
        """A call that succeeded: `started`, its first byte (None: it was answered whole) and its end, all
        `time.monotonic()` readings."""
        window = self._windows.get((model_id, task))
        if window is None:
            window = self._windows[(model_id, task)] = LatencyWindow(self.capacity)
        window.record(ended, None if first is None else first - started, ended - started)

    def profile(self, model_id: str, task: Task, window: float = WINDOW_SECONDS) -> dict[str, Any] | None:
        found = self._windows.get((model_id, task))
        return found.profile(time.monotonic(), window) if found is not None else None
