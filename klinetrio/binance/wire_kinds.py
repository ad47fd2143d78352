"""Wire formats of the stream kinds beside klines: aggTrade, bookTicker, 24hrTicker, depth20.

Nothing here does I/O. Prices and quantities stay the exact decimal strings Binance sent; depth
levels stay the exact ``[price, qty]`` string pairs. Each event turns into a *row*: a tuple in
the column order of its table (see ``store.events``), times as integers (ms since the epoch).

Quirks of the wire (real frames in ``../shared/data/ws``):

* spot ``bookTicker`` frames are ``{"u","s","b","B","a","A"}`` only: no event time. Their time
  is the receive time on the exchange's clock estimate (the caller passes it); futures frames
  carry ``E`` and ``T`` and their ``T`` (transaction time) is used.
* spot ``@depth20`` frames are ``{"lastUpdateId","bids","asks"}`` with no symbol and no time
  (the stream name says the symbol, the receive time is the time); futures partial depth comes
  in ``depthUpdate`` form (``E``, ``T``, ``u``, ``b``, ``a``).
* spot ``aggTrade`` frames carry ``M`` (best match), futures frames do not.
"""

from __future__ import annotations

from typing import Literal

import msgspec

Kind = Literal["kline", "aggTrade", "bookTicker", "ticker", "depth"]
KINDS: tuple[Kind, ...] = ("kline", "aggTrade", "bookTicker", "ticker", "depth")
# The Binance stream suffix of each kind beside klines: ``<symbol>@<suffix>``.
STREAM_SUFFIX: dict[Kind, str] = {
    "aggTrade": "aggTrade",
    "bookTicker": "bookTicker",
    "ticker": "ticker",
    "depth": "depth20",
}
KIND_OF_SUFFIX: dict[str, Kind] = {v: k for k, v in STREAM_SUFFIX.items()}
# The table of each kind beside klines.
TABLE_OF: dict[Kind, str] = {
    "aggTrade": "trades",
    "bookTicker": "book_tickers",
    "ticker": "tickers",
    "depth": "depth_snapshots",
}

# trades: market, symbol, time_ms, agg_id, price, quantity, first_trade_id, last_trade_id,
# buyer_is_maker, source
TradeRow = tuple[str, str, int, int, str, str, int, int, bool, str]
# book_tickers: market, symbol, time_ms, update_id, bid_price, bid_qty, ask_price, ask_qty
BookTickerRow = tuple[str, str, int, int, str, str, str, str]
# tickers: market, symbol, time_ms, open, high, low, last, volume, quote_volume,
# price_change_percent, weighted_avg_price, trades
TickerRow = tuple[str, str, int, str, str, str, str, str, str, str, str, int]
# depth_snapshots: market, symbol, time_ms, last_update_id, bids (JSON text), asks (JSON text)
DepthRow = tuple[str, str, int, int, str, str]
Row = TradeRow | BookTickerRow | TickerRow | DepthRow


def stream_name(symbol: str, kind: Kind) -> str:
    """Binance's stream name of ``kind`` for ``symbol``, e.g. ``btcusdt@aggTrade``."""
    return f"{symbol.lower()}@{STREAM_SUFFIX[kind]}"


class AggTrade(msgspec.Struct, frozen=True, gc=False):
    """An ``aggTrade`` event (spot and futures)."""

    event_time: int = msgspec.field(name="E")
    symbol: str = msgspec.field(name="s")
    agg_id: int = msgspec.field(name="a")
    price: str = msgspec.field(name="p")
    quantity: str = msgspec.field(name="q")
    first_trade_id: int = msgspec.field(name="f")
    last_trade_id: int = msgspec.field(name="l")
    trade_time: int = msgspec.field(name="T")
    buyer_is_maker: bool = msgspec.field(name="m")
    best_match: bool = msgspec.field(name="M", default=True)

    def row(self, market: str, source: str = "ws") -> TradeRow:
        return (
            market,
            self.symbol,
            self.trade_time,
            self.agg_id,
            self.price,
            self.quantity,
            self.first_trade_id,
            self.last_trade_id,
            self.buyer_is_maker,
            source,
        )


