"""Reading /metrics in tests: Prometheus text parsed with prometheus-client's own parser, samples found by labels."""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Every sample in the text: (name, labels, value)."""
    return [(s.name, dict(s.labels), s.value) for family in text_string_to_metric_families(text)
            for s in family.samples]


def value(text: str, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels` (0 when there are none)."""
    return sum(v for n, ls, v in samples(text) if n == name and all(ls.get(k) == want for k, want in labels.items()))


def label_values(text: str, label: str) -> set[str]:
    """Every value `label` takes anywhere in the text."""
    return {ls[label] for _, ls, _ in samples(text) if label in ls}


def scrape(srv: Any, key: str | None = None) -> str:
    r = httpx.get(srv.url + "/metrics", headers=srv.headers(key), timeout=30)
    assert r.status_code == 200, r.text
    return r.text
