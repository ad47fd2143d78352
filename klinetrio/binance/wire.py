"""Binance wire formats as msgspec structs, and decoders built once.

Nothing here does I/O. Prices and volumes stay the exact decimal strings Binance sent; no float
ever touches them. Field names are renamed so code reads ``k.close_time``, not ``k.T``.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from klinetrio.core.models import Candle


class Kline(msgspec.Struct, frozen=True, gc=False):
    """The ``k`` object of a kline event."""

    open_time: int = msgspec.field(name="t")
    close_time: int = msgspec.field(name="T")
    symbol: str = msgspec.field(name="s")
    interval: str = msgspec.field(name="i")
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

    def to_candle(self, source: str = "ws", market: str = "spot") -> Candle:
        return _candle(self, self.symbol, self.interval, source, market)


class KlineEvent(msgspec.Struct, frozen=True, gc=False, tag_field="e", tag="kline"):
    """A kline event: ``{"e": "kline", "E": event time, "s": symbol, "k": {...}}``."""

    event_time: int = msgspec.field(name="E")
    symbol: str = msgspec.field(name="s")
    kline: Kline = msgspec.field(name="k")


class StreamEnvelope(msgspec.Struct, frozen=True, gc=False):
    """The combined-stream envelope ``{"stream": "btcusdt@kline_1m", "data": {...}}``."""

    stream: str
    data: KlineEvent


class _Closed(msgspec.Struct, frozen=True, gc=False):
    open_time: int = msgspec.field(name="t")
    closed: bool = msgspec.field(name="x")


class _GlanceEvent(msgspec.Struct, frozen=True, gc=False, tag_field="e", tag="kline"):
    event_time: int = msgspec.field(name="E")
    kline: _Closed = msgspec.field(name="k")


class KlineGlance(msgspec.Struct, frozen=True, gc=False):
    """What the hot loop needs of a combined kline frame before anything else: its stream, its
    event time, ``k.t`` and ``k.x``. Decoding only these (msgspec parses the rest of the frame
    without building it) costs about a third of the full ``StreamEnvelope``, and nine frames in
    ten are candles still in progress, for which nothing more is needed when nobody observes
    them. Exact, as a JSON parse: a frame that is not a kline event (another kind, an answer,
    garbage) fails here as it does in ``combined_decoder``. Only an in-progress frame with an
    ill-typed field it does not look at (a price sent as a number) passes the glance and is not
    counted as malformed; it carries nothing that is stored."""

    stream: str
    data: _GlanceEvent


class CommandResult(msgspec.Struct, frozen=True, gc=False):
    """The answer to a ``SUBSCRIBE``/``UNSUBSCRIBE`` request: ``{"result": null, "id": 1}``."""

    id: int | str | None
    result: object = None


class ErrorDetail(msgspec.Struct, frozen=True):
    code: int
    msg: str


class CommandError(msgspec.Struct, frozen=True):
    """An error answer to a request: ``{"error": {"code": 2, "msg": "..."}, "id": 1}``."""

    error: ErrorDetail
    id: int | str | None = None


class ServerShutdown(msgspec.Struct, frozen=True, tag_field="e", tag="serverShutdown"):
    """Binance's notice that the server will close this connection soon."""

    event_time: int = msgspec.field(name="E", default=0)


class ShutdownEnvelope(msgspec.Struct, frozen=True):
    stream: str
    data: ServerShutdown


class Subscribe(msgspec.Struct, frozen=True):
    """A ``SUBSCRIBE``/``UNSUBSCRIBE``/``LIST_SUBSCRIPTIONS`` request."""

    method: Literal["SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS"]
    params: list[str]
    id: int


