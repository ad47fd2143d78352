"""A fixed-bucket histogram for latencies: counts per upper bound, a sum and a count.

Pure and cheap (a bisect per observation). Components keep their own and expose a frozen
``HistogramSnapshot`` in ``statistics()``; ``/metrics`` renders it in Prometheus's format.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

LATENCY_BOUNDS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """``counts[i]`` observations were at most ``bounds[i]`` and above the bound before it;
    ``counts[-1]`` (one more than ``bounds``) counts those above every bound."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    total: float
    count: int

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at most that), ending with (inf, count): Prometheus's
        ``le`` buckets."""
        running = 0
        out: list[tuple[float, int]] = []
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


class Histogram:
    def __init__(self, bounds: tuple[float, ...] = LATENCY_BOUNDS_S) -> None:
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self._total = 0.0
        self._count = 0

    def observe(self, value: float) -> None:
        self._counts[bisect.bisect_left(self._bounds, value)] += 1
        self._total += value
        self._count += 1

    def snapshot(self) -> HistogramSnapshot:
        return HistogramSnapshot(self._bounds, tuple(self._counts), self._total, self._count)


__all__ = ["LATENCY_BOUNDS_S", "Histogram", "HistogramSnapshot"]
