"""The order book and 24-hour statistics of the fake exchange (pure), around its trades.

The book at a time ``t`` is a function of ``t``: its middle is the last trade at or before
``t`` (so the book follows the trades and, through them, the candles), the spread one or two
ticks, the sizes a hash of the time. Its update id is ``base + 8 x (t - listing)``, so it only
grows, the same for bookTicker, depth20 and ``/api/v3/depth``, whichever is asked first.

The 24-hour ticker at ``now`` covers the trades in ``[now - 24 h, now]``: open, last, first
and last trade ids come from the trades themselves; high, low and volumes from the hour candles
the window touches (the one in progress as it stands; a replay without hour candles uses its own
interval), which is close to Binance's rolling window without summing a day of trades per
frame.
"""

from __future__ import annotations

from dataclasses import dataclass

from klinetrio.core.intervals import Interval
from klinetrio.simulate.market import (
    _UNITS,
    Bar,
    Market,
    bar_units,
    format_decimals,
    mix,
    parse_units,
    partial_bar,
)
from klinetrio.simulate.trades import VenueTrades

DAY_MS = 86_400_000
_HOUR = Interval("1h")


@dataclass(frozen=True, slots=True)
class Book:
    """A book at one time: ``levels`` price/quantity string pairs on each side, best first."""

    update_id: int
    time: int
    bids: list[tuple[str, str]]
    asks: list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Ticker24h:
    """The 24-hour statistics at ``close_time``; strings as Binance writes them."""

    symbol: str
    price_change: str
    price_change_percent: str
    weighted_avg_price: str
    prev_close: str
    last: str
    last_qty: str
    open: str
    high: str
    low: str
    volume: str
    quote_volume: str
    open_time: int
    close_time: int
    first_id: int
    last_id: int
    count: int


