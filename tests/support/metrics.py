"""Reading Prometheus metrics in tests: from this process's registry, or scraped from a port."""

from __future__ import annotations

import urllib.request

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families


def value(name: str, **labels: str) -> float:
    """A sample of this process's default registry; 0 when the series does not exist (yet)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample served on 127.0.0.1:`port`/metrics: name -> [(labels, value)]."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def scraped(port: int, name: str, **labels: str) -> float | None:
    """One sample served on `port`; None when the series is absent or nothing answers."""
    try:
        samples = scrape(port)
    except OSError:
        return None
    for found, number in samples.get(name, []):
        if found == labels:
            return number
    return None
