"""Binance kline intervals: parsing and open-time alignment.

Pure arithmetic on integer milliseconds since the Unix epoch (UTC). Binance aligns intervals of
up to a day to multiples of their length since 1970-01-01. Longer ones are anchored elsewhere, as
the real files in ``shared/data/rest`` show: ``3d`` candles open on every third day counted from
1970-01-02 (day numbers ≡ 1 mod 3), ``1w`` candles on Mondays, ``1M`` candles on the first of each
calendar month.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from dataclasses import dataclass

from klinetrio.errors import SettingsError

SECOND_MS = 1_000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
WEEK_MS = 7 * DAY_MS
# 1970-01-01 was a Thursday; the first Monday on or before the epoch is 1969-12-29, 3 days earlier.
_MONDAY_OFFSET_MS = 3 * DAY_MS
# Binance's 3d candles open on day numbers (days since the epoch) that leave 1 when divided by 3:
# 2020-01-01 is day 18262, and every 3d row of the real REST files follows it.
_THREE_DAY_OFFSET_MS = -DAY_MS

_FIXED_MS: dict[str, int] = {
    "1s": SECOND_MS,
    "1m": MINUTE_MS,
    "3m": 3 * MINUTE_MS,
    "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS,
    "30m": 30 * MINUTE_MS,
    "1h": HOUR_MS,
    "2h": 2 * HOUR_MS,
    "4h": 4 * HOUR_MS,
    "6h": 6 * HOUR_MS,
    "8h": 8 * HOUR_MS,
    "12h": 12 * HOUR_MS,
    "1d": DAY_MS,
    "3d": 3 * DAY_MS,
    "1w": WEEK_MS,
}

INTERVALS: tuple[str, ...] = (*_FIXED_MS, "1M")


@dataclass(frozen=True, slots=True)
class Interval:
    """One Binance interval string and the arithmetic of its candles' open times."""

    name: str

    @classmethod
    def parse(cls, text: str) -> Interval:
        """Parse an interval string exactly as Binance spells it (``1m`` is a minute, ``1M`` a month)."""
        name = text.strip()
        if name not in _FIXED_MS and name != "1M":
            raise SettingsError(
                f"unknown interval {text!r}; expected one of {', '.join(INTERVALS)}"
            )
        return cls(name)

    @property
    def fixed_ms(self) -> int | None:
        """The length in milliseconds, or None for calendar months."""
        return _FIXED_MS.get(self.name)

    @property
    def nominal_ms(self) -> int:
        """A length good for estimates (31 days for a month)."""
        return _FIXED_MS.get(self.name, 31 * DAY_MS)

    def floor(self, t_ms: int) -> int:
        """The open time of the candle that contains ``t_ms``."""
        if self.name == "1M":
            year, month = _year_month(t_ms)
            return _month_start(year, month)
        if self.name == "1w":
            return t_ms - (t_ms + _MONDAY_OFFSET_MS) % WEEK_MS
        if self.name == "3d":
            return t_ms - (t_ms + _THREE_DAY_OFFSET_MS) % (3 * DAY_MS)
        step = _FIXED_MS[self.name]
        return t_ms - t_ms % step

    def ceil(self, t_ms: int) -> int:
        """The first open time at or after ``t_ms``."""
        start = self.floor(t_ms)
        return start if start == t_ms else self.next_open(start)

    def next_open(self, open_ms: int) -> int:
        """The open time of the candle after the one that opens at ``open_ms``."""
        if self.name == "1M":
            year, month = _year_month(open_ms)
            return _month_start(year + month // 12, month % 12 + 1)
        return open_ms + _FIXED_MS[self.name]

    def close_time(self, open_ms: int) -> int:
        """Binance's close time (milliseconds) of the candle that opens at ``open_ms``."""
        return self.next_open(open_ms) - 1

    def is_aligned(self, t_ms: int) -> bool:
        return self.floor(t_ms) == t_ms

    def open_times(self, start_ms: int, end_ms: int) -> Iterator[int]:
        """Every open time in ``[start_ms, end_ms)``, starting at the first aligned one."""
        t = self.ceil(start_ms)
        while t < end_ms:
            yield t
            t = self.next_open(t)

    def count(self, start_ms: int, end_ms: int) -> int:
        """How many candles open in ``[start_ms, end_ms)``."""
        first = self.ceil(start_ms)
        if first >= end_ms:
            return 0
        step = self.fixed_ms
        if step is not None:
            return (end_ms - 1 - first) // step + 1
        return sum(1 for _ in self.open_times(first, end_ms))

    def __str__(self) -> str:
        return self.name


def _year_month(t_ms: int) -> tuple[int, int]:
    days = t_ms // DAY_MS
    # Civil-from-days (Howard Hinnant), exact for any integer day count.
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    m = mp + 3 if mp < 10 else mp - 9
    return (y + 1 if m <= 2 else y), m


def _month_start(year: int, month: int) -> int:
    return calendar.timegm((year, month, 1, 0, 0, 0, 0, 0, 0)) * SECOND_MS