class RestKline(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """One row of ``GET /api/v3/klines``: a 12-element positional array."""

    open_time: int
    open: str
    high: str
    low: str
    close: str
    volume: str
    close_time: int
    quote_volume: str
    trades: int
    taker_buy_volume: str
    taker_buy_quote_volume: str
    ignore: str = "0"

    def to_candle(
        self, symbol: str, interval: str, source: str = "rest", market: str = "spot"
    ) -> Candle:
        return _candle(self, symbol, interval, source, market)


class ServerTime(msgspec.Struct, frozen=True):
    serverTime: int


class RateLimit(msgspec.Struct, frozen=True):
    rateLimitType: str
    interval: str
    intervalNum: int
    limit: int


class SymbolInfo(msgspec.Struct, frozen=True):
    """One symbol of exchangeInfo. COIN-M spells its status ``contractStatus``; see ``state``."""

    symbol: str
    status: str = ""
    baseAsset: str = ""
    quoteAsset: str = ""
    contractStatus: str = ""
    pair: str = ""
    contractType: str = ""

    @property
    def state(self) -> str:
        """The trading status whatever the market calls it (``TRADING``, ``BREAK``, ...)."""
        return self.status or self.contractStatus or "TRADING"


class ExchangeInfo(msgspec.Struct, frozen=True):
    timezone: str = "UTC"
    serverTime: int = 0
    rateLimits: list[RateLimit] = []
    symbols: list[SymbolInfo] = []


class RatioRow(msgspec.Struct, frozen=True):
    """One row of ``/futures/data/{top,global}LongShort*Ratio``: USD-M names the ``symbol`` and
    the shares ``longAccount``/``shortAccount``; COIN-M names the ``pair`` and, for positions,
    ``longPosition``/``shortPosition``. Decimal strings as sent; ``timestamp`` in ms."""

    longShortRatio: str
    timestamp: int
    symbol: str = ""
    pair: str = ""
    longAccount: str | None = None
    shortAccount: str | None = None
    longPosition: str | None = None
    shortPosition: str | None = None

    @property
    def long_share(self) -> str:
        return self.longAccount if self.longAccount is not None else self.longPosition or "0"

    @property
    def short_share(self) -> str:
        return self.shortAccount if self.shortAccount is not None else self.shortPosition or "0"


class OpenInterestRow(msgspec.Struct, frozen=True):
    """One row of ``/futures/data/openInterestHist`` (USD-M by ``symbol``, COIN-M by ``pair``
    and ``contractType``)."""

    sumOpenInterest: str
    sumOpenInterestValue: str
    timestamp: int
    symbol: str = ""
    pair: str = ""
    contractType: str = ""


class ApiError(msgspec.Struct, frozen=True):
    """Binance's error body: ``{"code": -1121, "msg": "Invalid symbol."}``."""

    code: int
    msg: str


def _candle(k: Kline | RestKline, symbol: str, interval: str, source: str, market: str) -> Candle:
    """A Candle from either wire form: they carry the same fields under the same names."""
    return Candle(
        symbol=symbol,
        interval=interval,
        open_time=k.open_time,
        close_time_us=k.close_time * 1000,
        open=k.open,
        high=k.high,
        low=k.low,
        close=k.close,
        volume=k.volume,
        quote_volume=k.quote_volume,
        trades=k.trades,
        taker_buy_volume=k.taker_buy_volume,
        taker_buy_quote_volume=k.taker_buy_quote_volume,
        source=source,
        market=market,
    )


# Decoders are built once at import: building one costs far more than a decode.
combined_decoder = msgspec.json.Decoder(StreamEnvelope)
glance_decoder = msgspec.json.Decoder(KlineGlance)
raw_event_decoder = msgspec.json.Decoder(KlineEvent)
rest_klines_decoder = msgspec.json.Decoder(list[RestKline])
server_time_decoder = msgspec.json.Decoder(ServerTime)
exchange_info_decoder = msgspec.json.Decoder(ExchangeInfo)
api_error_decoder = msgspec.json.Decoder(ApiError)
# strict=False: a timestamp sent as a string ("1583139600000") is read as the number it spells.
ratio_rows_decoder = msgspec.json.Decoder(list[RatioRow], strict=False)
open_interest_rows_decoder = msgspec.json.Decoder(list[OpenInterestRow], strict=False)
command_result_decoder = msgspec.json.Decoder(CommandResult)
command_error_decoder = msgspec.json.Decoder(CommandError)
shutdown_decoder = msgspec.json.Decoder(ShutdownEnvelope)
encoder = msgspec.json.Encoder()
