"""Waiting on another thread or process, where no event or flush can say when it is done: poll a condition until
a deadline. The one place the suite polls; everything in-process calls the flush it waits for instead."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_until(check: Callable[[], T], timeout: float = 30.0, what: str = "the condition",
               interval: float = 0.05) -> T:
    """`check()`'s first truthy value; AssertionError naming `what` once `timeout` seconds pass without one."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
