"""Aggregate trades of the fake exchange (pure): derived from the candles, or replayed.

Why derived trades are a function of time: WebSocket, REST and the archives must agree on every
trade, a restarted simulator too, and a test must be able to compute what it should have
received. So each candle of a symbol's *base* interval (1m for synthetic candles, the finest
interval a replay has) holds a number of trades fixed in advance, and the trades of a candle
are a pure function of (seed, symbol, candle)::

    agg ids      consecutive per symbol: a candle's first id is the count of the trades before
                 it (a constant per candle for synthetic markets, a prefix sum for replays)
    trade ids    each aggregate holds 1..n trades, and a candle's aggregates hold 3 trades per
                 aggregate in total, so ``f``/``l`` run on without a gap across candles
    prices       on the candle's tick inside [low, high]: the first at the open, the last at
                 the close, one at the high and one at the low
    quantities   integer units that add up to the candle's volume exactly
    times        inside the candle, never decreasing

How many trades a candle holds: ``--trade-rate`` per second of the candle (synthetic: exactly;
replay: at most that many, at most the candle's trade count, none in an empty candle). The
derived trades do not try to match a candle's trade count, kline ``f``/``L`` ids or taker
volumes; their quantities do match its volume and their prices its range.

``ReplayedTrades`` serves trades read from data.binance.vision aggTrades archives instead: ids,
prices, quantities and times as recorded (see ``replay``; the files: ``trade_files``).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from klinetrio.simulate.market import (
    Bar,
    Market,
    bar_units,
    format_decimals,
    format_units,
    mix,
)

RAW_PER_AGG = 3  # trades per aggregate trade, on average over a candle
_CACHE_CANDLES = 8_192
_SCAN_CANDLES = 20_000  # candles a query walks at most (a long halt, a delisted symbol)
_MASK = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class Trade:
    """One aggregate trade; prices and quantities are the exact strings served."""

    agg_id: int
    price: str
    quantity: str
    first_id: int
    last_id: int
    time: int
    buyer_is_maker: bool
    best_match: bool = True

    def rest_json(self, spot: bool) -> bytes:
        """The ``/api/v3/aggTrades`` object (futures: without ``M``)."""
        m = b"true" if self.buyer_is_maker else b"false"
        head = b'{"a":%d,"p":"%s","q":"%s","f":%d,"l":%d,"T":%d,"m":%s' % (
            self.agg_id, self.price.encode(), self.quantity.encode(), self.first_id,
            self.last_id, self.time, m,
        )  # fmt: skip
        if spot:
            return head + (b',"M":true}' if self.best_match else b',"M":false}')
        return head + b"}"

    def event_json(self, symbol: str, event_ms: int, spot: bool) -> bytes:
        """The ``aggTrade`` event in Binance's field order: spot ``e,E,s,a,...,m,M``, futures
        ``e,E,a,s,...,m`` (as the captured frames have them)."""
        m = b"true" if self.buyer_is_maker else b"false"
        tail = b'"p":"%s","q":"%s","f":%d,"l":%d,"T":%d,"m":%s' % (
            self.price.encode(), self.quantity.encode(), self.first_id, self.last_id, self.time, m,
        )  # fmt: skip
        if spot:
            head = b'{"e":"aggTrade","E":%d,"s":"%s","a":%d,' % (
                event_ms, symbol.encode(), self.agg_id,
            )  # fmt: skip
            return head + tail + (b',"M":true}' if self.best_match else b',"M":false}')
        head = b'{"e":"aggTrade","E":%d,"a":%d,"s":"%s",' % (event_ms, self.agg_id, symbol.encode())
        return head + tail + b"}"


def split_units(total: int, parts: int, key: int) -> list[int]:
    """``total`` split into ``parts`` positive integers that add up to it exactly, shaped by
    the hash ``key`` (some large, most small, as trade sizes are). Needs ``total >= parts``."""
    if parts <= 0:
        return []
    if total < parts:
        raise ValueError(f"cannot split {total} into {parts} positive parts")
    weights = []
    for j in range(parts):
        h = mix(key ^ (j * 0x9E3779B1))
        # A heavy tail: most weights small, a few up to 64 times larger.
        weights.append(1 + (h & 0xFF) * (1 << ((h >> 8) % 7)) // 16)
    spare = total - parts
    whole = sum(weights)
    result = []
    done = 0
    running = 0
    for w in weights:
        running += w
        upto = spare * running // whole
        result.append(1 + upto - done)
        done = upto
    return result


def derive_trades(
    bar: Bar, count: int, first_agg_id: int, key: int, best_match: bool = True
) -> list[Trade]:
    """The ``count`` trades of candle ``bar`` (see the module docstring); pure."""
    u = bar_units(bar)
    if count <= 0 or bar.trades == 0:
        return []
    volume = u.volume
    count = min(count, volume)
    if count <= 0:
        return []
    qstep, places = u.vstep, u.volume_places
    while volume // qstep < count and qstep > 1:
        qstep //= 10
        places = max(places, 8 - len(str(qstep)) + 1)
    quantities = split_units(volume // qstep, count, key ^ 0x51)
    leftover = volume - (volume // qstep) * qstep  # a volume off the step: the last takes it
    raws = split_units(RAW_PER_AGG * count, count, key ^ 0xA7)
    tick = u.tick
    o, h, lo, c = u.open, u.high, u.low, u.close
    prices = []
    for j in range(count):
        x = j / (count - 1) if count > 1 else 1.0
        r = ((mix(key ^ (j << 20) ^ 0x3C) >> 11) / 9007199254740992.0) * 2 - 1
        p = o + (c - o) * x + (h - lo) * 0.35 * r
        p = min(h, max(lo, int(p) // tick * tick))
        prices.append(p)
    prices[0] = o if count > 1 else c
    prices[-1] = c
    if count >= 4:
        at_high = 1 + mix(key ^ 0x77) % (count - 2)
        at_low = 1 + mix(key ^ 0x78) % (count - 2)
        if at_low == at_high:
            at_low = at_high + 1 if at_high + 1 < count - 1 else at_high - 1
        prices[at_high], prices[at_low] = h, lo
    span = bar.close_time + 1 - bar.open_time
    trades = []
    raw = RAW_PER_AGG * first_agg_id
    price_places = u.price_places
    texts: dict[int, str] = {}  # a candle's trades share a few hundred prices
    for j in range(count):
        hj = mix(key ^ (j << 24) ^ 0x5D)
        frac = (hj >> 11) / 9007199254740992.0
        time = bar.open_time + int(span * (j + frac)) // count
        q = quantities[j] * qstep + (leftover if j == count - 1 else 0)
        trades.append(
            Trade(
                agg_id=first_agg_id + j,
                price=texts.get(prices[j])
                or texts.setdefault(prices[j], format_decimals(prices[j], price_places)),
                quantity=format_decimals(q, places) if places < 8 else format_units(q),
                first_id=raw,
                last_id=raw + raws[j] - 1,
                time=min(time, bar.close_time),
                buyer_is_maker=bool(hj & 1),
                best_match=best_match,
            )
        )
        raw += raws[j]
    return trades


class TradeSource(Protocol):
    """Where a market's trades come from. Times are ms; ``now_ms`` bounds what has happened."""

    def between(self, symbol: str, start_ms: int, end_ms: int, limit: int) -> list[Trade]:
        """The first ``limit`` trades with ``start_ms <= time <= end_ms``, in id order."""

    def from_id(self, symbol: str, first_id: int, limit: int, now_ms: int) -> list[Trade]:
        """Up to ``limit`` trades with ``agg_id >= first_id`` and ``time <= now_ms``."""

    def latest(self, symbol: str, now_ms: int, limit: int) -> list[Trade]:
        """The last ``limit`` trades with ``time <= now_ms``, oldest first."""

    def next_time(self, symbol: str, after_ms: int) -> int | None:
        """The time of the first trade at ``after_ms`` or later (None: none soon)."""


