"""Candles of the fake exchange (pure): the ``Bar`` it serves, candles in progress, and the
synthetic market whose every candle is a function of (seed, symbol, interval, open time)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import msgspec

from klinetrio.core.intervals import Interval

_UNITS = 100_000_000  # prices and volumes are integers of 1e-8 while we compute
_MASK64 = (1 << 64) - 1
_POW10: tuple[int, ...] = tuple(10**k for k in range(9))
# BTCUSDT's first spot candle opened 2017-08-17 04:00 UTC; synthetic history starts there.
SYNTHETIC_LISTING_MS = 1_502_942_400_000
_CACHE_SIZE = 200_000

_encoder = msgspec.json.Encoder()


class _KlineFields(msgspec.Struct, gc=False):
    """The ``k`` object of a kline event, in Binance's field order."""

    t: int
    T: int
    s: str
    i: str
    f: int
    last_trade_id: int = msgspec.field(name="L")
    open: str = msgspec.field(name="o")
    close: str = msgspec.field(name="c")
    high: str = msgspec.field(name="h")
    low: str = msgspec.field(name="l")
    volume: str = msgspec.field(name="v")
    trades: int = msgspec.field(name="n")
    closed: bool = msgspec.field(name="x")
    quote_volume: str = msgspec.field(name="q")
    taker_buy_volume: str = msgspec.field(name="V")
    taker_buy_quote_volume: str = msgspec.field(name="Q")
    ignore: str = msgspec.field(name="B", default="0")


@dataclass(slots=True)
class Bar:
    """One candle as the exchange serves it: exact decimal strings, millisecond times."""

    symbol: str
    interval: str
    open_time: int
    close_time: int
    open: str
    high: str
    low: str
    close: str
    volume: str
    quote_volume: str
    trades: int
    taker_buy_volume: str
    taker_buy_quote_volume: str
    first_trade_id: int = -1
    _closed_json: bytes | None = field(default=None, repr=False, compare=False)
    # What partial_bar needs of the final candle, parsed once: it runs for every update frame.
    _units: _Units | None = field(default=None, repr=False, compare=False)

    @property
    def last_trade_id(self) -> int:
        return self.first_trade_id + self.trades - 1 if self.trades else -1

    def rest_row(self) -> tuple[int, str, str, str, str, str, int, str, int, str, str, str]:
        """The 12-element row of ``GET /api/v3/klines``."""
        return (
            self.open_time, self.open, self.high, self.low, self.close, self.volume,
            self.close_time, self.quote_volume, self.trades, self.taker_buy_volume,
            self.taker_buy_quote_volume, "0",
        )  # fmt: skip

    def kline_json(self, closed: bool) -> bytes:
        """The ``k`` object; the closed form is encoded once and cached."""
        if closed and self._closed_json is not None:
            return self._closed_json
        data = _encoder.encode(
            _KlineFields(
                t=self.open_time, T=self.close_time, s=self.symbol, i=self.interval,
                f=self.first_trade_id if self.trades else -1, last_trade_id=self.last_trade_id,
                open=self.open, close=self.close, high=self.high, low=self.low,
                volume=self.volume, trades=self.trades, closed=closed,
                quote_volume=self.quote_volume, taker_buy_volume=self.taker_buy_volume,
                taker_buy_quote_volume=self.taker_buy_quote_volume,
            )
        )  # fmt: skip
        if closed:
            self._closed_json = data
        return data


def format_units(units: int) -> str:
    """1e-8 units → Binance's 8-decimal string: 1654177000000 → ``16541.77000000``."""
    return f"{units // _UNITS}.{units % _UNITS:08d}"


def format_decimals(units: int, decimals: int) -> str:
    """1e-8 units → a string of ``decimals`` decimals, cut toward zero (futures strings carry
    the symbol's precision: ``93548.80``, ``341.604``, ``1893``)."""
    if decimals >= 8:
        return format_units(units)
    whole, frac = divmod(units, _UNITS)
    if decimals <= 0:
        return str(whole)
    return f"{whole}.{frac // _POW10[8 - decimals]:0{decimals}d}"


def _places(text: str) -> int:
    """How many decimals a string is written with (``1.50`` → 2)."""
    return len(text.partition(".")[2])


def parse_units(text: str) -> int:
    """A decimal string → 1e-8 units (extra decimals are cut; only used for derived values)."""
    whole, _, frac = text.strip().partition(".")
    return int(whole or "0") * _UNITS + int((frac + "00000000")[:8])


