"""The query parameters of the read API, parsed into frozen queries (pure, no I/O).

Two dialects:

- Binance's, for ``/api/v3/klines`` (``/fapi/v1``, ``/dapi/v1``): errors are ``BinanceError``
  with Binance's codes and messages, in the order Binance checks them (the simulator answers
  the same way, and the end-to-end test compares the two);
- klinetrio's own, for ``/api/candles``, ``/api/metadata``, ``/api/coverage``: ISO 8601 or ms
  times, and errors as ``BadRequest`` (a 400 with ``{"error": ...}``).

Every function here either returns a query or raises one of those two: whatever the input,
never anything else (a hypothesis test feeds them arbitrary text).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from klinetrio.binance.markets import MARKETS, Market
from klinetrio.core.intervals import INTERVALS, Interval
from klinetrio.core.models import parse_utc_ms
from klinetrio.errors import SettingsError

DEFAULT_KLINES = 500
DEFAULT_CANDLES = 1_000
MAX_CANDLES = 10_000
_SYMBOL = re.compile(r"[A-Z0-9\-_.]{1,20}")
_NUMBER = re.compile(r"[0-9]{1,20}")
# Past this a time is no instant PostgreSQL can hold (year 294276); Binance answers no rows.
_MAX_MS = 9_223_372_036_854


class BinanceError(Exception):
    """A Binance error body: ``{"code": code, "msg": msg}`` with HTTP ``status``."""

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.status = status


class BadRequest(Exception):
    """A parameter klinetrio's own API cannot use: 400 with ``{"error": message}``."""


def _mandatory(name: str) -> BinanceError:
    return BinanceError(
        -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    )


@dataclass(frozen=True, slots=True)
class KlinesQuery:
    market: str
    symbol: str
    interval: str
    start_ms: int | None
    end_ms: int | None
    limit: int

    @property
    def newest(self) -> bool:
        """Binance's rule: without ``startTime`` the page is the newest ``limit`` candles
        (ending at ``endTime`` when given); with it, the first ``limit`` from ``startTime``."""
        return self.start_ms is None


def parse_klines(query: Mapping[str, str], market: Market) -> KlinesQuery:
    """``/api/v3/klines`` parameters as Binance checks them, or a ``BinanceError``."""
    symbol = query.get("symbol", "")
    interval = query.get("interval", "")
    if not symbol:
        raise _mandatory("symbol")
    if not interval:
        raise _mandatory("interval")
    if _SYMBOL.fullmatch(symbol) is None:
        raise BinanceError(
            -1100,
            "Illegal characters found in parameter 'symbol'; legal range is '^[A-Z0-9-_.]{1,20}$'.",
        )
    if interval not in INTERVALS or interval in market.intervals_unsupported:
        raise BinanceError(-1120, "Invalid interval.")
    numbers: dict[str, int | None] = {}
    for name in ("startTime", "endTime", "limit"):
        text = query.get(name)
        if text is None or text == "":
            numbers[name] = None
        elif _NUMBER.fullmatch(text):
            numbers[name] = int(text)
        else:
            raise BinanceError(
                -1100,
                f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.",
            )
    limit = numbers["limit"] if numbers["limit"] is not None else DEFAULT_KLINES
    if not 1 <= limit <= market.kline_page:
        raise BinanceError(-1130, "Data sent for parameter 'limit' is not valid.")
    start, end = numbers["startTime"], numbers["endTime"]
    if start is not None and end is not None and start > end:
        raise BinanceError(-1023, "Start time is greater than end time.")
    return KlinesQuery(
        market.name,
        symbol,
        interval,
        None if start is None else min(start, _MAX_MS),
        None if end is None else min(end, _MAX_MS),
        limit,
    )


def _market(query: Mapping[str, str]) -> str:
    name = query.get("market", "spot").strip().lower() or "spot"
    if name not in MARKETS:
        raise BadRequest(f"unknown market {name!r}; expected spot, usdm or coinm")
    return name


