"""Gap arithmetic: which open times of a series are neither stored nor known to be empty.

Pure: integers of milliseconds in, ranges out. The syncer, backfill and coverage build on it.
A range counts as a hole (confirmed empty) only when two reads at least a minute apart found it
empty (``reconcile_empty``): a transient empty answer must never become a permanent hole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True, slots=True)
class SyncRequest:
    """What a pending sync of one series must examine, however many asked for it.

    ``from_newest``: from the newest stored candle (within the look-back, from the oldest), the
    request of a start-up or a first subscription; ``start``: from an explicit open time, the
    request of a skipped candle, a reconnect or a dropped batch. The pass takes the earlier of
    the two, so no request is lost to another one: an explicit start later than the newest
    stored candle must never shadow a ``from_newest`` that reaches further back.
    """

    from_newest: bool = False
    start: int | None = None

    @classmethod
    def of(cls, start: int | None) -> SyncRequest:
        """``None`` means from the newest stored candle."""
        return cls(from_newest=True) if start is None else cls(start=start)

    def merge(self, other: SyncRequest) -> SyncRequest:
        starts = [s for s in (self.start, other.start) if s is not None]
        return SyncRequest(self.from_newest or other.from_newest, min(starts, default=None))

    def after(self, covered: tuple[int, int]) -> SyncRequest:
        """What is left of a request that arrived while a pass examined ``covered`` = [a, b).

        The candles that pass sent may still be on their way to the database, so looking from
        the newest stored candle again would fetch them twice: the pass looked up to ``b``.
        An explicit start inside the pass's range is moved to its end; one before it stays.
        """
        a, b = covered
        starts: list[int] = []
        if self.from_newest:
            starts.append(b)
        if self.start is not None:
            starts.append(self.start if self.start < a else max(b, self.start))
        return SyncRequest(start=min(starts, default=b))


def empty_ranges(
    interval: Interval, start_ms: int, end_ms: int, got: Sequence[int]
) -> list[tuple[int, int]]:
    """Ranges of ``[start_ms, end_ms)`` in which REST returned no candle (``got`` ascending)."""
    runs = [(t, t) for t in got]
    return missing_ranges(interval, start_ms, end_ms, runs)


@dataclass(frozen=True, slots=True)
class Suspect:
    """A range ``[start, end)`` one read found empty, at ``seen_at`` (exchange ms)."""

    start: int
    end: int
    seen_at: int


def _subtract(
    ranges: Sequence[tuple[int, int]], cut: Sequence[tuple[int, int]]
) -> list[tuple[int, int]]:
    """``ranges`` minus every range of ``cut`` (half-open ranges; ``cut`` ascending)."""
    result: list[tuple[int, int]] = []
    for lo, hi in ranges:
        cursor = lo
        for a, b in cut:
            if b <= cursor or a >= hi:
                continue
            if a > cursor:
                result.append((cursor, a))
            cursor = max(cursor, b)
            if cursor >= hi:
                break
        if cursor < hi:
            result.append((cursor, hi))
    return result


def reconcile_empty(
    suspects: Sequence[Suspect],
    checked: tuple[int, int],
    empty: Sequence[tuple[int, int]],
    now: int,
    apart_ms: int,
) -> tuple[list[tuple[int, int]], list[Suspect]]:
    """A read at exchange time ``now`` covered ``checked`` and found ``empty`` (ascending parts
    of it) without candles. Return the ranges now confirmed empty and the suspects that remain.

    A range is confirmed only where an earlier read, at least ``apart_ms`` before this one,
    also found it empty: a transient empty page must never become a permanent hole. Inside
    ``checked``, a suspect that this read found candles in is dropped, one seen too recently is
    kept as it was, and an empty part no suspect knew of becomes a new suspect.
    """
    lo, hi = checked
    confirmed: list[tuple[int, int]] = []
    remaining: list[Suspect] = []
    known: list[tuple[int, int]] = []
    for s in suspects:
        # What lies outside the checked range stays suspected, untouched by this read.
        remaining.extend(
            Suspect(a, b, s.seen_at) for a, b in _subtract([(s.start, s.end)], [checked])
        )
        inside = (max(s.start, lo), min(s.end, hi))
        if inside[0] >= inside[1]:
            continue
        for a, b in empty:
            part = (max(a, inside[0]), min(b, inside[1]))
            if part[0] >= part[1]:
                continue
            known.append(part)
            if s.seen_at <= now - apart_ms:
                confirmed.append(part)
            else:
                remaining.append(Suspect(part[0], part[1], s.seen_at))
    known.sort()
    remaining.extend(Suspect(a, b, now) for a, b in _subtract(empty, known))
    confirmed.sort()
    remaining.sort(key=lambda s: (s.start, s.end))
    return confirmed, remaining
