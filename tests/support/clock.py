"""A clock the test moves, for components that take `clock=` (job leases, rate-limit windows)."""

from __future__ import annotations


class Clock:
    """Seconds since the epoch, like time.time, that move when the test says so (`advance`), plus `tick` seconds
    per reading: real timestamps are never equal, and code may rely on that (the job queue orders by them)."""

    def __init__(self, now: float = 1_699_999_990.0, tick: float = 0.0) -> None:  # 10 s into a minute
        self.now = now
        self.tick = tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
