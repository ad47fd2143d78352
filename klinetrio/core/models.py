"""The candle as klinetrio stores it, and the key that names a series of candles."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import msgspec

from klinetrio.errors import SettingsError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# The streams beside klines (``KLINETRIO_STREAMS``): a ``StreamKey`` whose ``interval`` is one
# of these names a stream of that kind (``btcusdt@aggTrade``), not a series of candles.
KIND_STREAMS = ("aggTrade", "bookTicker", "ticker", "depth20")


class StreamKey(msgspec.Struct, frozen=True, order=True):
    """One series: a symbol at an interval in a market, e.g. ``spot BTCUSDT 1m``; or, with a
    name of ``KIND_STREAMS`` for ``interval``, one of the other streams of a symbol."""

    symbol: str
    interval: str
    market: str = "spot"

    @property
    def stream_name(self) -> str:
        """Binance's stream name, e.g. ``btcusdt@kline_1m`` (``btcusdt@aggTrade``)."""
        if self.interval in KIND_STREAMS:
            return f"{self.symbol.lower()}@{self.interval}"
        return f"{self.symbol.lower()}@kline_{self.interval}"

    @property
    def is_kline(self) -> bool:
        return self.interval not in KIND_STREAMS

    def __str__(self) -> str:
        """``BTCUSDT 1m`` on spot, ``usdm:BTCUSDT 1m`` elsewhere (log lines name the market)."""
        if self.market == "spot":
            return f"{self.symbol} {self.interval}"
        return f"{self.market}:{self.symbol} {self.interval}"


class Candle(msgspec.Struct, frozen=True, gc=False):
    """One closed candle, prices and volumes exactly as Binance sent them (decimal strings).

    ``open_time`` is in milliseconds since the epoch; ``close_time_us`` in microseconds, because
    Binance's spot archives carry microsecond close times since 2025 and the table keeps them.
    """

    symbol: str
    interval: str
    open_time: int
    close_time_us: int
    open: str
    high: str
    low: str
    close: str
    volume: str
    quote_volume: str
    trades: int
    taker_buy_volume: str
    taker_buy_quote_volume: str
    source: str = "ws"
    market: str = "spot"

    @property
    def key(self) -> StreamKey:
        return StreamKey(self.symbol, self.interval, self.market)


def ms_to_datetime(t_ms: int) -> datetime:
    """Exact conversion of epoch milliseconds to an aware UTC datetime."""
    return _EPOCH + timedelta(milliseconds=t_ms)


def us_to_datetime(t_us: int) -> datetime:
    """Exact conversion of epoch microseconds to an aware UTC datetime."""
    return _EPOCH + timedelta(microseconds=t_us)


def datetime_to_ms(dt: datetime) -> int:
    """Exact conversion of an aware datetime to epoch milliseconds (naive means UTC)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // timedelta(milliseconds=1)


def format_ms(t_ms: int) -> str:
    """A short UTC timestamp for log lines: ``2024-01-01T00:00Z`` (seconds only when non-zero)."""
    dt = ms_to_datetime(t_ms)
    if dt.second or dt.microsecond:
        return dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return dt.strftime("%Y-%m-%dT%H:%MZ")


def plural(count: int, word: str) -> str:
    return f"{count:,} {word}" if count == 1 else f"{count:,} {word}s"


# ISO 8601 prefixes, UTC unless an offset is given: 2024, 2024-01, 2024-01-01, 2024-01-01T12,
# 2024-01-01T12:00, 2024-01-01T12:00:30, 2024-01-01T12:00:30.125, each with Z or +01:00.
_ISO_PREFIX = re.compile(
    r"(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:[T ](?P<hour>\d{2})(?::(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.(?P<ms>\d{1,3}))?)?)?"
    r"(?P<zone>Z|[+-]\d{2}:?\d{2})?)?)?)?",
    re.IGNORECASE,
)
EPOCH_MS_DIGITS = 13


def parse_utc_ms(text: str, what: str) -> int:
    """A UTC date or time as an ISO 8601 prefix (``2024`` is 2024-01-01, ``2024-03`` is
    2024-03-01, ``2024-01-01T12:00Z``, an offset such as ``+02:00`` allowed), or epoch
    milliseconds (13 digits) → epoch milliseconds, exactly. ``what`` names the input in the
    error, e.g. ``--start``."""
    value = text.strip()
    if value.isdigit() and len(value) == EPOCH_MS_DIGITS:
        return int(value)
    match = _ISO_PREFIX.fullmatch(value)
    if match is None:
        if value.isdigit() and len(value) != 4:
            raise SettingsError(
                f"invalid {what} {text!r}: a bare number means milliseconds since 1970 and has"
                f" {EPOCH_MS_DIGITS} digits (e.g. 1704067200000); a year has 4"
            )
        raise SettingsError(
            f"invalid {what} {text!r}; expected an ISO 8601 date or time in UTC such as 2024,"
            " 2024-01, 2024-01-01 or 2024-01-01T12:00Z, or milliseconds since 1970 (13 digits)"
        )
    part = {k: int(v) for k, v in match.groupdict().items() if v is not None and k != "zone"}
    if match["ms"] is not None:
        part["ms"] = int(match["ms"].ljust(3, "0"))
    zone = UTC
    if match["zone"] is not None and match["zone"].upper() != "Z":
        digits = match["zone"].replace(":", "")
        offset = timedelta(hours=int(digits[1:3]), minutes=int(digits[3:5]))
        zone = timezone(offset if digits[0] == "+" else -offset)
    try:
        parsed = datetime(
            part["year"],
            part.get("month", 1),
            part.get("day", 1),
            part.get("hour", 0),
            part.get("minute", 0),
            part.get("second", 0),
            part.get("ms", 0) * 1000,
            tzinfo=zone,
        )
    except ValueError as exc:
        raise SettingsError(f"invalid {what} {text!r}: {exc}") from None
    return datetime_to_ms(parsed)