class _Plan(Protocol):
    """The base candles of one symbol and how many trades each holds."""

    def candle_at(self, t_ms: int) -> int | None:
        """The open time of the first candle that closes at ``t_ms`` or later."""

    def at_or_before(self, t_ms: int) -> int | None:
        """The open time of the last candle that opens at ``t_ms`` or earlier."""

    def after(self, open_ms: int) -> int | None: ...

    def before(self, open_ms: int) -> int | None: ...

    def first_id(self, open_ms: int) -> int: ...

    def count(self, open_ms: int) -> int: ...

    def of_id(self, agg_id: int) -> int | None:
        """The open time of the candle holding ``agg_id`` (or the first one after it)."""


class _EvenPlan:
    """Fixed-length candles from ``listing_ms`` on, ``per_candle`` trades in each."""

    def __init__(self, listing_ms: int, length_ms: int, per_candle: int) -> None:
        self.listing_ms = listing_ms
        self.length = length_ms
        self.per_candle = per_candle

    def candle_at(self, t_ms: int) -> int | None:
        t = max(t_ms, self.listing_ms)
        return self.listing_ms + (t - self.listing_ms) // self.length * self.length

    def at_or_before(self, t_ms: int) -> int | None:
        return self.candle_at(t_ms) if t_ms >= self.listing_ms else None

    def after(self, open_ms: int) -> int | None:
        return open_ms + self.length

    def before(self, open_ms: int) -> int | None:
        previous = open_ms - self.length
        return previous if previous >= self.listing_ms else None

    def first_id(self, open_ms: int) -> int:
        return 1 + (open_ms - self.listing_ms) // self.length * self.per_candle

    def count(self, open_ms: int) -> int:
        return self.per_candle

    def of_id(self, agg_id: int) -> int | None:
        index = max(0, agg_id - 1) // self.per_candle
        return self.listing_ms + index * self.length


