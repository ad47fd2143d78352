"""The fake Binance behind ``klinetrio simulate``: kline streams and REST on one port.

Why it exists: the collector's hard parts (gap healing across reconnects, the 24-hour close,
rate limits, a candle in progress) cannot be exercised against the real exchange on demand, and
tests must not wait for real minutes to pass. The simulator runs an *exchange clock*
(``--start`` + real elapsed x ``--speed``) that every answer follows, so a test at ``--speed 600``
sees a 1m candle close every 0.1 s, and it injects faults on request.

What it serves (same paths, bodies and limits as Binance spot)::

    /stream?streams=a/b  /stream  /ws/<stream>  /ws       kline streams (combined or raw)
    /api/v3/klines  /api/v3/time  /api/v3/exchangeInfo  /api/v3/ping

Candles come from a *market*: ``SyntheticMarket`` (the default) makes every candle a pure
function of (seed, symbol, interval, open time), so WebSocket, REST and a restarted simulator
agree byte for byte; ``ReplayMarket`` (``--data DIR``) serves data.binance.vision archives,
holes included. A candle in progress is derived from its final candle (see ``partial_bar``), so
its volume only grows, its high only rises, and the closed frame equals the REST row.

Per WebSocket connection, one nursery holds four tasks: the sender (one ``send_many`` per wake,
woken by the next candle close or update tick), the command reader (SUBSCRIBE & co., at most
5 messages a second), the keepalive (pings, pong deadline) and, with ``--close-after``, the
lifetime timer. When any of them ends, the connection ends.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import itertools
import math
import random
import re
import time
import zipfile
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import msgspec
import trio
from loguru import logger

from klinetrio.errors import SettingsError
from klinetrio.intervals import DAY_MS, INTERVALS, Interval
from klinetrio.models import format_ms, parse_utc_ms
from klinetrio.web import Request, Response, WebSocket, WebSocketClosed, serve_http

__all__ = [
    "Bar",
    "ExchangeClock",
    "Market",
    "ReplayMarket",
    "Simulator",
    "SimulatorConfig",
    "SimulatorStatistics",
    "SyntheticMarket",
    "WeightLimiter",
    "add_arguments",
    "config_from_args",
    "load_replay",
    "parse_kline_csv",
    "parse_rest_errors",
    "parse_start",
    "partial_bar",
    "serve_simulator",
]

_UNITS = 100_000_000  # prices and volumes are integers of 1e-8 while we compute
_MASK64 = (1 << 64) - 1
_POW10: tuple[int, ...] = tuple(10**k for k in range(9))
# BTCUSDT's first spot candle opened 2017-08-17 04:00 UTC; synthetic history starts there.
_SYNTHETIC_LISTING_MS = 1_502_942_400_000
_MAX_LIMIT = 1000
_DEFAULT_LIMIT = 500
# Requests a client may still send after a 429 before it is banned (in-flight requests race).
_BACKOFF_TOLERANCE = 2
_CACHE_SIZE = 200_000

_encoder = msgspec.json.Encoder()


# --- configuration ---------------------------------------------------------------------------

# Update frames of a connection are spread over this many phases (see ``_run_sender``).
UPDATE_SLICES = 20


class SimulatorConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Everything ``klinetrio simulate`` can be told; each field is one command-line flag.

    Times marked *real* are seconds of wall time; everything a client sees (event times,
    ``/api/v3/time``, which candles exist) follows the exchange clock instead.
    """

    host: str = "127.0.0.1"
    port: int = 9650
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")
    start_ms: int | None = None  # None: now (synthetic) or first candle + 1 day (replay)
    speed: float = 1.0
    data_dir: str | None = None
    seed: int = 0
    updates_per_second: float = 1.0  # x=false frames per stream per real second; 0: none
    ping_interval: float = 20.0  # real
    pong_timeout: float = 60.0  # real
    weight_limit: int = 6000
    weight_window: float = 60.0  # real
    drop_after: int | None = None  # abort each connection after N kline frames
    close_after: float | None = None  # real; serverShutdown, then a clean close
    shutdown_grace: float = 0.0  # real seconds between serverShutdown and the close
    drop_spread: float = 0.0  # each connection drops after drop_after x [1 - spread, 1 + spread]
    sent_log: str | None = None  # append "symbol interval open_ms sent_wall_ms" per closed frame
    garbage: float = 0.0  # fraction of kline frames replaced by junk
    duplicates: float = 0.0  # fraction of closed frames sent twice
    no_pong: bool = False  # stop answering client pings
    rest_errors: tuple[tuple[int, float], ...] = ()  # (status, fraction) of REST requests
    max_streams: int = 1024
    max_messages_per_second: int = 5


