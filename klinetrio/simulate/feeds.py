"""The streams beside klines on the fake exchange: ``<s>@aggTrade``, ``<s>@bookTicker``,
``<s>@ticker`` and ``<s>@depth20`` (also ``@depth5``/``@depth10`` and their ``@100ms`` forms),
one ``Feed`` per subscribed stream, in each market's shape (real frames in
``../shared/data/ws``)::

    spot   aggTrade with M; bookTicker {u,s,b,B,a,A} (no e, no time); depth {lastUpdateId,bids,asks}
    usdm   aggTrade without M; bookTicker with e, T, E; depth in depthUpdate form (E,T,s,U,u,pu,b,a)
    coinm  as usdm, plus the pair (``ps``) in bookTicker, depth and ticker

A trade feed sends every trade of its symbol once its time has come on the exchange clock (a
burst when the clock jumps). The other kinds are samples: one frame per period of exchange time
(``--book-rate``, ``--depth-rate``, 1 s for tickers), but never more than that rate per real
second, so a fast clock thins them out instead of flooding the connection; what a frame says is
a function of its time (see ``books``), so a skipped sample is simply never seen.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import msgspec

from klinetrio.simulate.books import BookModel, Ticker24h
from klinetrio.simulate.config import SimulatorConfig
from klinetrio.simulate.market import mix
from klinetrio.simulate.trades import VenueTrades

_encoder = msgspec.json.Encoder()
# ``btcusdt@depth20@100ms`` → (btcusdt, depth, 20, @100ms)
_STREAM = re.compile(r"^([a-z0-9_]+)@(aggTrade|bookTicker|ticker|depth(5|10|20))(@100ms)?$")
KIND_OF = {"aggTrade": "aggTrade", "bookTicker": "bookTicker", "ticker": "ticker"}


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """What a stream name asks for."""

    symbol: str
    kind: str  # aggTrade, bookTicker, ticker, depth
    levels: int = 0
    fast: bool = False  # @100ms


def parse_stream(name: str) -> StreamSpec | None:
    """``btcusdt@depth20@100ms`` → its spec; None for a name that is not one of these kinds
    (or a ``@100ms`` form of a kind other than depth)."""
    match = _STREAM.match(name)
    if match is None:
        return None
    what = match[2]
    if what.startswith("depth"):
        return StreamSpec(match[1].upper(), "depth", int(match[3]), match[4] is not None)
    if match[4] is not None:
        return None
    return StreamSpec(match[1].upper(), KIND_OF[what])


class Feed:
    """One subscribed stream of another kind on one connection."""

    def __init__(
        self,
        name: str,
        spec: StreamSpec,
        market: str,
        trades: VenueTrades,
        books: BookModel,
        config: SimulatorConfig,
        combined: bool,
        now_ms: int,
    ) -> None:
        self.name = name
        self.spec = spec
        self.kind = spec.kind
        self.market = market
        self._trades = trades
        self._books = books
        self._spot = market == "spot"
        self._pair = spec.symbol.partition("_")[0]
        self._head = b'{"stream":"' + name.encode() + b'","data":' if combined else b""
        self._tail = b"}" if combined else b""
        if spec.kind == "aggTrade":
            self.period = 0
        else:
            rate = {
                "bookTicker": config.book_rate,
                "ticker": 1.0,
                "depth": 10.0 if spec.fast else config.depth_rate,
            }[spec.kind]
            self.period = max(1, round(1000 / rate * max(1.0, config.speed)))
        # Trades: the next time not yet sent. Samples: the next sample time (a phase of the
        # symbol's own, so that thousands of streams do not all fire on the same millisecond).
        key = 0
        for ch in name.encode():
            key = mix(key ^ ch)
        # When, within a candle, this stream derives the next candle's trades (see prefetch).
        self._warm_at = 0.25 + 0.7 * (key % 1024) / 1024
        if self.period:
            phase = key % self.period
            self.next_ms = (now_ms - phase) // self.period * self.period + phase + self.period
            self._due = self.next_ms
        else:
            self.next_ms = now_ms + 1
            self._due = self._next_trade()
        self._previous_u: int | None = None

    def _next_trade(self) -> int:
        # Where no trade is foreseeable (a halt, a replay that is over, a symbol not listed
        # yet) look again a minute of exchange time later.
        due = self._trades.next_time(self.spec.symbol, self.next_ms)
        return self.next_ms + 60_000 if due is None else due

    def due_ms(self) -> int:
        """The exchange time at which this feed has something to send next."""
        return self._due

    def emit(self, now_ms: int, batch: list[bytes], sent: list[str] | None = None) -> int:
        """Append the frames due by ``now_ms`` to ``batch``; how many. Cheap when nothing is
        due: a sender asks every feed at every wake. ``sent`` (with ``--sent-log``) gets a
        ``SYMBOL aggTrade AGG_ID`` line per trade, for the latency of trades from their send."""
        if now_ms < self._due:
            return 0
        if not self.period:
            trades = self._trades.between(self.spec.symbol, self.next_ms, now_ms, 1 << 30)
            self.next_ms = now_ms + 1
            self._due = self._next_trade()
            self._trades.prefetch(self.spec.symbol, now_ms, self._warm_at)
            symbol = self.spec.symbol
            for trade in trades:
                batch.append(self._head + trade.event_json(symbol, now_ms, self._spot) + self._tail)
            if sent is not None:
                sent.extend(f"{symbol} aggTrade {trade.agg_id}" for trade in trades)
            return len(trades)
        t = self.next_ms + (now_ms - self.next_ms) // self.period * self.period
        self.next_ms = self._due = t + self.period
        data = self._sample(t)
        if data is None:
            return 0
        batch.append(self._head + data + self._tail)
        return 1

    def _sample(self, t: int) -> bytes | None:
        symbol = self.spec.symbol
        if self.kind == "ticker":
            ticker = self._books.ticker(symbol, t)
            return None if ticker is None else self._ticker_json(ticker, t)
        levels = self.spec.levels if self.kind == "depth" else 1
        book = self._books.book(symbol, t, levels)
        if book is None:
            return None
        event: dict[str, Any]
        if self.kind == "bookTicker":
            (b, bq), (a, aq) = book.bids[0], book.asks[0]
            if self._spot:
                event = {"u": book.update_id, "s": symbol, "b": b, "B": bq, "a": a, "A": aq}
            elif self.market == "usdm":
                event = {"e": "bookTicker", "u": book.update_id, "s": symbol, "b": b, "B": bq,
                         "a": a, "A": aq, "T": t, "E": t + 3}  # fmt: skip
            else:
                event = {"u": book.update_id, "e": "bookTicker", "s": symbol, "ps": self._pair,
                         "b": b, "B": bq, "a": a, "A": aq, "T": t, "E": t + 3}  # fmt: skip
            return _encoder.encode(event)
        if self._spot:
            event = {"lastUpdateId": book.update_id, "bids": book.bids, "asks": book.asks}
            return _encoder.encode(event)
        previous = self._previous_u
        if previous is None:
            previous = self._books.update_id(symbol, t - self.period)
        self._previous_u = book.update_id
        event = {"e": "depthUpdate", "E": t + 3, "T": t, "s": symbol}
        if self.market == "coinm":
            event["ps"] = self._pair
        event.update(
            {"U": previous + 1, "u": book.update_id, "pu": previous, "b": book.bids,
             "a": book.asks}
        )  # fmt: skip
        return _encoder.encode(event)

    def _ticker_json(self, k: Ticker24h, t: int) -> bytes:
        event: dict[str, Any] = {"e": "24hrTicker", "E": t, "s": k.symbol}
        if self.market == "coinm":
            event["ps"] = self._pair
        event.update({"p": k.price_change, "P": k.price_change_percent, "w": k.weighted_avg_price})
        if self._spot:
            book = self._books.book(k.symbol, t, 1)
            bids = book.bids if book is not None else []
            asks = book.asks if book is not None else []
            (b, bq) = bids[0] if bids else ("0", "0")
            (a, aq) = asks[0] if asks else ("0", "0")
            event.update({"x": k.prev_close, "c": k.last, "Q": k.last_qty, "b": b, "B": bq,
                          "a": a, "A": aq})  # fmt: skip
        else:
            event.update({"c": k.last, "Q": k.last_qty})
        event.update(
            {"o": k.open, "h": k.high, "l": k.low, "v": k.volume, "q": k.quote_volume,
             "O": k.open_time, "C": k.close_time, "F": k.first_id, "L": k.last_id,
             "n": k.count}
        )  # fmt: skip
        return _encoder.encode(event)


def garble(frame: bytes, half: bool) -> bytes:
    """A frame of another kind made unreadable: cut in half (invalid JSON), or its first
    integer field quoted (ill-typed: ``"a":"123"``)."""
    if half:
        return frame[: len(frame) // 2]
    return _FIRST_INT.sub(rb'":"\1"', frame, count=1)


_FIRST_INT = re.compile(rb'":(-?\d+)')


__all__ = ["Feed", "StreamSpec", "garble", "parse_stream"]
