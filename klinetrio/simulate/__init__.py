"""The fake Binance behind ``klinetrio simulate``: streams, REST and archives on one port.

Why it exists: the collector's hard parts (gap healing across reconnects, the 24-hour close,
rate limits, a candle in progress) cannot be exercised against the real exchange on demand, and
tests must not wait for real minutes to pass. The simulator runs an *exchange clock*
(``--start`` + real elapsed x ``--speed``) that every answer follows, so a test at ``--speed 600``
sees a 1m candle close every 0.1 s, and it injects faults on request.

What it serves (same paths, bodies and limits as Binance's spot, USD-M and COIN-M hosts)::

    /stream?streams=a/b  /stream  /ws/<stream>  /ws       spot streams (combined or raw):
                                                          klines, aggTrade, bookTicker, ticker,
                                                          depth20 (and depth5/10, @100ms)
    /usdm/stream ... /usdm/ws/<stream>                    USD-M streams (base + /usdm)
    /coinm/stream ... /coinm/ws/<stream>                  COIN-M streams (base + /coinm)
    /api/v3/{klines,time,exchangeInfo,ping}               spot REST, and aggTrades, depth,
                                                          ticker/24hr
    /fapi/v1/{...}  /dapi/v1/{...}                        USD-M and COIN-M REST (also below
                                                          /usdm/ and /coinm/)
    /futures/data/{openInterestHist,top...,global...}     futures statistics
    /data/{spot,futures/um,futures/cm}/{monthly|daily}/{klines,aggTrades}/...zip[.CHECKSUM]

Each market has its own symbols (``--symbols usdm:BTCUSDT``, ``--synthetic usdm=500``), its own
candles (synthetic, or ``--data usdm:DIR`` replayed), its own weight meter, and a listing
schedule (``--list``/``--delist``) that changes its exchangeInfo and stops a delisted symbol's
candles.

Candles come from a *market*: ``SyntheticMarket`` (the default) makes every candle a pure
function of (seed, symbol, interval, open time), so WebSocket, REST and a restarted simulator
agree byte for byte; ``ReplayMarket`` (``--data DIR``) serves data.binance.vision archives,
holes included. A candle in progress is derived from its final candle (see ``partial_bar``), so
its volume only grows, its high only rises, and the closed frame equals the REST row.

Trades are derived from the candles (``trades``: a fixed number per candle, so ids and every
trade are a function of time and WebSocket, REST and archives agree), or replayed from aggTrades
archives; books and 24-hour tickers follow the trades (``books``).

One module per face::

    config    SimulatorConfig and the ``klinetrio simulate`` flags
    clock     the exchange clock
    market    Bar, candles in progress, the synthetic market (pure)
    replay    the replayed market (data.binance.vision kline and aggTrades files)
    trades    aggregate trades derived from candles, or replayed (pure)
    trade_files  aggTrades CSV files, and candles made of trades (pure)
    books     order books and 24-hour tickers around the trades (pure)
    listings  --list/--delist: listing windows and the market that honours them (pure)
    venues    spot, USD-M, COIN-M: rules, candles, listings and weight meter of each
    faults    request-weight limits (429/418) and connection drop points (pure)
    exchange_info  exchangeInfo bodies in each market's shape (pure)
    rest      the REST face
    rest_kinds  aggTrades, depth, ticker/24hr
    futures_data   the /futures/data/... statistics
    archives  the data.binance.vision face (/data/...)
    streams   the WebSocket face
    feeds     the streams beside klines: one feed per aggTrade/bookTicker/ticker/depth stream
    server    Simulator: the faces on one port
"""

from __future__ import annotations

from klinetrio.simulate.clock import ExchangeClock
from klinetrio.simulate.config import (
    SimulatorConfig,
    add_arguments,
    config_from_args,
    parse_rest_errors,
    parse_start,
)
from klinetrio.simulate.faults import WeightLimiter
from klinetrio.simulate.listings import ListingChange, ScheduledMarket
from klinetrio.simulate.market import Bar, Market, SyntheticMarket, partial_bar
from klinetrio.simulate.replay import ReplayMarket, load_replay, parse_kline_csv
from klinetrio.simulate.server import Simulator, serve_simulator
from klinetrio.simulate.state import SimulatorStatistics
from klinetrio.simulate.venues import MarketStatistics, Venue

__all__ = [
    "Bar",
    "ExchangeClock",
    "ListingChange",
    "Market",
    "MarketStatistics",
    "ReplayMarket",
    "ScheduledMarket",
    "Simulator",
    "SimulatorConfig",
    "SimulatorStatistics",
    "SyntheticMarket",
    "Venue",
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
