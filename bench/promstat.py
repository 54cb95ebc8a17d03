"""Prometheus histograms scraped before and after a bench phase: quantiles of what the phase added.

A bench reads ``/metrics`` of a daemon or an etcd member twice; :func:`quantile` interpolates within
the bucket the quantile falls in (as PromQL's ``histogram_quantile`` does), so a figure is only as
fine as the buckets around it.
"""

from __future__ import annotations

import os
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

Key = tuple[str, tuple[tuple[str, str], ...]]  # histogram name, labels without "le"


@dataclass
class Histograms:
    """Cumulative bucket counts and sums of every histogram of one scrape."""

    buckets: dict[Key, dict[float, float]] = field(default_factory=dict)
    sums: dict[Key, float] = field(default_factory=dict)
    counters: dict[str, float] = field(default_factory=dict)  # by name (without _total), all labels summed

    def minus(self, earlier: Histograms) -> Histograms:
        out = Histograms()
        for key, counts in self.buckets.items():
            before = earlier.buckets.get(key, {})
            out.buckets[key] = {le: n - before.get(le, 0.0) for le, n in counts.items()}
            out.sums[key] = self.sums.get(key, 0.0) - earlier.sums.get(key, 0.0)
        out.counters = {k: v - earlier.counters.get(k, 0.0) for k, v in self.counters.items()}
        return out

    def find(self, name: str, **labels: str) -> dict[float, float]:
        """Bucket counts of ``name`` summed over every label set that has ``labels``."""
        total: dict[float, float] = {}
        for (metric, have), counts in self.buckets.items():
            if metric == name and set(labels.items()) <= set(have):
                for le, n in counts.items():
                    total[le] = total.get(le, 0.0) + n
        return total


def scrape(url: str, timeout: float = 5.0) -> Histograms:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode()
    out = Histograms()
    for family in text_string_to_metric_families(text):
        if family.type == "counter":
            out.counters[family.name] = sum(s.value for s in family.samples if s.name.endswith("_total"))
        if family.type != "histogram":
            continue
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
            key = (family.name, labels)
            if sample.name.endswith("_bucket"):
                out.buckets.setdefault(key, {})[float(sample.labels["le"])] = sample.value
            elif sample.name.endswith("_sum"):
                out.sums[key] = sample.value
    return out


def quantile(counts: dict[float, float], q: float) -> float:
    """The q-quantile (seconds) of cumulative bucket counts; nan without observations."""
    bounds = sorted(counts)
    total = counts[bounds[-1]] if bounds else 0.0
    if total <= 0:
        return float("nan")
    rank = q * total
    lower, below = 0.0, 0.0
    for le in bounds:
        if counts[le] >= rank:
            if le == float("inf"):
                return lower
            return lower + (le - lower) * (rank - below) / max(counts[le] - below, 1e-9)
        lower, below = le, counts[le]
    return lower


def summary(counts: dict[float, float]) -> str:
    """``n, p50, p99`` of a histogram difference, in milliseconds."""
    n = max(counts.values(), default=0.0)
    if not n:
        return "no observations"
    p50, p99 = (1000 * quantile(counts, q) for q in (0.5, 0.99))
    return f"n {n:>7,.0f}  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms"


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
