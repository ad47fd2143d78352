"""klinetrio: keeps a PostgreSQL/TimescaleDB table of Binance candles complete, exact and current.

Embedding the collector in another Trio program::

    import trio
    import klinetrio

    async def main() -> None:
        settings = klinetrio.load_settings({"symbols": "btcusdt,ethusdt", "intervals": "1m"})
        async with trio.open_nursery() as nursery:
            service = klinetrio.Service(settings, database_url="postgresql://localhost/candles")
            await nursery.start(service.run)
            ...  # the collector runs beside your own tasks
            service.stop()  # an orderly stop: intake first, then the writer drains

The pieces stand alone too: ``klinetrio.binance.stream.StreamGroup``,
``klinetrio.store.writer.CandleWriter``, ``klinetrio.sync.Syncer`` and ``klinetrio.backfill``.
"""

from __future__ import annotations

from loguru import logger

from klinetrio.settings import Settings, load_settings

__version__ = "0.1.0"

logger.disable("klinetrio")


def __getattr__(name: str) -> object:
    # The service pulls in httpx, psycopg and wsproto; import it only when asked for.
    if name in ("Service", "serve"):
        from klinetrio import service

        return getattr(service, name)
    if name == "backfill":
        from klinetrio.backfill import backfill

        return backfill
    raise AttributeError(name)


__all__ = ["Service", "Settings", "__version__", "backfill", "load_settings", "serve"]
