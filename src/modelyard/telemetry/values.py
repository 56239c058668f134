"""Lock-free metric families for one process: plain numbers the hot path adds to, collected at the scrape.

prometheus-client's own metrics take a lock on every increment (they allow any thread), about a microsecond each;
a call touches a dozen. Everything that updates these runs on the server's event loop thread, so a plain `+=` is
safe, and a family here is a custom collector: the scrape reads the numbers into prometheus-client's metric families
and prometheus-client writes the text. Under multiprocess mode (`serve --workers N`) the values must reach
prometheus-client's per-process files: the hot path still adds to these, and `Metrics.sync` copies what changed into
mirrored prometheus-client metrics once a second and before a scrape.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any, Iterator, Sequence

from prometheus_client.metrics_core import (CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric,
                                            SummaryMetricFamily)
from prometheus_client.utils import floatToGoString


class Value:
    """A counter's or a gauge's number."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount

    def set(self, value: float) -> None:
        self.value = value


class View:
    """A counter or gauge whose number another object keeps already (the router's in-flight and outcome counts
    per deployment): read at the scrape, so the call path does not count the same thing twice."""

    __slots__ = ("_source", "_attr")

    def __init__(self, source: Any, attr: str) -> None:
        self._source, self._attr = source, attr

    @property
    def value(self) -> float:
        return float(getattr(self._source, self._attr))


class Buckets:
    """A histogram's counts per bucket (not cumulative: made so at the scrape) and its sum; or a summary's count
    and sum, with no bounds (or a histogram's, shared: a summary's count and sum are its totals).

    The call path adds to these inline (`b.sum += x; b.counts[bisect_left(b.bounds, x)] += 1`, see `observe`)
    rather than through a method: a call updates a dozen series, and a Python call each was most of what metrics
    cost it (docs/performance.md, "One copy of each fact")."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        self.sum += amount
        self.counts[bisect_left(self.bounds, amount)] += 1  # the first bound >= amount: Prometheus's `le`


class Family:
    """One metric family's children by label values; registered on the app's registry as a collector."""

    def __init__(self, kind: str, name: str, documentation: str, labelnames: Sequence[str] = (),
                 buckets: Sequence[float] | None = None) -> None:
        self.kind, self.name, self.documentation = kind, name, documentation
        self.labelnames = tuple(labelnames)
        self.bounds = tuple(float(b) for b in buckets) if buckets is not None else ()
        self.children: dict[tuple[str, ...], Any] = {}
        self._plain = self.labels() if not self.labelnames else None

    def _key(self, values: Sequence[str]) -> tuple[str, ...]:
        key = tuple(str(v) for v in values)
        if len(key) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {key}")
        return key

    def share(self, values: Sequence[str], child: Any) -> Any:
        """Make `child` (a `View`, or another family's `Buckets`) this family's series for `values`."""
        self.children[self._key(values)] = child
        return child

    def labels(self, *values: str) -> Any:
        key = tuple(str(v) for v in values)
        found = self.children.get(key)
        if found is None:
            key = self._key(values)
            found = self.children[key] = Buckets(self.bounds) if self.kind in ("histogram", "summary") else Value()
        return found

    # a family without labels is its own child
    def inc(self, amount: float = 1.0) -> None:
        self._plain.inc(amount)  # type: ignore[union-attr]

    def set(self, value: float) -> None:
        self._plain.set(value)  # type: ignore[union-attr]

    def observe(self, amount: float) -> None:
        self._plain.observe(amount)  # type: ignore[union-attr]

    def describe(self) -> list[Metric]:
        return [self._family()]

    def _family(self) -> Metric:
        labels = list(self.labelnames)
        if self.kind == "counter":
            return CounterMetricFamily(self.name, self.documentation, labels=labels)
        if self.kind == "gauge":
            return GaugeMetricFamily(self.name, self.documentation, labels=labels)
        if self.kind == "summary":
            return SummaryMetricFamily(self.name, self.documentation, labels=labels)
        return HistogramMetricFamily(self.name, self.documentation, labels=labels)

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        les = [floatToGoString(b) for b in self.bounds] + ["+Inf"]
        for values, child in list(self.children.items()):
            if self.kind in ("counter", "gauge"):
                family.add_metric(list(values), child.value)
            elif self.kind == "summary":
                family.add_metric(list(values), count_value=sum(child.counts), sum_value=child.sum)
            else:
                running, buckets = 0, []
                for le, n in zip(les, child.counts):
                    running += n
                    buckets.append((le, running))
                family.add_metric(list(values), buckets, sum_value=child.sum)
        yield family
