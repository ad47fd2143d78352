"""How complete a series is over a range, provably (pure).

For a series and a range ``[start_ms, end_ms)`` Binance's interval arithmetic (``intervals``)
says which candles must exist: every aligned open time in the range. Each of them is either

- **present**: stored (the database reports runs of consecutive stored candles),
- **in a hole**: inside a range the exchange confirmed empty (``candle_holes``) and not stored,
- **missing**: neither — what sync still has to fetch, or what was lost.

``complete`` is (present + in holes) / expected, as a percentage: a series whose only absent
candles are confirmed holes is 100 % complete. Ranges are half-open millisecond ranges
``(start, end)``; a run is ``(first_open, last_open)`` of consecutive stored candles.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import msgspec

from klinetrio.core.intervals import Interval

Span = tuple[int, int]


class MissingRange(msgspec.Struct, frozen=True):
    """Candles absent and not confirmed empty: open times ``start`` ≤ t < ``end``, ``count`` of them."""

    start: int
    end: int
    count: int


class Coverage(msgspec.Struct, frozen=True):
    """The coverage of one series over ``[start, end)``; ``first``/``last`` are the open times
    of the oldest and newest stored candle in the range (None when none is)."""

    market: str
    symbol: str
    interval: str
    start: int
    end: int
    first: int | None
    last: int | None
    expected: int
    present: int
    holes: int
    missing: int
    missing_ranges: tuple[MissingRange, ...] = ()
    hole_ranges: tuple[MissingRange, ...] = ()  # expected, not stored, confirmed empty

    @property
    def complete_pct(self) -> float:
        """(present + in holes) / expected * 100; an empty range is complete."""
        if self.expected == 0:
            return 100.0
        return 100.0 * (self.expected - self.missing) / self.expected


def _union(spans: Iterable[Span]) -> list[Span]:
    merged: list[Span] = []
    for a, b in sorted(s for s in spans if s[0] < s[1]):
        if merged and a <= merged[-1][1]:
            if b > merged[-1][1]:
                merged[-1] = (merged[-1][0], b)
        else:
            merged.append((a, b))
    return merged


def _clip(spans: Iterable[Span], start: int, end: int) -> list[Span]:
    return [(max(a, start), min(b, end)) for a, b in spans if a < end and b > start]


def _subtract(spans: Sequence[Span], cuts: Sequence[Span]) -> list[Span]:
    """``spans`` minus ``cuts``; both sorted and disjoint."""
    result: list[Span] = []
    j = 0
    for a, b in spans:
        lo = a
        while j < len(cuts) and cuts[j][1] <= lo:
            j += 1
        k = j
        while k < len(cuts) and cuts[k][0] < b:
            ca, cb = cuts[k]
            if ca > lo:
                result.append((lo, ca))
            lo = max(lo, cb)
            if lo >= b:
                break
            k += 1
        if lo < b:
            result.append((lo, b))
    return result


def coverage(
    market: str,
    symbol: str,
    interval: Interval,
    start_ms: int,
    end_ms: int,
    runs: Iterable[Span],
    holes: Iterable[Span],
) -> Coverage:
    """The coverage of ``[start_ms, end_ms)`` from the stored ``runs`` (first, last open time of
    consecutive stored candles, any order) and the confirmed ``holes`` (half-open ranges)."""
    end_ms = max(end_ms, start_ms)
    expected = interval.count(start_ms, end_ms)
    stored = _clip(_union((a, interval.next_open(b)) for a, b in runs), start_ms, end_ms)
    present = sum(interval.count(a, b) for a, b in stored)
    confirmed = _union(_clip(holes, start_ms, end_ms))
    holes_only = _subtract(confirmed, stored)
    hole_ranges = _ranges(interval, holes_only)
    in_holes = sum(r.count for r in hole_ranges)
    absent = _subtract(_subtract([(start_ms, end_ms)], stored), confirmed)
    missing_ranges = _ranges(interval, absent)
    missing = sum(r.count for r in missing_ranges)
    # A stored run clipped by the range may hold no open time of it (a run ending just after
    # ``start_ms``, unaligned): first and last come from the runs that still count.
    counted = [(a, b) for a, b in stored if interval.count(a, b)]
    first = interval.ceil(counted[0][0]) if counted else None
    last = interval.floor(counted[-1][1] - 1) if counted else None
    return Coverage(
        market,
        symbol,
        interval.name,
        start_ms,
        end_ms,
        first,
        last,
        expected,
        present,
        in_holes,
        missing,
        missing_ranges,
        hole_ranges,
    )


def _ranges(interval: Interval, spans: Iterable[Span]) -> tuple[MissingRange, ...]:
    """Spans as ranges of the open times they hold (aligned bounds), empty ones left out."""
    found = []
    for a, b in spans:
        n = interval.count(a, b)
        if n:
            found.append(MissingRange(interval.ceil(a), interval.ceil(b), n))
    return tuple(found)


def as_json(c: Coverage) -> dict[str, object]:
    """One series' coverage as ``/api/coverage`` and ``klinetrio coverage --json`` give it."""
    return {
        "market": c.market,
        "symbol": c.symbol,
        "interval": c.interval,
        "start": c.start,
        "end": c.end,
        "first": c.first,
        "last": c.last,
        "expected": c.expected,
        "present": c.present,
        "holes": c.holes,
        "missing": c.missing,
        "complete_pct": round(c.complete_pct, 4),
        "missing_ranges": [
            {"start": r.start, "end": r.end, "count": r.count} for r in c.missing_ranges
        ],
        "hole_ranges": [{"start": r.start, "end": r.end, "count": r.count} for r in c.hole_ranges],
    }


def summary(items: Iterable[Coverage]) -> dict[str, float | int]:
    """Totals over many series: series, expected, present, holes, missing, complete %."""
    series = expected = present = in_holes = missing = 0
    for c in items:
        series += 1
        expected += c.expected
        present += c.present
        in_holes += c.holes
        missing += c.missing
    pct = 100.0 if expected == 0 else round(100.0 * (expected - missing) / expected, 4)
    return {
        "series": series,
        "expected": expected,
        "present": present,
        "holes": in_holes,
        "missing": missing,
        "complete_pct": pct,
    }


__all__ = ["Coverage", "MissingRange", "Span", "as_json", "coverage", "summary"]
