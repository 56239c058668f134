"""Prometheus metrics: the families one process exports, pre-resolved per label set, and the scrape."""

from .metrics import Metrics

__all__ = ["Metrics"]
