"""What differs between Binance's three markets, in one table (pure).

Binance runs spot and two futures exchanges behind separate hosts: USD-M futures (``fapi``,
contracts margined in USDT or USDC) and COIN-M futures (``dapi``, contracts margined in the
coin, named like ``BTCUSD_PERP`` or ``BTCUSD_250627`` for a delivery contract). Each meters
request weight on its own, pages klines differently, limits incoming WebSocket messages
differently and spells a symbol's status differently. Everything that reads or writes a market
takes a ``Market`` from here instead of assuming spot::

    market  REST base (path)             WebSocket base               page  weight limit  msgs/s
    spot    api.binance.com  (/api/v3)    stream.binance.com:9443      1000  6000/min      5
    usdm    fapi.binance.com (/fapi/v1)   fstream.binance.com          1500  2400/min      10
    coinm   dapi.binance.com (/dapi/v1)   dstream.binance.com          1500  2400/min      10

Request weights follow Binance's documentation: spot klines cost 2 whatever the ``limit``;
futures klines cost by ``limit`` (1 below 100, 2 below 500, 5 up to 1000, 10 above).
``exchangeInfo`` costs 20 on spot, 1 on futures; a page of ``aggTrades`` 4 on spot, 20 on futures. The weight limits above are defaults: the real
ones are adopted from each market's ``exchangeInfo``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from klinetrio.errors import SettingsError

MarketName = Literal["spot", "usdm", "coinm"]


def _spot_klines_weight(limit: int) -> int:
    return 2


def _futures_klines_weight(limit: int) -> int:
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    if limit <= 1000:
        return 5
    return 10


@dataclass(frozen=True, slots=True)
class Market:
    """One market's endpoints, limits and naming. Compare markets by ``name``."""

    name: MarketName
    title: str
    rest_setting: str
    rest_default: str
    ws_setting: str
    ws_default: str
    api: str  # REST path prefix: /api/v3, /fapi/v1, /dapi/v1
    kline_page: int  # the largest klines ``limit``
    klines_weight: Callable[[int], int]
    exchange_info_weight: int
    server_time_weight: int
    agg_trades_weight: int  # one page of aggTrades, whatever its limit
    default_weight_limit: int  # per minute, until exchangeInfo says otherwise
    messages_per_second: int  # incoming WebSocket messages per connection
    streams_per_connection: int
    archive_path: str  # below /data/ on data.binance.vision
    status_field: str  # exchangeInfo's name of a symbol's status
    has_futures_data: bool  # /futures/data/... statistics
    intervals_unsupported: tuple[str, ...]  # kline intervals the market does not serve
    symbol_pattern: re.Pattern[str]

    @property
    def klines_path(self) -> str:
        return f"{self.api}/klines"

    @property
    def exchange_info_path(self) -> str:
        return f"{self.api}/exchangeInfo"

    @property
    def agg_trades_path(self) -> str:
        return f"{self.api}/aggTrades"

    @property
    def time_path(self) -> str:
        return f"{self.api}/time"

    @property
    def subscribe_pace_s(self) -> float:
        """Seconds between our requests on one connection: one message of each second is left
        for a pong or a ping."""
        return 1.0 / (self.messages_per_second - 1)

    def valid_symbol(self, name: str) -> bool:
        return self.symbol_pattern.fullmatch(name) is not None

    def __str__(self) -> str:
        return self.name


# Spot and USD-M names are letters and digits (USD-M delivery contracts add ``_YYMMDD``);
# COIN-M names always have a suffix: ``_PERP`` or a delivery date.
_PLAIN = re.compile(r"[A-Z0-9]{2,30}(?:_[0-9]{6})?")
_COIN = re.compile(r"[A-Z0-9]{2,30}_(?:PERP|[0-9]{6})")

SPOT = Market(
    name="spot",
    title="spot",
    rest_setting="KLINETRIO_REST_URL",
    rest_default="https://api.binance.com",
    ws_setting="KLINETRIO_WS_URL",
    ws_default="wss://stream.binance.com:9443",
    api="/api/v3",
    kline_page=1000,
    klines_weight=_spot_klines_weight,
    exchange_info_weight=20,
    server_time_weight=1,
    agg_trades_weight=4,
    default_weight_limit=6000,
    messages_per_second=5,
    streams_per_connection=1024,
    archive_path="spot",
    status_field="status",
    has_futures_data=False,
    intervals_unsupported=(),
    symbol_pattern=_PLAIN,
)
USDM = Market(
    name="usdm",
    title="USD-M futures",
    rest_setting="KLINETRIO_USDM_REST_URL",
    rest_default="https://fapi.binance.com",
    ws_setting="KLINETRIO_USDM_WS_URL",
    ws_default="wss://fstream.binance.com",
    api="/fapi/v1",
    kline_page=1500,
    klines_weight=_futures_klines_weight,
    exchange_info_weight=1,
    server_time_weight=1,
    agg_trades_weight=20,
    default_weight_limit=2400,
    messages_per_second=10,
    streams_per_connection=1024,
    archive_path="futures/um",
    status_field="status",
    has_futures_data=True,
    intervals_unsupported=("1s",),
    symbol_pattern=_PLAIN,
)
COINM = Market(
    name="coinm",
    title="COIN-M futures",
    rest_setting="KLINETRIO_COINM_REST_URL",
    rest_default="https://dapi.binance.com",
    ws_setting="KLINETRIO_COINM_WS_URL",
    ws_default="wss://dstream.binance.com",
    api="/dapi/v1",
    kline_page=1500,
    klines_weight=_futures_klines_weight,
    exchange_info_weight=1,
    server_time_weight=1,
    agg_trades_weight=20,
    default_weight_limit=2400,
    messages_per_second=10,
    streams_per_connection=1024,
    archive_path="futures/cm",
    status_field="contractStatus",
    has_futures_data=True,
    intervals_unsupported=("1s",),
    symbol_pattern=_COIN,
)

MARKETS: dict[str, Market] = {m.name: m for m in (SPOT, USDM, COINM)}
MARKET_NAMES: tuple[str, ...] = tuple(MARKETS)


def market_named(name: str) -> Market:
    """``spot``, ``usdm`` or ``coinm`` (any case) → its ``Market``; anything else is a
    ``SettingsError`` naming the choices."""
    market = MARKETS.get(name.strip().lower())
    if market is None:
        raise SettingsError(f"unknown market {name!r}; expected spot, usdm or coinm")
    return market


__all__ = [
    "COINM",
    "MARKETS",
    "MARKET_NAMES",
    "SPOT",
    "USDM",
    "Market",
    "MarketName",
    "market_named",
]