def _decimals(*texts: str) -> int:
    return max(len(t.partition(".")[2].rstrip("0")) for t in texts)


def _toward_zero(value: int, step: int) -> int:
    return value - value % step if value >= 0 else -((-value) - (-value) % step)


def _scale(value: int, num: int, den: int) -> int:
    """``value * num / den`` rounded toward zero (so a share of a move never overshoots it)."""
    return value * num // den if value >= 0 else -((-value) * num // den)


def mix(x: int) -> int:
    """SplitMix64's finalizer (see ``_mix``), for the derivations beside candles."""
    return _mix(x)


def _mix(x: int) -> int:
    """SplitMix64's finalizer: a cheap, well-spread 64-bit hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _unit(h: int) -> float:
    """A hash → [0, 1)."""
    return (h >> 11) * (1.0 / 9007199254740992.0)


@dataclass(frozen=True, slots=True)
class _Units:
    """A final candle's prices and volumes as integers of 1e-8, with its price and volume steps."""

    tick: int
    vstep: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    taker: int
    quote: int
    taker_quote: int
    # How the final candle writes its prices, volumes and quote volumes (8 on spot).
    price_places: int
    volume_places: int
    quote_places: int


def _units_of(bar: Bar) -> _Units:
    units = bar._units
    if units is None:
        units = bar._units = _Units(
            _POW10[8 - min(8, _decimals(bar.open, bar.high, bar.low, bar.close))],
            _POW10[8 - min(8, _decimals(bar.volume, bar.taker_buy_volume))],
            parse_units(bar.open),
            parse_units(bar.high),
            parse_units(bar.low),
            parse_units(bar.close),
            parse_units(bar.volume),
            parse_units(bar.taker_buy_volume),
            parse_units(bar.quote_volume),
            parse_units(bar.taker_buy_quote_volume),
            _places(bar.open),
            _places(bar.volume),
            _places(bar.quote_volume),
        )
    return units


def bar_units(bar: Bar) -> _Units:
    """A candle's prices and volumes as integers of 1e-8, with its price tick and volume step
    (parsed once per candle; the trades and books derived from it start here)."""
    return _units_of(bar)