def _interval(text: str) -> Interval:
    try:
        return Interval.parse(text)
    except SettingsError as exc:
        raise BadRequest(str(exc)) from None


def _symbol(text: str) -> str:
    symbol = text.strip().upper()
    if _SYMBOL.fullmatch(symbol) is None:
        raise BadRequest(f"invalid symbol {text!r}; expected letters and digits, e.g. BTCUSDT")
    return symbol


def _time(query: Mapping[str, str], name: str) -> int | None:
    text = query.get(name)
    if text is None or not text.strip():
        return None
    try:
        value = parse_utc_ms(text, name)
    except (SettingsError, ValueError, OverflowError) as exc:
        raise BadRequest(
            str(exc) if isinstance(exc, SettingsError) else f"invalid {name}"
        ) from None
    if not 0 <= value <= _MAX_MS:
        raise BadRequest(f"{name} is out of range")
    return value


def _list(query: Mapping[str, str], name: str) -> list[str]:
    return [part for part in query.get(name, "").split(",") if part.strip()]


@dataclass(frozen=True, slots=True)
class CandlesQuery:
    """``/api/candles``: candles opening in ``[start_ms, end_ms)``; the first ``limit`` from
    ``start`` when it is given, else the newest ``limit`` before ``end``."""

    market: str
    symbol: str
    interval: Interval
    start_ms: int | None
    end_ms: int | None
    limit: int
    format: Literal["json", "csv"]


def parse_candles(query: Mapping[str, str]) -> CandlesQuery:
    market = _market(query)
    if not query.get("symbol", "").strip():
        raise BadRequest("symbol is required, e.g. symbol=BTCUSDT")
    if not query.get("interval", "").strip():
        raise BadRequest("interval is required, e.g. interval=1h")
    symbol = _symbol(query["symbol"])
    interval = _interval(query["interval"])
    start, end = _time(query, "start"), _time(query, "end")
    if start is not None and end is not None and start > end:
        raise BadRequest("start is after end")
    text = query.get("limit", "").strip()
    if not text:
        limit = DEFAULT_CANDLES
    elif _NUMBER.fullmatch(text) and 1 <= int(text) <= MAX_CANDLES:
        limit = int(text)
    else:
        raise BadRequest(f"limit must be a whole number from 1 to {MAX_CANDLES:,}")
    shape = query.get("format", "json").strip().lower() or "json"
    if shape not in ("json", "csv"):
        raise BadRequest("format must be json or csv")
    return CandlesQuery(
        market, symbol, interval, start, end, limit, "csv" if shape == "csv" else "json"
    )


@dataclass(frozen=True, slots=True)
class SeriesFilter:
    """``/api/metadata`` and ``/api/coverage``: which series (all when empty), and for coverage
    the range (each series' own stored span where left open)."""

    market: str | None
    symbols: tuple[str, ...]
    intervals: tuple[str, ...]
    start_ms: int | None
    end_ms: int | None
    # Coverage: candles (no interval given, or some) and trades (none, or ``aggTrade``).
    candles: bool = True
    trades: bool = True


_TRADES = {"aggtrade", "aggtrades", "trades"}


def parse_series_filter(query: Mapping[str, str]) -> SeriesFilter:
    market = _market(query) if query.get("market", "").strip() else None
    symbols = tuple(_symbol(s) for s in _list(query, "symbol"))
    names = _list(query, "interval")
    intervals = tuple(_interval(i).name for i in names if i.lower() not in _TRADES)
    start, end = _time(query, "start"), _time(query, "end")
    if start is not None and end is not None and start > end:
        raise BadRequest("start is after end")
    trades = not names or len(intervals) < len(names)
    return SeriesFilter(
        market, symbols, intervals, start, end, not names or bool(intervals), trades
    )


__all__ = [
    "DEFAULT_CANDLES",
    "DEFAULT_KLINES",
    "MAX_CANDLES",
    "BadRequest",
    "BinanceError",
    "CandlesQuery",
    "KlinesQuery",
    "SeriesFilter",
    "parse_candles",
    "parse_klines",
    "parse_series_filter",
]
