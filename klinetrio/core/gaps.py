"""Gap arithmetic: which open times of a series are neither stored nor known to be empty.

Pure: integers of milliseconds in, ranges out. The syncer, backfill and coverage build on it.
"""

from __future__ import annotations

from collections.abc import Sequence

from klinetrio.core.intervals import Interval


def missing_ranges(
    interval: Interval,
    start_ms: int,
    end_ms: int,
    runs: Sequence[tuple[int, int]],
    holes: Sequence[tuple[int, int]] = (),
) -> list[tuple[int, int]]:
    """Ranges ``[a, b)`` of open times in ``[start_ms, end_ms)`` that are neither stored nor known holes.

    ``runs`` are (first, last) open times of consecutive stored candles, ascending; ``holes``
    are ``[start, end)`` ranges the exchange confirmed empty. Bounds are aligned to the interval.
    """
    covered = sorted([(first, interval.next_open(last)) for first, last in runs] + list(holes))
    result: list[tuple[int, int]] = []
    cursor = interval.ceil(start_ms)
    for lo, hi in covered:
        if hi <= cursor:
            continue
        if lo >= end_ms:
            break
        if lo > cursor:
            result.append((cursor, min(interval.ceil(lo), end_ms)))
        cursor = max(cursor, interval.ceil(hi))
    if cursor < end_ms:
        result.append((cursor, end_ms))
    return [(a, b) for a, b in result if a < b]


def remaining_start(requested: int | None, covered: tuple[int, int]) -> int | None:
    """Where a request still has to look once a pass has examined ``covered``.

    ``requested`` None means "from the newest stored candle", which the pass examined.
    A request from before the pass's range keeps its start.
    """
    start, end = covered
    if requested is None or requested >= start:
        return max(end, requested or end)
    return requested


def empty_ranges(
    interval: Interval, start_ms: int, end_ms: int, got: Sequence[int]
) -> list[tuple[int, int]]:
    """Ranges of ``[start_ms, end_ms)`` in which REST returned no candle (``got`` ascending)."""
    runs = [(t, t) for t in got]
    return missing_ranges(interval, start_ms, end_ms, runs)