def partial_bar(bar: Bar, now_ms: int) -> Bar:
    """The candle ``bar`` as it stood at ``now_ms``, before it closed.

    Derived from the final candle so that the in-progress values are consistent with it: the
    volumes and trade count grow in proportion to the elapsed share, the high only rises and the
    low only falls toward their final values, and open/close/high/low stay on the price tick.
    """
    span = bar.close_time + 1 - bar.open_time
    elapsed = min(max(now_ms - bar.open_time, 0), span - 1)
    if bar.trades == 0:
        return replace(bar, _closed_json=None)
    u = _units_of(bar)
    tick, vstep = u.tick, u.vstep
    o, h, lo, c = u.open, u.high, u.low, u.close
    lerp = o + _toward_zero(_scale(c - o, elapsed, span), tick)
    high = max(o, lerp) + _toward_zero(_scale(h - max(o, c), elapsed, span), tick)
    low = min(o, lerp) - _toward_zero(_scale(min(o, c) - lo, elapsed, span), tick)
    room = min(high - lerp, lerp - low) // tick
    wiggle = (_mix(bar.open_time ^ (now_ms << 1)) % (2 * room + 1) - room) * tick if room else 0
    trades = max(1, bar.trades * elapsed // span)
    volume, taker, quote, taker_quote = u.volume, u.taker, u.quote, u.taker_quote
    pp, vp, qp = u.price_places, u.volume_places, u.quote_places
    return Bar(
        symbol=bar.symbol,
        interval=bar.interval,
        open_time=bar.open_time,
        close_time=bar.close_time,
        open=bar.open,
        high=format_decimals(high, pp),
        low=format_decimals(low, pp),
        close=format_decimals(lerp + wiggle, pp),
        volume=format_decimals(_toward_zero(volume * elapsed // span, vstep), vp),
        quote_volume=format_decimals(quote * elapsed // span, qp),
        trades=trades,
        taker_buy_volume=format_decimals(_toward_zero(taker * elapsed // span, vstep), vp),
        taker_buy_quote_volume=format_decimals(taker_quote * elapsed // span, qp),
        first_trade_id=bar.first_trade_id,
    )


class Market(Protocol):
    """Where candles come from. Open times passed in are aligned to the interval."""

    @property
    def symbols(self) -> tuple[str, ...]: ...

    def bar(self, symbol: str, interval: str, open_time: int) -> Bar | None:
        """The final candle that opens at ``open_time``, or None where there is none."""

    def open_times(
        self, symbol: str, interval: str, start_ms: int, end_ms: int, limit: int, latest: bool
    ) -> list[int]:
        """Open times in ``[start_ms, end_ms]`` that have a candle, ascending: the first
        ``limit`` of them, or the last ``limit`` when ``latest``."""

    def describe(self) -> str: ...


_BASE_PRICE = {"BTCUSDT": 30_000.0, "ETHUSDT": 2_000.0, "BNBUSDT": 300.0, "SOLUSDT": 100.0}
# Notional traded per second in the quote asset, which sets the synthetic volumes.
_NOTIONAL_PER_S = {"BTCUSDT": 10_000.0, "ETHUSDT": 7_000.0}
_DAILY_VOL = 0.03  # a day's log-price standard deviation
# Octaves of value noise, 1 s to ~194 days, each with a random walk's √length amplitude: the
# log price is a deterministic function of time that looks like a random walk at every scale.
_OCTAVES: tuple[tuple[float, float], ...] = tuple(
    (4.0**k, _DAILY_VOL * math.sqrt(4.0**k / 86_400) / 0.82) for k in range(13)
)


@dataclass(frozen=True, slots=True)
class _SymbolParams:
    keys: tuple[int, ...]
    base_price: float
    price_decimals: int
    volume_decimals: int
    volume_per_s: float
    seed: int
    contract_size: int = 0  # COIN-M: USD per contract; 0 on linear markets
    # How strings are written: spot always with 8 decimals, futures at the symbol's precision.
    price_places: int = 8
    volume_places: int = 8
    quote_places: int = 8


class SyntheticMarket:
    """Random-walk candles for any listed symbol at every interval, as a pure function.

    A candle depends on nothing but (seed, symbol, interval, open time): its open and close are
    the price path at its open and close times (so a close equals the next open), the wicks,
    volume, trades and taker share come from a hash of the candle's identity.

    ``style`` is the market whose strings the candles imitate: ``spot`` writes every number
    with 8 decimals; ``usdm`` at the symbol's price and quantity precision; ``coinm`` counts
    volume in whole contracts (100 USD for BTC, 10 for others) and the "quote" volume in the
    base coin, as COIN-M klines do. A COIN-M or delivery name is priced like its pair
    (``BTCUSD_PERP`` like ``BTCUSDT``).
    """

    def __init__(
        self,
        symbols: Sequence[str],
        seed: int = 0,
        listing_ms: int = SYNTHETIC_LISTING_MS,
        style: str = "spot",
    ) -> None:
        self._symbols = tuple(symbols)
        self._seed = seed
        self.listing_ms = listing_ms
        self.style = style
        self._params = {s: self._make_params(s, seed, style) for s in self._symbols}
        self._bars: dict[tuple[str, str, int], Bar] = {}
        self._knots: dict[int, list[tuple[int, float, float]]] = {}

    @property
    def symbols(self) -> tuple[str, ...]:
        return self._symbols

    def describe(self) -> str:
        return "synthetic " + " ".join(self._symbols)

    @staticmethod
    def _make_params(symbol: str, seed: int, style: str = "spot") -> _SymbolParams:
        h = seed & _MASK64
        for ch in symbol.encode():
            h = _mix(h ^ ch)
        like = symbol
        if "_" in symbol:
            pair = symbol.partition("_")[0]
            like = pair + "T" if pair.endswith("USD") else pair
        base = _BASE_PRICE.get(like) or 10 ** (-2 + 5 * _unit(_mix(h + 1)))
        magnitude = math.floor(math.log10(base))
        notional = _NOTIONAL_PER_S.get(like, 200.0)
        price_decimals = min(8, max(2, 5 - magnitude))
        volume_decimals = min(8, max(0, 1 + magnitude))
        keys = tuple(_mix(h + 100 + k) for k in range(len(_OCTAVES)))
        if style == "usdm":
            volume_decimals = min(3, volume_decimals)
            return _SymbolParams(
                keys, base, price_decimals, volume_decimals, notional / base, h, 0,
                price_decimals, volume_decimals, min(8, price_decimals + volume_decimals),
            )  # fmt: skip
        if style == "coinm":
            size = 100 if like.startswith("BTC") else 10
            return _SymbolParams(
                keys, base, price_decimals, 0, notional / size, h, size,
                price_decimals, 0, 8,
            )  # fmt: skip
        return _SymbolParams(keys, base, price_decimals, volume_decimals, notional / base, h)

    def _price(self, p: _SymbolParams, t_ms: int) -> int:
        x = t_ms / 1000.0
        total = 0.0
        # The noise values at an octave's knots change only when ``i`` does, which for the long
        # octaves is rarely: each octave remembers its last knot pair (same values, less work).
        knots = self._knots.setdefault(p.seed, [(-1, 0.0, 0.0)] * len(_OCTAVES))
        for octave, ((length, amplitude), key) in enumerate(zip(_OCTAVES, p.keys, strict=True)):
            pos = x / length
            i = int(pos)
            frac = pos - i
            last_i, a, b = knots[octave]
            if last_i != i:
                a = _unit(_mix(key ^ i))
                b = _unit(_mix(key ^ (i + 1)))
                knots[octave] = (i, a, b)
            total += amplitude * (2.0 * (a + (b - a) * frac) - 1.0)
        step = _POW10[8 - p.price_decimals]
        units = round(p.base_price * math.exp(total) * _POW10[p.price_decimals])
        return max(1, int(units)) * step

    def bar(self, symbol: str, interval: str, open_time: int) -> Bar | None:
        key = (symbol, interval, open_time)
        cached = self._bars.get(key)
        if cached is not None:
            return cached
        p = self._params.get(symbol)
        if p is None or open_time < self.listing_ms:
            return None
        result = self._make_bar(p, symbol, Interval(interval), open_time)
        if len(self._bars) >= _CACHE_SIZE:
            for old in list(itertools.islice(self._bars, _CACHE_SIZE // 2)):
                del self._bars[old]
        self._bars[key] = result
        return result

    def _make_bar(self, p: _SymbolParams, symbol: str, iv: Interval, open_time: int) -> Bar:
        next_open = iv.next_open(open_time)
        seconds = (next_open - open_time) / 1000
        o = self._price(p, open_time)
        c = self._price(p, next_open)
        h0 = _mix(p.seed ^ _mix(open_time) ^ _mix(len(iv.name) * 7919 + ord(iv.name[-1])))
        r = [_unit(_mix(h0 + k)) for k in range(6)]
        tick = _POW10[8 - p.price_decimals]
        wick = o * _DAILY_VOL * math.sqrt(seconds / 86_400) * 0.6
        high = max(o, c) + int(wick * r[0] ** 2) // tick * tick
        low = max(tick, min(o, c) - int(wick * r[1] ** 2) // tick * tick)
        vstep = _POW10[8 - p.volume_decimals]
        volume_f = p.volume_per_s * seconds * (0.4 + 1.2 * r[2])
        volume = max(vstep, int(volume_f * _UNITS) // vstep * vstep)
        vwap = low + int((high - low) * (0.3 + 0.4 * r[3]))
        if p.contract_size:
            # COIN-M: volume in contracts, the "quote" volume in the base coin.
            quote = volume * p.contract_size * _UNITS // vwap
            trade_size = 2.0 * (0.6 + 0.8 * r[5])
        else:
            quote = volume * vwap // _UNITS
            trade_size = p.base_price and (50.0 / p.base_price) * (0.6 + 0.8 * r[5])
        share = 0.35 + 0.3 * r[4]
        taker = int(volume * share) // vstep * vstep
        taker_quote = int(quote * share)
        trades = max(1, int(volume_f / trade_size)) if trade_size else 1
        return Bar(
            symbol=symbol,
            interval=iv.name,
            open_time=open_time,
            close_time=next_open - 1,
            open=format_decimals(o, p.price_places),
            high=format_decimals(high, p.price_places),
            low=format_decimals(low, p.price_places),
            close=format_decimals(c, p.price_places),
            volume=format_decimals(volume, p.volume_places),
            quote_volume=format_decimals(quote, p.quote_places),
            trades=trades,
            taker_buy_volume=format_decimals(taker, p.volume_places),
            taker_buy_quote_volume=format_decimals(taker_quote, p.quote_places),
            first_trade_id=open_time // 10,
        )

    def open_times(
        self, symbol: str, interval: str, start_ms: int, end_ms: int, limit: int, latest: bool
    ) -> list[int]:
        if symbol not in self._params:
            return []
        iv = Interval(interval)
        first = iv.ceil(max(start_ms, self.listing_ms))
        last = iv.floor(end_ms)
        times: list[int] = []
        if first > last:
            return times
        if latest:
            t = last
            while t >= first and len(times) < limit:
                times.append(t)
                t = iv.floor(t - 1)
            times.reverse()
        else:
            t = first
            while t <= last and len(times) < limit:
                times.append(t)
                t = iv.next_open(t)
        return times