class RestAggTrade(msgspec.Struct, frozen=True, gc=False):
    """One row of ``GET /api/v3/aggTrades`` (``/fapi/v1``, ``/dapi/v1``): the same letters, no
    event time or symbol."""

    agg_id: int = msgspec.field(name="a")
    price: str = msgspec.field(name="p")
    quantity: str = msgspec.field(name="q")
    first_trade_id: int = msgspec.field(name="f")
    last_trade_id: int = msgspec.field(name="l")
    trade_time: int = msgspec.field(name="T")
    buyer_is_maker: bool = msgspec.field(name="m")
    best_match: bool = msgspec.field(name="M", default=True)

    def row(self, market: str, symbol: str, source: str = "rest") -> TradeRow:
        return (
            market,
            symbol,
            self.trade_time,
            self.agg_id,
            self.price,
            self.quantity,
            self.first_trade_id,
            self.last_trade_id,
            self.buyer_is_maker,
            source,
        )


class BookTicker(msgspec.Struct, frozen=True, gc=False):
    """A ``bookTicker`` event. Spot frames have neither ``e`` nor ``E``/``T``: ``time`` is 0
    there and the receive time stands in (see ``row``)."""

    update_id: int = msgspec.field(name="u")
    symbol: str = msgspec.field(name="s")
    bid_price: str = msgspec.field(name="b")
    bid_qty: str = msgspec.field(name="B")
    ask_price: str = msgspec.field(name="a")
    ask_qty: str = msgspec.field(name="A")
    event_time: int = msgspec.field(name="E", default=0)
    transaction_time: int = msgspec.field(name="T", default=0)

    def row(self, market: str, received_ms: int) -> BookTickerRow:
        time = self.transaction_time or self.event_time or received_ms
        return (
            market,
            self.symbol,
            time,
            self.update_id,
            self.bid_price,
            self.bid_qty,
            self.ask_price,
            self.ask_qty,
        )


class Ticker(msgspec.Struct, frozen=True, gc=False):
    """A ``24hrTicker`` event (``<symbol>@ticker``), spot and futures (futures lack the book)."""

    event_time: int = msgspec.field(name="E")
    symbol: str = msgspec.field(name="s")
    price_change: str = msgspec.field(name="p")
    price_change_percent: str = msgspec.field(name="P")
    weighted_avg_price: str = msgspec.field(name="w")
    last: str = msgspec.field(name="c")
    last_qty: str = msgspec.field(name="Q")
    open: str = msgspec.field(name="o")
    high: str = msgspec.field(name="h")
    low: str = msgspec.field(name="l")
    volume: str = msgspec.field(name="v")
    quote_volume: str = msgspec.field(name="q")
    open_time: int = msgspec.field(name="O")
    close_time: int = msgspec.field(name="C")
    first_trade_id: int = msgspec.field(name="F")
    last_trade_id: int = msgspec.field(name="L")
    trades: int = msgspec.field(name="n")

    def row(self, market: str) -> TickerRow:
        return (
            market,
            self.symbol,
            self.event_time,
            self.open,
            self.high,
            self.low,
            self.last,
            self.volume,
            self.quote_volume,
            self.price_change_percent,
            self.weighted_avg_price,
            self.trades,
        )


Level = tuple[str, str]


class PartialDepth(msgspec.Struct, frozen=True, gc=False):
    """A spot ``@depth20`` snapshot: no symbol, no time (both come from the stream)."""

    last_update_id: int = msgspec.field(name="lastUpdateId")
    bids: list[Level] = msgspec.field(default_factory=list)
    asks: list[Level] = msgspec.field(default_factory=list)

    def row(self, market: str, symbol: str, received_ms: int) -> DepthRow:
        return (
            market,
            symbol,
            received_ms,
            self.last_update_id,
            levels_json(self.bids),
            levels_json(self.asks),
        )