class _TablePlan:
    """The candles a replay has, with a prefix sum of their trade counts."""

    def __init__(self, opens: list[int], closes: list[int], counts: list[int]) -> None:
        self.opens = opens
        self.closes = closes
        self.counts = counts
        self.firsts = [1, *itertools.accumulate(c for c in counts)][:-1] if counts else []
        self._index = {t: i for i, t in enumerate(opens)}

    def candle_at(self, t_ms: int) -> int | None:
        i = bisect.bisect_left(self.closes, t_ms)
        return self.opens[i] if i < len(self.opens) else None

    def at_or_before(self, t_ms: int) -> int | None:
        i = bisect.bisect_right(self.opens, t_ms) - 1
        return self.opens[i] if i >= 0 else None

    def after(self, open_ms: int) -> int | None:
        i = self._index[open_ms] + 1
        return self.opens[i] if i < len(self.opens) else None

    def before(self, open_ms: int) -> int | None:
        i = self._index[open_ms] - 1
        return self.opens[i] if i >= 0 else None

    def first_id(self, open_ms: int) -> int:
        return self.firsts[self._index[open_ms]]

    def count(self, open_ms: int) -> int:
        return self.counts[self._index[open_ms]]

    def of_id(self, agg_id: int) -> int | None:
        i = max(0, bisect.bisect_right(self.firsts, agg_id) - 1)
        return self.opens[i] if self.opens else None


