"""A clock the test moves, for components that take `clock=` (job leases, rate-limit windows)."""

from __future__ import annotations


class Clock:
    """Seconds since the epoch, like time.time, that move only when the test says so."""

    def __init__(self, now: float = 1_699_999_990.0) -> None:  # 10 s into a minute: a window has 50 s left
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
