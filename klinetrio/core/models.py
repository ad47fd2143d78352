"""The candle as klinetrio stores it, and the key that names a series of candles."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec

from klinetrio.errors import SettingsError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class StreamKey(msgspec.Struct, frozen=True, order=True):
    """One series: a symbol at an interval in a market, e.g. ``spot BTCUSDT 1m``."""

    symbol: str
    interval: str
    market: str = "spot"

    @property
    def stream_name(self) -> str:
        """Binance's stream name, e.g. ``btcusdt@kline_1m``."""
        return f"{self.symbol.lower()}@kline_{self.interval}"

    def __str__(self) -> str:
        return f"{self.symbol} {self.interval}"


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


def parse_utc_ms(text: str, what: str) -> int:
    """A UTC date or datetime (``2024-01-01``, ``2024-01-01T12:00``, a trailing ``Z`` or offset
    allowed) or epoch milliseconds → epoch milliseconds, exactly. ``what`` names the input in
    the error, e.g. ``--start``."""
    value = text.strip().replace(" ", "T")
    if value.isdigit():
        return int(value)
    if value.endswith(("Z", "z")):
        value = value[:-1]
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise SettingsError(
            f"invalid {what} {text!r}; expected a UTC date or datetime such as 2024-01-01 or 2024-01-01T12:00"
        ) from None
    return datetime_to_ms(parsed)