class DerivedTrades:
    """Trades derived from a market's candles, ``rate`` per second of each base candle.

    ``listing_ms`` is where a synthetic market's history (and its agg ids) begin; ``intervals``
    names, per replayed symbol, the finest interval the replay has (synthetic symbols use 1m).
    """

    def __init__(
        self,
        market: Market,
        *,
        rate: float,
        seed: int,
        listing_ms: int,
        spot: bool,
        tables: dict[str, tuple[str, list[Bar]]] | None = None,
    ) -> None:
        self._market = market
        self._rate = rate
        self._seed = seed
        self._spot = spot
        self._plans: dict[str, tuple[str, _Plan]] = {}
        per_minute = max(1, round(rate * 60))
        for symbol in market.symbols:
            table = (tables or {}).get(symbol)
            if table is None:
                self._plans[symbol] = ("1m", _EvenPlan(listing_ms, 60_000, per_minute))
                continue
            interval, bars = table
            counts = [self._table_count(bar) for bar in bars]
            plan = _TablePlan([b.open_time for b in bars], [b.close_time for b in bars], counts)
            self._plans[symbol] = (interval, plan)
        self._cache: dict[tuple[str, int], tuple[list[Trade], list[int]]] = {}

    def _table_count(self, bar: Bar) -> int:
        if bar.trades == 0:
            return 0
        seconds = (bar.close_time + 1 - bar.open_time) / 1000
        return max(0, min(max(1, round(self._rate * seconds)), bar.trades, bar_units(bar).volume))

    def base_interval(self, symbol: str) -> str | None:
        plan = self._plans.get(symbol)
        return None if plan is None else plan[0]

    def candle_trades(self, symbol: str, open_ms: int) -> list[Trade]:
        return self._candle(symbol, open_ms)[0]

    def _candle(self, symbol: str, open_ms: int) -> tuple[list[Trade], list[int]]:
        """The trades of a candle and their times (cached: streams ask every few ms)."""
        key = (symbol, open_ms)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        interval, plan = self._plans[symbol]
        bar = self._market.bar(symbol, interval, open_ms)
        if bar is None:
            trades: list[Trade] = []
        else:
            h = self._seed & _MASK
            for ch in symbol.encode():
                h = mix(h ^ ch)
            trades = derive_trades(
                bar, plan.count(open_ms), plan.first_id(open_ms), mix(h ^ open_ms), self._spot
            )
        if len(self._cache) >= _CACHE_CANDLES:
            for old in list(itertools.islice(self._cache, _CACHE_CANDLES // 2)):
                del self._cache[old]
        entry = self._cache[key] = (trades, [t.time for t in trades])
        return entry

    def _forward(self, symbol: str, open_ms: int | None, until_ms: int) -> Iterator[list[Trade]]:
        plan = self._plans[symbol][1]
        for _ in range(_SCAN_CANDLES):
            if open_ms is None or open_ms > until_ms:
                return
            yield self.candle_trades(symbol, open_ms)
            open_ms = plan.after(open_ms)

    def prefetch(self, symbol: str, t_ms: int, phase: float) -> None:
        """Derive the candle after the one at ``t_ms`` once ``phase`` (0..1) of this one has
        passed. Why: a busy candle takes milliseconds to derive, and every symbol's candle
        turns at the same instant; streams that warm the next one each at a phase of their
        own spread that work over the minute instead of stalling the loop at its turn."""
        plan = self._plans.get(symbol)
        if plan is None:
            return
        open_ms = plan[1].candle_at(t_ms)
        if open_ms is None:
            return
        following = plan[1].after(open_ms)
        if following is None or (symbol, following) in self._cache:
            return
        if t_ms >= open_ms + (following - open_ms) * phase:
            self._candle(symbol, following)

    def between(self, symbol: str, start_ms: int, end_ms: int, limit: int) -> list[Trade]:
        if symbol not in self._plans or start_ms > end_ms:
            return []
        plan = self._plans[symbol][1]
        open_ms = plan.candle_at(start_ms)
        result: list[Trade] = []
        for _ in range(_SCAN_CANDLES):
            if open_ms is None or open_ms > end_ms or len(result) >= limit:
                break
            trades, times = self._candle(symbol, open_ms)
            lo = bisect.bisect_left(times, start_ms)
            hi = bisect.bisect_right(times, end_ms)
            result.extend(trades[lo : min(hi, lo + limit - len(result))])
            open_ms = plan.after(open_ms)
        return result

    def from_id(self, symbol: str, first_id: int, limit: int, now_ms: int) -> list[Trade]:
        if symbol not in self._plans:
            return []
        plan = self._plans[symbol][1]
        result: list[Trade] = []
        for trades in self._forward(symbol, plan.of_id(first_id), now_ms):
            for trade in trades:
                if trade.agg_id >= first_id:
                    if trade.time > now_ms:
                        return result
                    result.append(trade)
                    if len(result) >= limit:
                        return result
        return result

    def latest(self, symbol: str, now_ms: int, limit: int) -> list[Trade]:
        if symbol not in self._plans or limit <= 0:
            return []
        plan = self._plans[symbol][1]
        open_ms = plan.at_or_before(now_ms)
        chunks: list[list[Trade]] = []
        have = 0
        for _ in range(_SCAN_CANDLES):
            if open_ms is None or have >= limit:
                break
            candle, times = self._candle(symbol, open_ms)
            hi = bisect.bisect_right(times, now_ms)
            trades = candle[max(0, hi - (limit - have)) : hi]
            chunks.append(trades)
            have += len(trades)
            open_ms = plan.before(open_ms)
        if len(chunks) == 1:
            return chunks[0]
        return [t for chunk in reversed(chunks) for t in chunk]

    def next_time(self, symbol: str, after_ms: int) -> int | None:
        if symbol not in self._plans:
            return None
        plan = self._plans[symbol][1]
        open_ms = plan.candle_at(after_ms)
        for _ in range(3):
            if open_ms is None:
                return None
            times = self._candle(symbol, open_ms)[1]
            i = bisect.bisect_left(times, after_ms)
            if i < len(times):
                return times[i]
            open_ms = plan.after(open_ms)
        return None


class VenueTrades:
    """A market's trades: replayed where an archive was given, derived everywhere else."""

    def __init__(
        self,
        derived: DerivedTrades,
        replayed: TradeSource | None = None,
        replayed_symbols: Sequence[str] = (),
    ) -> None:
        self.derived = derived
        self.replayed = replayed
        self._replayed = frozenset(replayed_symbols) if replayed is not None else frozenset()

    @property
    def replayed_symbols(self) -> tuple[str, ...]:
        return tuple(sorted(self._replayed))

    def _of(self, symbol: str) -> TradeSource:
        if symbol in self._replayed and self.replayed is not None:
            return self.replayed
        return self.derived

    def between(self, symbol: str, start_ms: int, end_ms: int, limit: int) -> list[Trade]:
        return self._of(symbol).between(symbol, start_ms, end_ms, limit)

    def from_id(self, symbol: str, first_id: int, limit: int, now_ms: int) -> list[Trade]:
        return self._of(symbol).from_id(symbol, first_id, limit, now_ms)

    def latest(self, symbol: str, now_ms: int, limit: int) -> list[Trade]:
        return self._of(symbol).latest(symbol, now_ms, limit)

    def next_time(self, symbol: str, after_ms: int) -> int | None:
        return self._of(symbol).next_time(symbol, after_ms)

    def prefetch(self, symbol: str, t_ms: int, phase: float) -> None:
        """See ``DerivedTrades.prefetch``; replayed trades are all in memory already."""
        if symbol not in self._replayed:
            self.derived.prefetch(symbol, t_ms, phase)

    def last_at(self, symbol: str, t_ms: int) -> Trade | None:
        found = self.latest(symbol, t_ms, 1)
        return found[0] if found else None

    def first_at(self, symbol: str, t_ms: int, until_ms: int) -> Trade | None:
        found = self.between(symbol, t_ms, until_ms, 1)
        return found[0] if found else None


__all__ = [
    "RAW_PER_AGG",
    "DerivedTrades",
    "Trade",
    "TradeSource",
    "VenueTrades",
    "derive_trades",
    "split_units",
]
