"""The latency window: observed timings only, bounded, and only the last hour's."""

from __future__ import annotations

import time

from modelyard.catalog.latency import LatencyBook, LatencyWindow
from modelyard.types import Task


def test_no_calls_no_profile() -> None:
    assert LatencyWindow(8).profile(now=100.0) is None
    assert LatencyBook().profile("m", Task.CHAT) is None


def test_percentiles_are_observed_values() -> None:
    w = LatencyWindow(64)
    for i in range(1, 21):  # 20 calls of 10..200 ms, the streamed ones (even) with a first byte at half
        w.record(at=1000.0 + i, ttfb=i / 200 if i % 2 == 0 else None, total=i / 100)
    p = w.profile(now=1030.0)
    assert p is not None and p["samples"] == 20
    assert p["total_ms"] == {"p50": 100.0, "p95": 190.0}
    assert p["ttfb_ms"] == {"p50": 50.0, "p95": 100.0}  # streams only: 10 samples of 10..100 ms


def test_whole_answers_alone_have_no_first_byte_profile() -> None:
    w = LatencyWindow(4)
    w.record(at=1.0, ttfb=None, total=0.5)
    assert w.profile(now=2.0) == {"samples": 1, "ttfb_ms": None, "total_ms": {"p50": 500.0, "p95": 500.0}}


def test_the_window_forgets_what_is_older_than_an_hour_and_holds_at_most_its_capacity() -> None:
    w = LatencyWindow(4)
    w.record(at=0.0, ttfb=None, total=9.0)
    for i in range(3):
        w.record(at=4000.0 + i, ttfb=None, total=1.0)
    p = w.profile(now=4000.0 + 3)
    assert p is not None and p["samples"] == 3 and p["total_ms"]["p95"] == 1000.0  # the old 9 s call is past the hour
    for i in range(10):
        w.record(at=5000.0 + i, ttfb=None, total=2.0)
    p = w.profile(now=5010.0)
    assert p is not None and p["samples"] == 4 and p["total_ms"]["p50"] == 2000.0


def test_the_book_keeps_one_window_per_model_and_task() -> None:
    book = LatencyBook(capacity=8)
    start = time.monotonic()
    book.record("m", Task.CHAT, start, start + 0.01, start + 0.02)
    assert book.profile("m", Task.COMPLETION) is None and book.profile("other", Task.CHAT) is None
    p = book.profile("m", Task.CHAT)
    assert p is not None and p["samples"] == 1 and p["ttfb_ms"]["p50"] <= p["total_ms"]["p50"]
