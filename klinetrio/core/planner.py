"""Where each missing part of a series comes from: monthly archives, daily archives, or REST.

Pure: integer milliseconds in, pieces out; no Trio, no I/O. The planner is given the ranges a
series lacks (from :func:`klinetrio.core.gaps.missing_ranges`) and the exchange's now, and cuts
them into pieces that cover exactly those ranges, in order, never overlapping:

- a whole calendar month that has ended → its **monthly** file;
- a whole day that has ended (outside such months) → its **daily** file;
- everything else (the edges of a range inside a day, today) → **REST**.

A file that turns out not to be published is replaced by :func:`fallback`: a month by its days,
a day by REST. ``mode="archive"`` also takes the edges of a range from daily files (filtered to
the range), so that only what no file can hold is left to REST; ``mode="rest"`` plans REST only.

Binance publishes kline archives for every interval, but only intervals that divide a day
(``1s`` … ``1d``) have candles that a day's or a month's file holds whole. Longer ones (``3d``,
``1w``, ``1M``) open across file boundaries and are few anyway (eight years of ``1w`` is one REST
page), so they always come from REST.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from klinetrio.core.intervals import DAY_MS, Interval
from klinetrio.core.models import ms_to_datetime
from klinetrio.errors import SettingsError

Source = Literal["monthly", "daily", "rest"]
Mode = Literal["auto", "archive", "rest"]
MODES: tuple[Mode, ...] = ("auto", "archive", "rest")

_MONTH = Interval("1M")
_DAY = Interval("1d")
_PERIOD = re.compile(r"^(\d{4})-(\d{2})(?:-(\d{2}))?$")


@dataclass(frozen=True, slots=True)
class Piece:
    """Open times ``[start, end)`` of one series and where they come from.

    For an archive piece ``period`` names the file (``2023-01`` monthly, ``2023-01-05`` daily)
    and ``[start, end)`` is the part of it that is wanted (the whole file, except for the edges
    of a range in ``archive`` mode).
    """

    source: Source
    start: int
    end: int
    period: str = ""

    @property
    def is_archive(self) -> bool:
        return self.source != "rest"


def has_archives(interval: Interval) -> bool:
    """Whether a day's and a month's files hold whole candles of ``interval``."""
    step = interval.fixed_ms
    return step is not None and DAY_MS % step == 0


def period_name(start_ms: int, *, monthly: bool) -> str:
    """``2023-01`` (monthly) or ``2023-01-05`` (daily) for the file that starts at ``start_ms``."""
    return ms_to_datetime(start_ms).strftime("%Y-%m" if monthly else "%Y-%m-%d")


def period_span(period: str) -> tuple[int, int]:
    """Open times ``[start, end)`` a file named by ``period`` (``YYYY-MM`` or ``YYYY-MM-DD``) holds."""
    match = _PERIOD.match(period)
    if not match:
        raise SettingsError(f"invalid period {period!r}; expected YYYY-MM or YYYY-MM-DD")
    year, month, day = int(match[1]), int(match[2]), match[3]
    if not 1 <= month <= 12:
        raise SettingsError(f"invalid period {period!r}: no month {month}")
    month_start = _month_start_ms(year, month)
    if day is None:
        return month_start, _MONTH.next_open(month_start)
    start = month_start + (int(day) - 1) * DAY_MS
    if int(day) < 1 or start >= _MONTH.next_open(month_start):
        raise SettingsError(f"invalid period {period!r}: no such day")
    return start, start + DAY_MS


def _month_start_ms(year: int, month: int) -> int:
    return calendar.timegm((year, month, 1, 0, 0, 0, 0, 0, 0)) * 1000


def plan(
    interval: Interval,
    ranges: Iterable[tuple[int, int]],
    now_ms: int,
    mode: Mode = "auto",
) -> list[Piece]:
    """Pieces covering exactly ``ranges`` (ascending, disjoint, aligned to ``interval``)."""
    pieces: list[Piece] = []
    for start, end in ranges:
        if start >= end:
            continue
        if mode == "rest" or not has_archives(interval):
            pieces.append(Piece("rest", start, end))
        else:
            pieces.extend(_split(start, end, now_ms, mode, monthly=True))
    return _merge_rest(pieces)


def fallback(piece: Piece, now_ms: int, mode: Mode = "auto") -> list[Piece]:
    """What replaces an archive piece whose file is not published: a month's days, a day's REST."""
    if piece.source == "monthly":
        return _merge_rest(_split(piece.start, piece.end, now_ms, mode, monthly=False))
    return [Piece("rest", piece.start, piece.end)]


def _split(start: int, end: int, now_ms: int, mode: Mode, *, monthly: bool) -> list[Piece]:
    pieces: list[Piece] = []
    cursor = start
    while cursor < end:
        month_start = _MONTH.floor(cursor)
        month_end = _MONTH.next_open(month_start)
        if monthly and cursor == month_start and month_end <= end and month_end <= now_ms:
            pieces.append(
                Piece("monthly", month_start, month_end, period_name(month_start, monthly=True))
            )
            cursor = month_end
            continue
        day_start = _DAY.floor(cursor)
        day_end = day_start + DAY_MS
        stop = min(day_end, end)
        whole = cursor == day_start and day_end <= end
        if day_end <= now_ms and (whole or mode == "archive"):
            pieces.append(Piece("daily", cursor, stop, period_name(day_start, monthly=False)))
        else:
            pieces.append(Piece("rest", cursor, stop))
        cursor = stop
    return pieces


def _merge_rest(pieces: Sequence[Piece]) -> list[Piece]:
    merged: list[Piece] = []
    for piece in pieces:
        last = merged[-1] if merged else None
        if (
            last is not None
            and piece.source == "rest"
            and last.source == "rest"
            and last.end == piece.start
        ):
            merged[-1] = Piece("rest", last.start, piece.end)
        else:
            merged.append(piece)
    return merged


__all__ = [
    "MODES",
    "Mode",
    "Piece",
    "Source",
    "fallback",
    "has_archives",
    "period_name",
    "period_span",
    "plan",
]