class BookModel:
    """Books and 24-hour tickers of one market, from its candles and trades."""

    def __init__(
        self,
        market: Market,
        trades: VenueTrades,
        *,
        seed: int,
        listing_ms: int,
        inverse: bool = False,
    ) -> None:
        self._inverse = inverse
        self._market = market
        self._trades = trades
        self._listing_ms = listing_ms
        self._bases: dict[str, int] = {}
        self._seed = seed

    def _key(self, symbol: str) -> int:
        base = self._bases.get(symbol)
        if base is None:
            h = (self._seed ^ 0xB00C) & ((1 << 64) - 1)
            for ch in symbol.encode():
                h = mix(h ^ ch)
            base = self._bases[symbol] = h
        return base

    def update_id(self, symbol: str, t_ms: int) -> int:
        """The book's last update id at ``t_ms``: grows with time, a pure function of it."""
        return 1_000_000 + self._key(symbol) % 1_000_000_000 + 8 * (t_ms - self._listing_ms)

    def _base_bar(self, symbol: str, t_ms: int) -> Bar | None:
        interval = self._trades.derived.base_interval(symbol) or "1m"
        iv = Interval(interval)
        bar = self._market.bar(symbol, interval, iv.floor(t_ms))
        if bar is None:
            bar = self._market.bar(symbol, "1m", Interval("1m").floor(t_ms))
        return bar

    def book(self, symbol: str, t_ms: int, depth: int) -> Book | None:
        """The best ``depth`` levels on each side at ``t_ms``; None when the symbol has no
        candle then (not listed, halted, delisted, or before a replay's data)."""
        bar = self._base_bar(symbol, t_ms)
        if bar is None:
            return None
        u = bar_units(bar)
        tick, vstep = u.tick, u.vstep
        last = self._trades.last_at(symbol, t_ms)
        if last is not None and last.time >= bar.open_time - 3_600_000:
            middle = parse_units(last.price) // tick * tick
        else:
            middle = parse_units(partial_bar(bar, t_ms).close) // tick * tick
        h = mix(self._key(symbol) ^ t_ms)
        bid = max(tick, middle - tick * (h & 1))
        ask = bid + tick * (1 + (h >> 1) % 2)
        # Sizes of the order of a few trades: the candle's volume per trade, times 0.1 .. 8.
        typical = max(vstep, u.volume // max(1, bar.trades))
        pp, vp = u.price_places, u.volume_places
        bids: list[tuple[str, str]] = []
        asks: list[tuple[str, str]] = []
        price_bid, price_ask = bid, ask
        for level in range(depth):
            hb = mix(h ^ (level * 2 + 11))
            ha = mix(h ^ (level * 2 + 12))
            if price_bid >= tick:
                qty = max(vstep, typical * (1 + hb % 80) // 10 // vstep * vstep)
                bids.append((format_decimals(price_bid, pp), format_decimals(qty, vp)))
                price_bid -= tick * (1 + (hb >> 8) % 3)
            qty = max(vstep, typical * (1 + ha % 80) // 10 // vstep * vstep)
            asks.append((format_decimals(price_ask, pp), format_decimals(qty, vp)))
            price_ask += tick * (1 + (ha >> 8) % 3)
        return Book(self.update_id(symbol, t_ms), t_ms, bids, asks)

    def ticker(self, symbol: str, now_ms: int) -> Ticker24h | None:
        """The 24-hour statistics at ``now_ms``; None when no trade happened in the window."""
        start = now_ms - DAY_MS
        first = self._trades.first_at(symbol, start, now_ms)
        last = self._trades.last_at(symbol, now_ms)
        if first is None or last is None or last.time < start:
            return None
        places = len(last.price.partition(".")[2])
        qplaces = len(last.quantity.partition(".")[2])
        o, c = parse_units(first.price), parse_units(last.price)
        high, low = max(o, c), min(o, c)
        volume = quote = 0
        qtext = ""
        # Hour candles where the market has them (a replay may have only its base interval).
        interval = "1h"
        opens = self._market.open_times(symbol, "1h", _HOUR.floor(start), now_ms, 26, False)
        if not opens:
            interval = self._trades.derived.base_interval(symbol) or "1h"
            iv = Interval(interval)
            opens = self._market.open_times(symbol, interval, iv.floor(start), now_ms, 1500, False)
        for open_ms in opens:
            bar = self._market.bar(symbol, interval, open_ms)
            if bar is None:
                continue
            if bar.close_time >= now_ms:
                bar = partial_bar(bar, now_ms)
            high = max(high, parse_units(bar.high))
            low = min(low, parse_units(bar.low))
            volume += parse_units(bar.volume)
            quote += parse_units(bar.quote_volume)
            qtext = bar.quote_volume
        qvplaces = max(8, len(qtext.partition(".")[2])) if qtext else 8
        change = c - o
        percent = 0 if o == 0 else round(change * 100_000 / o)  # thousandths of a percent
        sign = "-" if percent < 0 else ""
        if self._inverse:
            # COIN-M: volume in contracts, the "quote" volume in the coin; USD per contract as
            # the synthetic COIN-M market has it.
            size = 100 if symbol.startswith("BTC") else 10
            avg = volume * size * _UNITS // quote if quote else c
        else:
            avg = quote * _UNITS // volume if volume else c
        return Ticker24h(
            symbol=symbol,
            price_change=_signed(change, places),
            price_change_percent=f"{sign}{abs(percent) // 1000}.{abs(percent) % 1000:03d}",
            weighted_avg_price=format_decimals(avg, max(places, 8) if places >= 8 else places),
            prev_close=format_decimals(o, places),
            last=last.price,
            last_qty=last.quantity,
            open=first.price,
            high=format_decimals(high, places),
            low=format_decimals(low, places),
            volume=format_decimals(volume, qplaces),
            quote_volume=format_decimals(quote, min(8, qvplaces)),
            open_time=start,
            close_time=now_ms,
            first_id=first.first_id,
            last_id=last.last_id,
            count=last.last_id - first.first_id + 1,
        )


def _signed(units: int, places: int) -> str:
    text = format_decimals(abs(units), places)
    return "-" + text if units < 0 else text


__all__ = ["DAY_MS", "Book", "BookModel", "Ticker24h"]
