"""The fake Binance behind ``klinetrio simulate``: kline streams and REST on one port.

Why it exists: the collector's hard parts (gap healing across reconnects, the 24-hour close,
rate limits, a candle in progress) cannot be exercised against the real exchange on demand, and
tests must not wait for real minutes to pass. The simulator runs an *exchange clock*
(``--start`` + real elapsed x ``--speed``) that every answer follows, so a test at ``--speed 600``
sees a 1m candle close every 0.1 s, and it injects faults on request.

What it serves (same paths, bodies and limits as Binance spot)::

    /stream?streams=a/b  /stream  /ws/<stream>  /ws       kline streams (combined or raw)
    /api/v3/klines  /api/v3/time  /api/v3/exchangeInfo  /api/v3/ping
    /data/spot/{monthly|daily}/klines/...zip[.CHECKSUM]  data.binance.vision archives

Candles come from a *market*: ``SyntheticMarket`` (the default) makes every candle a pure
function of (seed, symbol, interval, open time), so WebSocket, REST and a restarted simulator
agree byte for byte; ``ReplayMarket`` (``--data DIR``) serves data.binance.vision archives,
holes included. A candle in progress is derived from its final candle (see ``partial_bar``), so
its volume only grows, its high only rises, and the closed frame equals the REST row.

One module per face::

    config    SimulatorConfig and the ``klinetrio simulate`` flags
    clock     the exchange clock
    market    Bar, candles in progress, the synthetic market (pure)
    replay    the replayed market (data.binance.vision files)
    faults    request-weight limits (429/418) and connection drop points (pure)
    rest      the REST face
    archives  the data.binance.vision face (/data/...)
    streams   the WebSocket face
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
from klinetrio.simulate.market import Bar, Market, SyntheticMarket, partial_bar
from klinetrio.simulate.replay import ReplayMarket, load_replay, parse_kline_csv
from klinetrio.simulate.server import Simulator, serve_simulator
from klinetrio.simulate.state import SimulatorStatistics

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