def _drop_point(config: SimulatorConfig, rng: random.Random) -> int | None:
    """After how many frames a connection is dropped (None: never)."""
    if config.drop_after is None:
        return None
    spread = config.drop_after * config.drop_spread
    return max(1, round(config.drop_after + rng.uniform(-spread, spread)))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``simulate`` flags to ``parser``; ``config_from_args`` turns them into a config."""
    d = SimulatorConfig()
    add = parser.add_argument
    add("--host", default=d.host, help="address to listen on (default %(default)s)")
    add("--port", type=int, default=d.port, help="port; 0 picks a free one (default %(default)s)")
    add("--symbols", default=",".join(d.symbols), help="synthetic symbols (default %(default)s)")
    add(
        "--start",
        help="exchange time at start, UTC date or datetime (default: now, or "
        "the first candle of --data + 1 day)",
    )
    add("--speed", type=float, default=d.speed, help="exchange seconds per real second")
    add("--data", metavar="DIR", help="replay data.binance.vision kline CSV/zip files from DIR")
    add("--seed", type=int, default=d.seed, help="seed of synthetic candles and faults")
    add(
        "--updates-per-second",
        type=float,
        default=d.updates_per_second,
        help="unfinished-candle frames per stream per real second (0: closed frames only)",
    )
    add("--ping-interval", type=float, default=d.ping_interval, help="real seconds between pings")
    add(
        "--pong-timeout",
        type=float,
        default=d.pong_timeout,
        help="close a connection whose pong is this late (real seconds)",
    )
    add("--weight-limit", type=int, default=d.weight_limit, help="REST request weight per window")
    add(
        "--weight-window",
        type=float,
        default=d.weight_window,
        help="REST weight window in real seconds",
    )
    add("--drop-after", type=int, metavar="N", help="abort each connection after N kline frames")
    add(
        "--close-after",
        type=float,
        metavar="S",
        help="send serverShutdown and close each connection after S real seconds",
    )
    add(
        "--drop-spread",
        type=float,
        default=d.drop_spread,
        metavar="F",
        help="with --drop-after: each connection drops after N x [1-F, 1+F] frames (0..1)",
    )
    add(
        "--sent-log",
        metavar="FILE",
        help="append one line per closed frame sent: symbol, interval, open time and the wall-clock"
        " ms it left (for measuring latency from the send)",
    )
    add(
        "--shutdown-grace",
        type=float,
        default=d.shutdown_grace,
        metavar="S",
        help="with --close-after: real seconds between serverShutdown and the close",
    )
    add(
        "--garbage",
        type=float,
        default=d.garbage,
        metavar="P",
        help="fraction of frames replaced by invalid JSON or ill-typed fields",
    )
    add(
        "--duplicates",
        type=float,
        default=d.duplicates,
        metavar="P",
        help="fraction of closed-candle frames sent twice",
    )
    add("--no-pong", action="store_true", help="do not answer client pings")
    add(
        "--rest-errors",
        default="",
        metavar="SPEC",
        help="fractions of REST requests answered with an error, e.g. 429:0.05,500:0.05",
    )


def config_from_args(ns: argparse.Namespace) -> SimulatorConfig:
    """Validate the parsed flags; bad values raise ``SettingsError`` with one clear line."""
    symbols = tuple(s.strip().upper() for s in str(ns.symbols).split(",") if s.strip())
    for symbol in symbols:
        if not re.fullmatch(r"[A-Z0-9]{2,30}", symbol):
            raise SettingsError(f"invalid symbol {symbol!r}")
    if not symbols:
        raise SettingsError("--symbols names no symbol")
    if ns.speed <= 0:
        raise SettingsError("--speed must be positive")
    for name in ("garbage", "duplicates", "drop_spread"):
        value = getattr(ns, name)
        if not 0 <= value <= 1:
            raise SettingsError(f"--{name.replace('_', '-')} must be between 0 and 1")
    for name in ("updates_per_second", "ping_interval", "pong_timeout", "weight_window"):
        if getattr(ns, name) < 0 or (name != "updates_per_second" and getattr(ns, name) == 0):
            raise SettingsError(f"--{name.replace('_', '-')} must be positive")
    if ns.weight_limit < 1:
        raise SettingsError("--weight-limit must be positive")
    if ns.shutdown_grace < 0:
        raise SettingsError("--shutdown-grace must not be negative")
    if ns.drop_after is not None and ns.drop_after < 1:
        raise SettingsError("--drop-after must be at least 1")
    if ns.close_after is not None and ns.close_after <= 0:
        raise SettingsError("--close-after must be positive")
    if ns.data is not None and not Path(ns.data).is_dir():
        raise SettingsError(f"--data {ns.data!r} is not a directory")
    return SimulatorConfig(
        host=ns.host,
        port=ns.port,
        symbols=symbols,
        start_ms=parse_start(ns.start) if ns.start else None,
        speed=ns.speed,
        data_dir=ns.data,
        seed=ns.seed,
        updates_per_second=ns.updates_per_second,
        ping_interval=ns.ping_interval,
        pong_timeout=ns.pong_timeout,
        weight_limit=ns.weight_limit,
        weight_window=ns.weight_window,
        drop_after=ns.drop_after,
        close_after=ns.close_after,
        shutdown_grace=ns.shutdown_grace,
        drop_spread=ns.drop_spread,
        sent_log=ns.sent_log,
        garbage=ns.garbage,
        duplicates=ns.duplicates,
        no_pong=ns.no_pong,
        rest_errors=parse_rest_errors(ns.rest_errors or ""),
    )


def parse_start(text: str) -> int:
    """``2024-01-01``, ``2024-01-01T12:00``, ``...Z``/``+00:00`` or epoch milliseconds → ms (UTC)."""
    return parse_utc_ms(text, "--start")


def parse_rest_errors(text: str) -> tuple[tuple[int, float], ...]:
    """``429:0.05,500:0.05,418:0`` → ((429, 0.05), (500, 0.05)); fractions must sum to ≤ 1."""
    result: list[tuple[int, float]] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        status, sep, fraction = item.partition(":")
        try:
            code, share = int(status), float(fraction)
        except ValueError:
            raise SettingsError(
                f"invalid --rest-errors item {item!r}; expected STATUS:FRACTION, e.g. 429:0.05"
            ) from None
        if not sep or not 100 <= code <= 599 or not 0 <= share <= 1:
            raise SettingsError(f"invalid --rest-errors item {item!r}")
        if share > 0:
            result.append((code, share))
    if sum(share for _, share in result) > 1:
        raise SettingsError("--rest-errors fractions add up to more than 1")
    return tuple(result)


# --- candles (pure) --------------------------------------------------------------------------


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


def _mix(x: int) -> int:
    """SplitMix64's finalizer: a cheap, well-spread 64-bit hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _unit(h: int) -> float:
    """A hash → [0, 1)."""
    return (h >> 11) * (1.0 / 9007199254740992.0)


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
    tick = _POW10[8 - min(8, _decimals(bar.open, bar.high, bar.low, bar.close))]
    vstep = _POW10[8 - min(8, _decimals(bar.volume, bar.taker_buy_volume))]
    o, h, lo, c = (parse_units(x) for x in (bar.open, bar.high, bar.low, bar.close))
    lerp = o + _toward_zero(_scale(c - o, elapsed, span), tick)
    high = max(o, lerp) + _toward_zero(_scale(h - max(o, c), elapsed, span), tick)
    low = min(o, lerp) - _toward_zero(_scale(min(o, c) - lo, elapsed, span), tick)
    room = min(high - lerp, lerp - low) // tick
    wiggle = (_mix(bar.open_time ^ (now_ms << 1)) % (2 * room + 1) - room) * tick if room else 0
    trades = max(1, bar.trades * elapsed // span)
    volume = parse_units(bar.volume)
    taker = parse_units(bar.taker_buy_volume)
    quote = parse_units(bar.quote_volume)
    taker_quote = parse_units(bar.taker_buy_quote_volume)
    return Bar(
        symbol=bar.symbol,
        interval=bar.interval,
        open_time=bar.open_time,
        close_time=bar.close_time,
        open=bar.open,
        high=format_units(high),
        low=format_units(low),
        close=format_units(lerp + wiggle),
        volume=format_units(_toward_zero(volume * elapsed // span, vstep)),
        quote_volume=format_units(quote * elapsed // span),
        trades=trades,
        taker_buy_volume=format_units(_toward_zero(taker * elapsed // span, vstep)),
        taker_buy_quote_volume=format_units(taker_quote * elapsed // span),
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


class SyntheticMarket:
    """Random-walk candles for any listed symbol at every interval, as a pure function.

    A candle depends on nothing but (seed, symbol, interval, open time): its open and close are
    the price path at its open and close times (so a close equals the next open), the wicks,
    volume, trades and taker share come from a hash of the candle's identity.
    """

    def __init__(
        self, symbols: Sequence[str], seed: int = 0, listing_ms: int = _SYNTHETIC_LISTING_MS
    ) -> None:
        self._symbols = tuple(symbols)
        self._seed = seed
        self.listing_ms = listing_ms
        self._params = {s: self._make_params(s, seed) for s in self._symbols}
        self._bars: dict[tuple[str, str, int], Bar] = {}

    @property
    def symbols(self) -> tuple[str, ...]:
        return self._symbols

    def describe(self) -> str:
        return "synthetic " + " ".join(self._symbols)

    @staticmethod
    def _make_params(symbol: str, seed: int) -> _SymbolParams:
        h = seed & _MASK64
        for ch in symbol.encode():
            h = _mix(h ^ ch)
        base = _BASE_PRICE.get(symbol) or 10 ** (-2 + 5 * _unit(_mix(h + 1)))
        magnitude = math.floor(math.log10(base))
        notional = _NOTIONAL_PER_S.get(symbol, 200.0)
        return _SymbolParams(
            keys=tuple(_mix(h + 100 + k) for k in range(len(_OCTAVES))),
            base_price=base,
            price_decimals=min(8, max(2, 5 - magnitude)),
            volume_decimals=min(8, max(0, 1 + magnitude)),
            volume_per_s=notional / base,
            seed=h,
        )

    def _price(self, p: _SymbolParams, t_ms: int) -> int:
        x = t_ms / 1000.0
        total = 0.0
        for (length, amplitude), key in zip(_OCTAVES, p.keys, strict=True):
            pos = x / length
            i = int(pos)
            frac = pos - i
            a = _unit(_mix(key ^ i))
            b = _unit(_mix(key ^ (i + 1)))
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
        quote = volume * vwap // _UNITS
        share = 0.35 + 0.3 * r[4]
        taker = int(volume * share) // vstep * vstep
        taker_quote = int(quote * share)
        trade_size = p.base_price and (50.0 / p.base_price) * (0.6 + 0.8 * r[5])
        trades = max(1, int(volume_f / trade_size)) if trade_size else 1
        return Bar(
            symbol=symbol,
            interval=iv.name,
            open_time=open_time,
            close_time=next_open - 1,
            open=format_units(o),
            high=format_units(high),
            low=format_units(low),
            close=format_units(c),
            volume=format_units(volume),
            quote_volume=format_units(quote),
            trades=trades,
            taker_buy_volume=format_units(taker),
            taker_buy_quote_volume=format_units(taker_quote),
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


class ReplayMarket:
    """Candles read from data.binance.vision archives; what the files lack does not exist."""

    def __init__(self, series: dict[tuple[str, str], list[Bar]], source: str = "") -> None:
        self._times: dict[tuple[str, str], list[int]] = {}
        self._bars: dict[tuple[str, str], dict[int, Bar]] = {}
        for key, bars in series.items():
            by_time = {b.open_time: b for b in bars}
            self._bars[key] = by_time
            self._times[key] = sorted(by_time)
        self._symbols = tuple(sorted({symbol for symbol, _ in series}))
        self._source = source

    @property
    def symbols(self) -> tuple[str, ...]:
        return self._symbols

    @property
    def series(self) -> list[tuple[str, str]]:
        return sorted(self._times)

    @property
    def first_open_ms(self) -> int | None:
        return min((times[0] for times in self._times.values() if times), default=None)

    def describe(self) -> str:
        series = " ".join(f"{s} {i}" for s, i in self.series)
        return f"replay of {self._source}: {series}"

    def bar(self, symbol: str, interval: str, open_time: int) -> Bar | None:
        bars = self._bars.get((symbol, interval))
        return bars.get(open_time) if bars else None

    def open_times(
        self, symbol: str, interval: str, start_ms: int, end_ms: int, limit: int, latest: bool
    ) -> list[int]:
        times = self._times.get((symbol, interval), [])
        lo = bisect.bisect_left(times, start_ms)
        hi = bisect.bisect_right(times, end_ms)
        if latest:
            return times[max(lo, hi - limit) : hi]
        return times[lo : min(hi, lo + limit)]


_FILE_NAME = re.compile(r"^([A-Z0-9]+)-(1s|1m|3m|5m|15m|30m|1h|2h|4h|6h|8h|12h|1d|3d|1w|1mo|1M)-")


def _to_ms(t: int) -> int:
    # Spot archives switched to microseconds on 2025-01-01; a ms timestamp stays below 1e14
    # until the year 5138, a µs one is above it since 1973.
    return t // 1000 if t >= 100_000_000_000_000 else t


def parse_kline_csv(text: str, symbol: str, interval: str) -> list[Bar]:
    """Rows of a data.binance.vision kline CSV (header row optional, ms or µs) as ``Bar``s."""
    bars: list[Bar] = []
    for line in text.splitlines():
        cells = line.strip().split(",")
        if len(cells) < 11 or not cells[0].strip().isdigit():
            continue  # blank line or header row
        trades = int(cells[8])
        open_time = _to_ms(int(cells[0]))
        bars.append(
            Bar(
                symbol=symbol,
                interval=interval,
                open_time=open_time,
                close_time=_to_ms(int(cells[6])),
                open=cells[1],
                high=cells[2],
                low=cells[3],
                close=cells[4],
                volume=cells[5],
                quote_volume=cells[7],
                trades=trades,
                taker_buy_volume=cells[9],
                taker_buy_quote_volume=cells[10],
                first_trade_id=open_time // 10 if trades else -1,
            )
        )
    return bars


def _read_archive(path: Path) -> Iterator[str]:
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if name.endswith(".csv"):
                    yield archive.read(name).decode()
    else:
        yield path.read_text()


def load_replay(directory: str | Path) -> ReplayMarket:
    """Read every ``SYMBOL-INTERVAL-*.csv``/``.zip`` under ``directory`` (blocking: run it in a
    worker thread). Later files win where two files hold the same candle."""
    root = Path(directory)
    series: dict[tuple[str, str], list[Bar]] = {}
    for path in sorted(root.rglob("*")):
        match = _FILE_NAME.match(path.name)
        if not match or path.suffix not in (".csv", ".zip") or not path.is_file():
            continue
        symbol, interval = match[1], "1M" if match[2] == "1mo" else match[2]
        for text in _read_archive(path):
            series.setdefault((symbol, interval), []).extend(
                parse_kline_csv(text, symbol, interval)
            )
    if not series:
        raise SettingsError(f"no SYMBOL-INTERVAL-*.csv or .zip kline files in {str(root)!r}")
    return ReplayMarket(series, str(root))


# --- clock, rate limits, statistics ----------------------------------------------------------


class ExchangeClock:
    """Exchange time = ``start_ms`` + (real time since ``origin``) x ``speed``; real time is
    Trio's clock, so tests may drive it with an autojump clock."""

    def __init__(self, start_ms: int, speed: float, origin: float) -> None:
        self.start_ms = start_ms
        self.speed = speed
        self.origin = origin

    def now_ms(self, real: float | None = None) -> int:
        if real is None:
            real = trio.current_time()
        # The epsilon keeps now_ms(real_at(t)) == t despite float rounding.
        return math.floor(self.start_ms + (real - self.origin) * self.speed * 1000 + 1e-6)

    def real_at(self, t_ms: int) -> float:
        """The real (Trio) time at which the exchange clock reads ``t_ms``."""
        return self.origin + (t_ms - self.start_ms) / (self.speed * 1000)


@dataclass(slots=True)
class _ClientWeight:
    window_start: float = -math.inf
    used: int = 0
    backoff_until: float = -math.inf
    ignored: int = 0
    banned_until: float = -math.inf


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the limiter decided: ``status`` 200, 429 or 418, and for how long to back off."""

    status: int
    used: int
    retry_after: float = 0.0
    until: float = 0.0


class WeightLimiter:
    """Binance's REQUEST_WEIGHT accounting per client address, in fixed windows.

    Over the limit → 429 until the window ends. A client that keeps sending during that back-off
    (more than ``_BACKOFF_TOLERANCE`` requests, allowing for requests already in flight) is
    banned for two windows → 418 until then. Pure: the caller passes the real time.
    """

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._clients: dict[str, _ClientWeight] = {}

    def used(self, client: str, now: float) -> int:
        state = self._clients.get(client)
        if state is None or now >= state.window_start + self.window:
            return 0
        return state.used

    def admit(self, client: str, weight: int, now: float) -> Verdict:
        state = self._clients.setdefault(client, _ClientWeight())
        if now >= state.window_start + self.window:
            state.window_start = math.floor(now / self.window) * self.window
            state.used = 0
        if now < state.banned_until:
            return Verdict(418, state.used, state.banned_until - now, state.banned_until)
        if now < state.backoff_until:
            state.ignored += 1
            if state.ignored > _BACKOFF_TOLERANCE:
                state.banned_until = now + 2 * self.window
                state.backoff_until = -math.inf
                return Verdict(418, state.used, state.banned_until - now, state.banned_until)
            return Verdict(429, state.used, state.backoff_until - now, state.backoff_until)
        state.ignored = 0
        state.used += weight
        if state.used > self.limit:
            state.backoff_until = state.window_start + self.window
            return Verdict(429, state.used, state.backoff_until - now, state.backoff_until)
        return Verdict(200, state.used)


@dataclass(slots=True)
class SimulatorStatistics:
    """Counters since start (a snapshot from ``Simulator.statistics()``)."""

    connections_total: int = 0
    connections_open: int = 0
    streams_subscribed: int = 0
    frames_sent: int = 0  # kline frames, garbage and duplicates included
    closed_frames_sent: int = 0
    garbage_frames: int = 0
    duplicate_frames: int = 0
    dropped_connections: int = 0  # --drop-after
    shutdown_closes: int = 0  # --close-after
    pong_timeouts: int = 0
    message_rate_closes: int = 0
    rest_requests: int = 0
    rest_429: int = 0
    rest_418: int = 0
    rest_injected_errors: int = 0


# --- the server ------------------------------------------------------------------------------

_KLINE_WEIGHT = 2
_ROUTE_WEIGHT = {
    "/api/v3/klines": _KLINE_WEIGHT,
    "/api/v3/exchangeInfo": 20,
    "/api/v3/time": 1,
    "/api/v3/ping": 1,
}
_QUOTES = ("FDUSD", "USDT", "USDC", "BUSD", "TUSD", "BTC", "ETH", "BNB", "EUR", "TRY", "BRL")


def _api_error(code: int, msg: str, status: int = 400) -> Response:
    return Response.json({"code": code, "msg": msg}, status)


def _mandatory(name: str) -> Response:
    return _api_error(
        -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    )


def _illegal(name: str) -> Response:
    return _api_error(
        -1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'."
    )


def _split_symbol(symbol: str) -> tuple[str, str]:
    for quote in _QUOTES:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)], quote
    return symbol[:-4], symbol[-4:]


class Simulator:
    """The fake exchange. ``serve()`` runs it until cancelled; ``statistics()`` counts.

    Tests can pass their own ``market``; otherwise ``serve()`` builds the synthetic market, or
    loads ``config.data_dir`` in a worker thread.
    """

    def __init__(self, config: SimulatorConfig, market: Market | None = None) -> None:
        self.config = config
        self._market = market
        self._clock: ExchangeClock | None = None
        self._stats = SimulatorStatistics()
        self.sent: list[str] = []  # lines for --sent-log, written out by _write_sent_log
        self._limiter = WeightLimiter(config.weight_limit, config.weight_window)
        self._rest_rng = random.Random(config.seed)
        self._connection_ids = itertools.count(1)

    def statistics(self) -> SimulatorStatistics:
        return replace(self._stats)

    @property
    def market(self) -> Market:
        if self._market is None:
            raise RuntimeError("the simulator is not serving yet")
        return self._market

    @property
    def clock(self) -> ExchangeClock:
        if self._clock is None:
            raise RuntimeError("the simulator is not serving yet")
        return self._clock

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, call ``task_status.started(port)`` with the bound port, serve until cancelled."""
        config = self.config
        start_ms = config.start_ms
        if self._market is None:
            if config.data_dir is not None:
                replay = await trio.to_thread.run_sync(load_replay, config.data_dir)
                self._market = replay
                if start_ms is None and replay.first_open_ms is not None:
                    start_ms = replay.first_open_ms + DAY_MS
            else:
                if start_ms is None:
                    start_ms = int(time.time() * 1000)  # the one read of the local clock
                listing = min(_SYNTHETIC_LISTING_MS, Interval("1d").floor(start_ms) - 30 * DAY_MS)
                self._market = SyntheticMarket(config.symbols, config.seed, listing)
        if start_ms is None:
            start_ms = int(time.time() * 1000)
        self._clock = ExchangeClock(start_ms, config.speed, trio.current_time())
        serve = partial(
            serve_http,
            self._handle_http,
            config.host,
            config.port,
            websocket_handler=self._handle_websocket,
        )
        with logger.contextualize(component="simulate"):
            async with trio.open_nursery() as nursery:
                port: int = await nursery.start(serve)
                logger.info(
                    "simulator listening on {host}:{port} (speed x{speed:g}, {source}); "
                    "exchange time {now}",
                    host=config.host,
                    port=port,
                    speed=config.speed,
                    source=self._market.describe(),
                    now=format_ms(start_ms),
                )
                if config.sent_log is not None:
                    nursery.start_soon(self._write_sent_log, config.sent_log)
                task_status.started(port)

    async def _write_sent_log(self, path: str) -> None:
        """Append the recorded send times to ``path`` from a worker thread, twice a second."""

        def append(lines: list[str]) -> None:
            with open(path, "a", encoding="ascii") as file:
                file.writelines(lines)

        try:
            while True:
                await trio.sleep(0.5)
                if self.sent:
                    lines, self.sent = self.sent, []
                    await trio.to_thread.run_sync(append, lines)
        finally:
            if self.sent:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(append, self.sent)
                self.sent = []

    async def _handle_http(self, request: Request) -> Response:
        stats = self._stats
        weight = _ROUTE_WEIGHT.get(request.path)
        if weight is None:
            return Response.text("404 Not Found\n", 404)
        stats.rest_requests += 1
        now = trio.current_time()
        verdict = self._limiter.admit(request.client, weight, now)
        header = ("X-MBX-USED-WEIGHT-1M", str(verdict.used))
        if verdict.status == 418:
            stats.rest_418 += 1
            logger.warning(
                "answered 418 (IP banned) to {client}: {count} so far",
                client=request.client,
                count=stats.rest_418,
            )
            return self._banned(verdict).with_headers(header)
        if verdict.status == 429:
            stats.rest_429 += 1
            logger.warning(
                "answered 429 (too much weight) to {client}: {count} so far",
                client=request.client,
                count=stats.rest_429,
            )
            return self._too_much(verdict).with_headers(header)
        injected = self._injected_error()
        if injected is not None:
            stats.rest_injected_errors += 1
            stats.rest_429 += injected.status == 429
            stats.rest_418 += injected.status == 418
            return injected.with_headers(header)
        if request.method not in ("GET", "HEAD"):
            return _api_error(-1000, "Method not allowed.", 405).with_headers(header)
        if request.path == "/api/v3/klines":
            response = self._klines(request)
        elif request.path == "/api/v3/time":
            response = Response.json({"serverTime": self.clock.now_ms()})
        elif request.path == "/api/v3/ping":
            response = Response.json({})
        else:
            response = self._exchange_info(request)
        logger.debug(
            "rest {path} {status} weight {used}",
            path=request.path,
            status=response.status,
            used=verdict.used,
        )
        return response.with_headers(header)

    def _retry_after(self, seconds: float) -> tuple[str, str]:
        return ("Retry-After", str(max(1, math.ceil(seconds))))

    def _too_much(self, verdict: Verdict) -> Response:
        window = self.config.weight_window
        per = "1 MINUTE" if window == 60 else f"{window:g} SECOND"
        return _api_error(
            -1003,
            f"Too much request weight used; current limit is {self.config.weight_limit} "
            f"request weight per {per}. Please use the websocket for live updates to avoid "
            "polling the API.",
            429,
        ).with_headers(self._retry_after(verdict.retry_after))

    def _banned(self, verdict: Verdict) -> Response:
        until_ms = self.clock.now_ms(verdict.until)
        return _api_error(
            -1003,
            f"Way too much request weight used; IP banned until {until_ms}. Please use the "
            "websocket for live updates to avoid bans.",
            418,
        ).with_headers(self._retry_after(verdict.retry_after))

    def _injected_error(self) -> Response | None:
        if not self.config.rest_errors:
            return None
        roll = self._rest_rng.random()
        for status, share in self.config.rest_errors:
            if roll < share:
                now = trio.current_time()
                if status == 429:
                    return self._too_much(Verdict(429, 0, 1.0, now + 1))
                if status == 418:
                    return self._banned(Verdict(418, 0, 1.0, now + 1))
                if status >= 500:
                    return _api_error(
                        -1000, "An unknown error occured while processing the request.", status
                    )
                return _api_error(-1000, "Injected error.", status)
            roll -= share
        return None

    def _klines(self, request: Request) -> Response:
        query = request.query
        symbol = query.get("symbol", "")
        interval = query.get("interval", "")
        if not symbol:
            return _mandatory("symbol")
        if not interval:
            return _mandatory("interval")
        if symbol not in self.market.symbols:
            return _api_error(-1121, "Invalid symbol.")
        if interval not in INTERVALS:
            return _api_error(-1120, "Invalid interval.")
        numbers: dict[str, int | None] = {}
        for name in ("startTime", "endTime", "limit"):
            text = query.get(name)
            if text is None or text == "":
                numbers[name] = None
            elif text.isdigit() and len(text) <= 20:
                numbers[name] = int(text)
            else:
                return _illegal(name)
        limit = numbers["limit"] if numbers["limit"] is not None else _DEFAULT_LIMIT
        if not 1 <= limit <= _MAX_LIMIT:
            return _api_error(-1130, "Data sent for parameter 'limit' is not valid.")
        start, end = numbers["startTime"], numbers["endTime"]
        if start is not None and end is not None and start > end:
            return _api_error(-1023, "Start time is greater than end time.")
        now = self.clock.now_ms()
        last = now if end is None else min(end, now)
        times = self.market.open_times(
            symbol, interval, start or 0, last, limit, latest=start is None
        )
        rows = []
        for t in times:
            bar = self.market.bar(symbol, interval, t)
            if bar is None:
                continue
            rows.append((partial_bar(bar, now) if bar.close_time >= now else bar).rest_row())
        return Response.json(rows)

    def _exchange_info(self, request: Request) -> Response:
        symbols = list(self.market.symbols)
        if "symbol" in request.query:
            wanted = [request.query["symbol"]]
        elif "symbols" in request.query:
            try:
                wanted = msgspec.json.decode(request.query["symbols"], type=list[str])
            except msgspec.DecodeError:
                return _api_error(-1100, "Illegal characters found in parameter 'symbols'.")
        else:
            wanted = symbols
        if any(s not in symbols for s in wanted):
            return _api_error(-1121, "Invalid symbol.")
        window = self.config.weight_window
        limits = [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE" if window == 60 else "SECOND",
                "intervalNum": 1 if window == 60 else max(1, round(window)),
                "limit": self.config.weight_limit,
            },
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
            {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
            {
                "rateLimitType": "RAW_REQUESTS",
                "interval": "MINUTE",
                "intervalNum": 5,
                "limit": 61000,
            },
        ]
        infos = []
        for symbol in wanted:
            base, quote = _split_symbol(symbol)
            infos.append(
                {
                    "symbol": symbol,
                    "status": "TRADING",
                    "baseAsset": base,
                    "baseAssetPrecision": 8,
                    "quoteAsset": quote,
                    "quotePrecision": 8,
                    "quoteAssetPrecision": 8,
                    "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"],
                    "icebergAllowed": True,
                    "ocoAllowed": True,
                    "isSpotTradingAllowed": True,
                    "isMarginTradingAllowed": False,
                    "filters": [],
                    "permissions": ["SPOT"],
                }
            )
        return Response.json(
            {
                "timezone": "UTC",
                "serverTime": self.clock.now_ms(),
                "rateLimits": limits,
                "exchangeFilters": [],
                "symbols": infos,
            }
        )

    async def _handle_websocket(self, request: Request, ws: WebSocket) -> None:
        path = request.path.rstrip("/") or "/"
        if path == "/stream":
            combined = True
            names = [n for n in request.query.get("streams", "").split("/") if n]
        elif path == "/ws" or path.startswith("/ws/"):
            combined = False
            names = [n for n in path[4:].split("/") if n]
        else:
            await ws.reject(404, b"404 Not Found\n")
            return
        if len(names) > self.config.max_streams:
            await ws.reject(400, b"too many streams\n")
            return
        ws.answer_pings = not self.config.no_pong
        await ws.accept()
        connection = _Connection(self, ws, combined, next(self._connection_ids))
        with logger.contextualize(component="simulate", connection=connection.id):
            self._stats.connections_total += 1
            self._stats.connections_open += 1
            logger.info(
                "client connected from {client} to {path}", client=request.client, path=path
            )
            try:
                await connection.run(names)
            finally:
                self._stats.connections_open -= 1
                self._stats.streams_subscribed -= len(connection.subs)
                logger.info("client disconnected after {frames} frames", frames=connection.frames)


@dataclass(slots=True)
class _Sub:
    """One subscribed stream on one connection, with its frame prefix pre-encoded."""

    name: str
    symbol: str
    interval: Interval | None  # None: a name we do not serve (Binance accepts it, sends nothing)
    head: bytes = b""
    mid: bytes = b""
    tail: bytes = b""


@dataclass(slots=True)
class _Group:
    """The streams of one interval: their candles open and close together."""

    interval: Interval
    open_ms: int
    subs: list[_Sub] = field(default_factory=list)


class _Connection:
    """One WebSocket client of the simulator."""

    def __init__(self, sim: Simulator, ws: WebSocket, combined: bool, conn_id: int) -> None:
        self.sim = sim
        self.ws = ws
        self.combined = combined
        self.id = conn_id
        self.subs: dict[str, _Sub] = {}
        self.groups: dict[str, _Group] = {}
        self.frames = 0
        self.changed = trio.Event()
        self.rng = random.Random(sim.config.seed * 1_000_003 + conn_id)
        self.drop_at = _drop_point(sim.config, self.rng)
        self.closed_pending: list[str] = []  # closed frames of the batch being sent (--sent-log)

    async def run(self, initial: list[str]) -> None:
        self._subscribe(initial)
        if initial:
            logger.info("subscribed {count} streams", count=len(initial))
        config = self.sim.config
        async with trio.open_nursery() as nursery:

            async def until_done(task: Callable[[], Awaitable[None]]) -> None:
                with contextlib.suppress(WebSocketClosed):
                    await task()
                nursery.cancel_scope.cancel()

            nursery.start_soon(until_done, self._run_sender)
            nursery.start_soon(until_done, self._run_commands)
            nursery.start_soon(until_done, self._run_keepalive)
            if config.close_after is not None:
                nursery.start_soon(until_done, self._run_lifetime)

    # --- subscriptions ---------------------------------------------------------------------

    def _make_sub(self, name: str) -> _Sub:
        symbol_part, sep, interval_name = name.partition("@kline_")
        symbol = symbol_part.upper()
        served = (
            sep
            and symbol_part == symbol_part.lower()
            and symbol in self.sim.market.symbols
            and interval_name in INTERVALS
        )
        if not served:
            return _Sub(name, symbol, None)
        event = b'{"e":"kline","E":'
        head = b'{"stream":"' + name.encode() + b'","data":' + event if self.combined else event
        return _Sub(
            name,
            symbol,
            Interval(interval_name),
            head=head,
            mid=b',"s":"' + symbol.encode() + b'","k":',
            tail=b"}}" if self.combined else b"}",
        )

    def _subscribe(self, names: Sequence[str]) -> None:
        now_ms = self.sim.clock.now_ms()
        for name in names:
            if name in self.subs:
                continue
            sub = self._make_sub(name)
            self.subs[name] = sub
            self.sim._stats.streams_subscribed += 1
            if sub.interval is None:
                continue
            group = self.groups.get(sub.interval.name)
            if group is None:
                group = _Group(sub.interval, sub.interval.floor(now_ms))
                self.groups[sub.interval.name] = group
            group.subs.append(sub)
        self._wake()

    def _unsubscribe(self, names: Sequence[str]) -> None:
        for name in names:
            sub = self.subs.pop(name, None)
            if sub is None:
                continue
            self.sim._stats.streams_subscribed -= 1
            if sub.interval is not None:
                group = self.groups[sub.interval.name]
                group.subs.remove(sub)
                if not group.subs:
                    del self.groups[sub.interval.name]
        self._wake()

    def _wake(self) -> None:
        self.changed.set()

    # --- the sender ------------------------------------------------------------------------

    async def _run_sender(self) -> None:
        """Wake at the next candle close or update tick, send everything due in one batch."""
        config = self.sim.config
        clock = self.sim.clock
        # Each stream gets its updates at a phase of its own, as on Binance, whose per-stream
        # pushes are not aligned: a tick sends one slice of the streams, so thousands of update
        # frames flow evenly instead of leaving together once a second.
        rate = config.updates_per_second * UPDATE_SLICES
        period = 1.0 / rate if rate > 0 else math.inf
        next_update = trio.current_time() + period
        tick = 0
        while True:
            if self.changed.is_set():
                self.changed = trio.Event()
            now = trio.current_time()
            now_ms = clock.now_ms(now)
            batch: list[bytes] = []
            closed = 0
            for group in self.groups.values():
                closed += self._emit_closed(group, now_ms, batch)
            if now >= next_update:
                for group in self.groups.values():
                    self._emit_partial(group, now_ms, batch, tick % UPDATE_SLICES)
                tick += 1
                next_update += period
                if next_update <= now:
                    next_update = now + period
            if batch and not await self._send(batch, closed):
                return
            deadline = next_update
            for group in self.groups.values():
                deadline = min(deadline, clock.real_at(group.interval.next_open(group.open_ms)))
            deadline = max(deadline, now + 0.0002)
            with trio.move_on_at(deadline):
                await self.changed.wait()

    def _emit_closed(self, group: _Group, now_ms: int, batch: list[bytes]) -> int:
        market = self.sim.market
        interval = group.interval
        count = 0
        while True:
            close_time = interval.close_time(group.open_ms)
            if now_ms <= close_time:
                return count
            event_time = close_time + 1 + min(now_ms - close_time - 1, 10)
            e = str(event_time).encode()
            for sub in group.subs:
                bar = market.bar(sub.symbol, interval.name, group.open_ms)
                if bar is None:
                    continue
                frame = b"".join((sub.head, e, sub.mid, bar.kline_json(True), sub.tail))
                batch.append(frame)
                count += 1
                if self.sim.config.sent_log is not None:
                    self.closed_pending.append(f"{sub.symbol} {interval.name} {group.open_ms}")
                if self.sim.config.duplicates and self.rng.random() < self.sim.config.duplicates:
                    batch.append(frame)
                    self.sim._stats.duplicate_frames += 1
                    count += 1
            group.open_ms = interval.next_open(group.open_ms)

    def _emit_partial(self, group: _Group, now_ms: int, batch: list[bytes], phase: int) -> None:
        market = self.sim.market
        interval = group.interval
        e = str(now_ms).encode()
        for sub in group.subs[phase::UPDATE_SLICES]:
            bar = market.bar(sub.symbol, interval.name, group.open_ms)
            if bar is None:
                continue
            k = partial_bar(bar, now_ms).kline_json(False)
            batch.append(b"".join((sub.head, e, sub.mid, k, sub.tail)))

    async def _send(self, batch: list[bytes], closed: int) -> bool:
        """Send a batch with the configured faults; False once the connection was dropped."""
        config = self.sim.config
        stats = self.sim._stats
        if config.garbage:
            for index, frame in enumerate(batch):
                if self.rng.random() < config.garbage:
                    batch[index] = self._garble(frame)
                    stats.garbage_frames += 1
        drop = False
        if self.drop_at is not None and self.frames + len(batch) >= self.drop_at:
            batch = batch[: self.drop_at - self.frames]
            closed = sum(1 for frame in batch if b'"x":true' in frame)
            drop = True
        await self.ws.send_many(batch)
        if self.closed_pending:
            sent_ms = time.time_ns() // 1_000_000  # wall clock: what the database's clock reads
            self.sim.sent.extend(f"{key} {sent_ms}\n" for key in self.closed_pending)
            self.closed_pending.clear()
        self.frames += len(batch)
        stats.frames_sent += len(batch)
        stats.closed_frames_sent += closed
        logger.debug("sent {count} frames ({closed} closed)", count=len(batch), closed=closed)
        if drop:
            stats.dropped_connections += 1
            logger.info("dropping the connection after {frames} frames", frames=self.frames)
            await self.ws.abort()
            return False
        return True

    def _garble(self, frame: bytes) -> bytes:
        if self.rng.random() < 0.5:
            return frame[: len(frame) // 2]  # invalid JSON
        if b'"x":true' in frame:
            return frame.replace(b'"x":true', b'"x":"true"', 1)  # ill-typed field
        return frame.replace(b'"t":', b'"t":"', 1).replace(b',"T":', b'","T":', 1)

    # --- commands, keepalive, lifetime -----------------------------------------------------

    async def _run_commands(self) -> None:
        """Answer SUBSCRIBE/UNSUBSCRIBE/LIST_SUBSCRIPTIONS; more than the allowed messages per
        second closes the connection, as on Binance."""
        config = self.sim.config
        recent: deque[float] = deque()
        while True:
            message = await self.ws.receive()
            if message is None:
                return
            now = trio.current_time()
            recent.append(now)
            while recent[0] <= now - 1.0:
                recent.popleft()
            if len(recent) > config.max_messages_per_second:
                self.sim._stats.message_rate_closes += 1
                logger.warning(
                    "closing: more than {limit} messages a second",
                    limit=config.max_messages_per_second,
                )
                await self.ws.close(1008, "Too many requests")
                return
            await self.ws.send_text(_encoder.encode(self._command(message)))

    def _command(self, message: str) -> dict[str, Any]:
        try:
            request = msgspec.json.decode(message)
        except msgspec.DecodeError as exc:
            return {"error": {"code": 3, "msg": f"Invalid JSON: {exc}"}, "id": None}
        if not isinstance(request, dict):
            return {"error": {"code": 3, "msg": "Invalid JSON: expected an object"}, "id": None}
        request_id = request.get("id")
        if isinstance(request_id, bool) or not isinstance(request_id, int) or request_id < 0:
            return _ws_error("Invalid request: request ID must be an unsigned integer", None)
        method = request.get("method")
        params = request.get("params", [])
        if method not in ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS"):
            return _ws_error(
                f"Invalid request: unknown variant {method!r}, expected one of SUBSCRIBE, "
                "UNSUBSCRIBE, LIST_SUBSCRIPTIONS",
                request_id,
            )
        if method == "LIST_SUBSCRIPTIONS":
            return {"result": list(self.subs), "id": request_id}
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            return _ws_error("Invalid request: params must be a list of stream names", request_id)
        if method == "SUBSCRIBE":
            new = [p for p in dict.fromkeys(params) if p not in self.subs]
            if len(self.subs) + len(new) > self.sim.config.max_streams:
                return _ws_error(
                    f"Invalid request: too many streams (max {self.sim.config.max_streams} "
                    "per connection)",
                    request_id,
                )
            self._subscribe(new)
            logger.info("subscribed {count} streams", count=len(new))
        else:
            self._unsubscribe(params)
            logger.info("unsubscribed {count} streams", count=len(params))
        return {"result": None, "id": request_id}

    async def _run_keepalive(self) -> None:
        """Ping every ``ping_interval``; close if the oldest unanswered ping is too old."""
        config = self.sim.config
        ws = self.ws
        unanswered_since: float | None = None
        for n in itertools.count(1):
            await trio.sleep(config.ping_interval)
            now = trio.current_time()
            if unanswered_since is not None and ws.last_pong_at >= unanswered_since:
                unanswered_since = None
            if unanswered_since is not None and now - unanswered_since >= config.pong_timeout:
                self.sim._stats.pong_timeouts += 1
                logger.warning(
                    "closing: no pong for {seconds:.1f} s", seconds=now - unanswered_since
                )
                await ws.close(1008, "pong timeout")
                return
            if unanswered_since is None:
                unanswered_since = now
            await ws.ping(str(n).encode())

    async def _run_lifetime(self) -> None:
        """Binance's 24-hour limit in miniature: serverShutdown, then a clean close."""
        assert self.sim.config.close_after is not None
        await trio.sleep(self.sim.config.close_after)
        event = {"e": "serverShutdown", "E": self.sim.clock.now_ms()}
        message = {"stream": "serverShutdown", "data": event} if self.combined else event
        self.sim._stats.shutdown_closes += 1
        logger.info(
            "closing after {seconds} s with serverShutdown", seconds=self.sim.config.close_after
        )
        await self.ws.send_text(_encoder.encode(message))
        # Binance announces, then closes a while later: a client that rotates at once overlaps.
        await trio.sleep(self.sim.config.shutdown_grace)
        await self.ws.close(1000, "server shutdown")


def _ws_error(msg: str, request_id: int | None) -> dict[str, Any]:
    return {"error": {"code": 2, "msg": msg}, "id": request_id}


async def serve_simulator(
    config: SimulatorConfig, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run the fake exchange until cancelled; ``task_status.started()`` gets the bound port."""
    await Simulator(config).serve(task_status=task_status)