class FuturesPartialDepth(msgspec.Struct, frozen=True, gc=False):
    """A futures ``@depth20`` snapshot, in ``depthUpdate`` form."""

    event_time: int = msgspec.field(name="E")
    symbol: str = msgspec.field(name="s")
    last_update_id: int = msgspec.field(name="u")
    bids: list[Level] = msgspec.field(name="b", default_factory=list)
    asks: list[Level] = msgspec.field(name="a", default_factory=list)
    transaction_time: int = msgspec.field(name="T", default=0)

    def row(self, market: str, symbol: str, received_ms: int) -> DepthRow:
        return (
            market,
            symbol,
            self.transaction_time or self.event_time,
            self.last_update_id,
            levels_json(self.bids),
            levels_json(self.asks),
        )


class RestDepth(msgspec.Struct, frozen=True, gc=False):
    """``GET /api/v3/depth``: as a spot depth20 frame (futures add ``E`` and ``T``)."""

    last_update_id: int = msgspec.field(name="lastUpdateId")
    bids: list[Level] = msgspec.field(default_factory=list)
    asks: list[Level] = msgspec.field(default_factory=list)
    E: int = 0
    T: int = 0


class RestTicker(msgspec.Struct, frozen=True, gc=False):
    """``GET /api/v3/ticker/24hr`` for one symbol."""

    symbol: str
    priceChange: str
    priceChangePercent: str
    weightedAvgPrice: str
    lastPrice: str
    openPrice: str
    highPrice: str
    lowPrice: str
    volume: str
    quoteVolume: str
    openTime: int
    closeTime: int
    firstId: int
    lastId: int
    count: int


class _Envelope(msgspec.Struct, frozen=True, gc=False):
    """The combined-stream envelope, its data left undecoded until the stream name says what
    it is (spot bookTicker and depth20 frames carry no ``e`` to tag a union with)."""

    stream: str
    data: msgspec.Raw


def levels_json(levels: list[Level]) -> str:
    """The levels as JSON text of the exact strings: ``[["1.00","2.5"],...]``."""
    return _encoder.encode(levels).decode()


_encoder = msgspec.json.Encoder()
envelope_decoder = msgspec.json.Decoder(_Envelope)
agg_trade_decoder = msgspec.json.Decoder(AggTrade)
book_ticker_decoder = msgspec.json.Decoder(BookTicker)
ticker_decoder = msgspec.json.Decoder(Ticker)
partial_depth_decoder = msgspec.json.Decoder(PartialDepth)
futures_partial_depth_decoder = msgspec.json.Decoder(FuturesPartialDepth)
rest_agg_trades_decoder = msgspec.json.Decoder(list[RestAggTrade])
rest_depth_decoder = msgspec.json.Decoder(RestDepth)
rest_ticker_decoder = msgspec.json.Decoder(RestTicker)

Event = AggTrade | BookTicker | Ticker | PartialDepth | FuturesPartialDepth


def decode_data(kind: Kind, data: bytes | str, market: str) -> Event:
    """The event of ``kind`` in ``data`` (the envelope's ``data``); raises ``msgspec.DecodeError``."""
    if kind == "aggTrade":
        return agg_trade_decoder.decode(data)
    if kind == "bookTicker":
        return book_ticker_decoder.decode(data)
    if kind == "ticker":
        return ticker_decoder.decode(data)
    if market == "spot":
        return partial_depth_decoder.decode(data)
    return futures_partial_depth_decoder.decode(data)


__all__ = [
    "KINDS",
    "KIND_OF_SUFFIX",
    "STREAM_SUFFIX",
    "TABLE_OF",
    "AggTrade",
    "BookTicker",
    "BookTickerRow",
    "DepthRow",
    "Event",
    "FuturesPartialDepth",
    "Kind",
    "PartialDepth",
    "RestAggTrade",
    "RestDepth",
    "RestTicker",
    "Row",
    "Ticker",
    "TickerRow",
    "TradeRow",
    "decode_data",
    "envelope_decoder",
    "levels_json",
    "stream_name",
]
