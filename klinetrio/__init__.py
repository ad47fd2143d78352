"""klinetrio: keeps a PostgreSQL/TimescaleDB store of Binance market data complete, exact and
current, and serves it.

Embedding the collector in another Trio program::

    import trio
    import klinetrio

    async def main() -> None:
        settings = klinetrio.load_settings({"symbols": "btcusdt,ethusdt", "intervals": "1m"})
        async with klinetrio.open_collector(settings) as collector:
            with collector.subscribe(["btcusdt@kline_1m"], capacity=100) as events:
                async for event in events:
                    print(event.symbol, event.close, "closed" if event.closed else "so far")

    trio.run(main)

``import klinetrio`` starts nothing and logs nothing (its loguru logger is disabled: call
``logger.enable("klinetrio")`` to see it); the collector's modules load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loguru import logger

from klinetrio.core.models import Candle, StreamKey
from klinetrio.errors import (
    DatabaseError,
    DatabaseUnavailable,
    ExchangeError,
    KlinetrioError,
    SettingsError,
    UnknownSymbol,
)
from klinetrio.settings import Settings, load_settings

if TYPE_CHECKING:
    from klinetrio.backfills import BackfillReport, backfill
    from klinetrio.collector import Collector, open_collector, serve
    from klinetrio.events import KlineEvent, Subscription
    from klinetrio.snapshot import CollectorStatistics

__version__ = "0.1.0"

logger.disable("klinetrio")

_LAZY = {
    "Collector": "klinetrio.collector",
    "open_collector": "klinetrio.collector",
    "serve": "klinetrio.collector",
    "KlineEvent": "klinetrio.events",
    "Subscription": "klinetrio.events",
    "CollectorStatistics": "klinetrio.snapshot",
    "backfill": "klinetrio.backfills",
    "BackfillReport": "klinetrio.backfills",
}


def __getattr__(name: str) -> object:
    # The collector pulls in httpx, psycopg, hypercorn and Starlette: load them when asked for.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'klinetrio' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once loaded, a plain attribute (the function wins over modules)
    return value


__all__ = [
    "BackfillReport",
    "Candle",
    "Collector",
    "CollectorStatistics",
    "DatabaseError",
    "DatabaseUnavailable",
    "ExchangeError",
    "KlineEvent",
    "KlinetrioError",
    "Settings",
    "SettingsError",
    "StreamKey",
    "Subscription",
    "UnknownSymbol",
    "__version__",
    "backfill",
    "load_settings",
    "open_collector",
    "serve",
]
