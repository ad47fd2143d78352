"""Listings that change while the simulator runs (pure): ``--list SYMBOL@T`` and
``--delist SYMBOL@T``, and the market wrapper that hides candles outside a symbol's listing.

A listed symbol has no candle that opens before its listing time and shows as ``TRADING`` from
then on (``PENDING_TRADING`` before it on futures; absent from spot's exchangeInfo). A delisted
symbol keeps its history but has no candle that closes at or after its delisting time, so its
streams fall silent, and exchangeInfo shows it in ``BREAK`` (spot, USD-M) or with a
``contractStatus`` of ``CLOSE`` (COIN-M).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import msgspec

from klinetrio.core.intervals import Interval
from klinetrio.core.models import parse_utc_ms
from klinetrio.errors import SettingsError
from klinetrio.simulate.market import Bar, Market

DELISTED_STATUS = {"spot": "BREAK", "usdm": "BREAK", "coinm": "CLOSE"}
_NEVER = 2**62


class ListingChange(msgspec.Struct, frozen=True, kw_only=True):
    """One scheduled change: ``symbol`` of ``market`` is listed (or delisted) at ``at_ms``
    (exchange time), or ``after_s`` exchange seconds after the simulator's start."""

    market: str = "spot"
    symbol: str
    listed: bool = True
    at_ms: int | None = None
    after_s: float = 0.0

    def time_ms(self, start_ms: int) -> int:
        return self.at_ms if self.at_ms is not None else start_ms + round(self.after_s * 1000)


@dataclass(frozen=True, slots=True)
class Window:
    """When a symbol trades: from ``listed_ms`` (inclusive) until ``delisted_ms`` (exclusive)."""

    listed_ms: int = -_NEVER
    delisted_ms: int = _NEVER

    def state(self, now_ms: int) -> str:
        """``pending``, ``trading`` or ``delisted`` at ``now_ms``."""
        if now_ms < self.listed_ms:
            return "pending"
        if now_ms >= self.delisted_ms:
            return "delisted"
        return "trading"


def windows_of(changes: tuple[ListingChange, ...], market: str, start_ms: int) -> dict[str, Window]:
    """The trading windows of ``market``'s scheduled symbols."""
    windows: dict[str, Window] = {}
    for change in changes:
        if change.market != market:
            continue
        window = windows.get(change.symbol, Window())
        t = change.time_ms(start_ms)
        window = Window(t, window.delisted_ms) if change.listed else Window(window.listed_ms, t)
        windows[change.symbol] = window
    return windows


def parse_listing(text: str, flag: str, listed: bool) -> ListingChange:
    """``usdm:SOLUSDT@600`` (exchange seconds after start) or ``SOLUSDT@2024-01-01T01:00Z``."""
    name, sep, when = text.strip().rpartition("@")
    if not sep or not name or not when:
        raise SettingsError(f"invalid {flag} {text!r}; expected [market:]SYMBOL@T")
    market, colon, symbol = name.rpartition(":")
    market = market.lower() if colon else "spot"
    if market not in DELISTED_STATUS:
        raise SettingsError(f"invalid {flag} {text!r}: unknown market {market!r}")
    symbol = symbol.upper()
    if re.fullmatch(r"-?[0-9]+(?:\.[0-9]*)?", when) and len(when) < 13:
        return ListingChange(market=market, symbol=symbol, listed=listed, after_s=float(when))
    return ListingChange(
        market=market, symbol=symbol, listed=listed, at_ms=parse_utc_ms(when, flag)
    )


class ScheduledMarket:
    """``inner`` with the candles outside each scheduled symbol's window removed."""

    def __init__(self, inner: Market, windows: dict[str, Window]) -> None:
        self.inner = inner
        self.windows = windows
        self._symbols = tuple(dict.fromkeys((*inner.symbols, *windows)))

    @property
    def symbols(self) -> tuple[str, ...]:
        return self._symbols

    def describe(self) -> str:
        return self.inner.describe()

    def bar(self, symbol: str, interval: str, open_time: int) -> Bar | None:
        window = self.windows.get(symbol)
        if window is not None and (
            open_time < window.listed_ms
            or Interval(interval).close_time(open_time) >= window.delisted_ms
        ):
            return None
        return self.inner.bar(symbol, interval, open_time)

    def open_times(
        self, symbol: str, interval: str, start_ms: int, end_ms: int, limit: int, latest: bool
    ) -> list[int]:
        window = self.windows.get(symbol)
        if window is not None:
            start_ms = max(start_ms, window.listed_ms)
            if window.delisted_ms < _NEVER:
                # The last candle that closes before the delisting opens at or before this.
                iv = Interval(interval)
                last_open = iv.floor(window.delisted_ms)
                if iv.close_time(last_open) >= window.delisted_ms:
                    last_open = iv.floor(last_open - 1)
                end_ms = min(end_ms, last_open)
            if start_ms > end_ms:
                return []
        return self.inner.open_times(symbol, interval, start_ms, end_ms, limit, latest)


__all__ = [
    "DELISTED_STATUS",
    "ListingChange",
    "ScheduledMarket",
    "Window",
    "parse_listing",
    "windows_of",
]
