"""The peer: cryptofeed's Binance feed (candles, its Postgres candle backend, uvloop) pointed at
``klinetrio simulate``. Bench-only; run by ``bench/peer.py``, never imported by klinetrio.

    python bench/cryptofeed_peer.py --ws ws://127.0.0.1:9650 --rest http://127.0.0.1:9650 \\
        --symbols B0000USDT,B0001USDT --intervals 1s,1m --db bench_x --stats stats.json

cryptofeed's ``Binance`` has its addresses as class attributes (``wss://stream.binance.com:9443``,
``https://api.binance.com``); a subclass replaces them, nothing in site-packages is touched.
cryptofeed's ``WSAsyncConn`` only accepts ``wss://`` addresses, and the simulator speaks plain
``ws://`` on loopback: the subclass's ``connect()`` rewrites each connection's address after
cryptofeed has built it (no TLS on either side, as for klinetrio in the same bench). Two
more things differ from stock use, both because the simulator is not Binance: the simulator's
exchangeInfo has no ``filters`` (cryptofeed reads ``filters[0].tickSize``), so a PRICE_FILTER is
filled in before cryptofeed parses it, and ``1s`` is added to the intervals cryptofeed accepts
(Binance has served 1s klines since 2022; cryptofeed's list predates them, its candle code is the
same for every interval). One feed per interval, as cryptofeed takes one ``candle_interval`` per
feed; all feeds share one ``CandlesPostgres`` (one writer task, one connection).

On SIGUSR1 the runner writes ``{"seq", "frames", "candles"}`` to ``--stats`` (frames: messages
handed to the feeds' message handler; candles: closed candles handed to the backend), so the bench
reads its counters at the edges of its window as it reads serve's /metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any, ClassVar

from cryptofeed import FeedHandler
from cryptofeed.backends.postgres import CandlesPostgres
from cryptofeed.connection import RestEndpoint, Routes, WebsocketEndpoint, WSAsyncConn
from cryptofeed.defines import CANDLES
from cryptofeed.exchanges import Binance

# The table of cryptofeed's own example (examples/demo_postgres_tables.sql): no unique key, so
# what it stores twice stays twice.
CANDLES_TABLE = """
CREATE TABLE IF NOT EXISTS candles (
    id serial PRIMARY KEY, timestamp TIMESTAMP, receipt_timestamp TIMESTAMP,
    exchange VARCHAR(32), symbol VARCHAR(32), start TIMESTAMP, stop TIMESTAMP,
    interval VARCHAR(4), trades INTEGER, open NUMERIC(64, 32), close NUMERIC(64, 32),
    high NUMERIC(64, 32), low NUMERIC(64, 32), volume NUMERIC(64, 32), closed BOOLEAN
)
"""

counts = {"seq": 0, "frames": 0, "candles": 0}


def simulated_binance(ws_url: str, rest_url: str) -> type[Binance]:
    # WSAsyncConn refuses an address that is not wss://: the endpoint says wss:// and connect()
    # turns each connection's address back into the simulator's plain ws:// before it is opened.
    wss_url = "wss://" + ws_url.removeprefix("ws://")

    class SimulatedBinance(Binance):  # type: ignore[misc]
        websocket_endpoints: ClassVar = [WebsocketEndpoint(wss_url)]
        rest_endpoints: ClassVar = [
            RestEndpoint(
                rest_url,
                routes=Routes(
                    "/api/v3/exchangeInfo",
                    l2book="/api/v3/depth?symbol={}&limit={}",
                    authentication="/api/v3/userDataStream",
                ),
            )
        ]
        valid_candle_intervals = Binance.valid_candle_intervals | {"1s"}

        @classmethod
        def _parse_symbol_data(cls, data: dict[str, Any]) -> Any:
            for info in data["symbols"]:
                if not info.get("filters"):
                    info["filters"] = [{"filterType": "PRICE_FILTER", "tickSize": "0.01"}]
            return super()._parse_symbol_data(data)

        def connect(self) -> list[tuple[Any, ...]]:
            connections: list[tuple[Any, ...]] = super().connect()
            for conn, *_ in connections:
                if isinstance(conn, WSAsyncConn) and conn.address.startswith(wss_url):
                    conn.address = ws_url + conn.address.removeprefix(wss_url)
            return connections

        async def message_handler(self, msg: str, conn: Any, timestamp: float) -> None:
            counts["frames"] += 1
            await super().message_handler(msg, conn, timestamp)

    return SimulatedBinance


class CountedCandles(CandlesPostgres):  # type: ignore[misc]
    async def __call__(self, dtype: Any, receipt_timestamp: float) -> None:
        counts["candles"] += 1
        await super().__call__(dtype, receipt_timestamp)


def write_stats(path: Path) -> None:
    counts["seq"] += 1
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(counts))
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ws", required=True)
    parser.add_argument("--rest", required=True)
    parser.add_argument("--symbols", required=True, help="exchange symbols, comma-separated")
    parser.add_argument("--intervals", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5432)
    parser.add_argument("--user", default="postgres")
    parser.add_argument("--stats", type=Path, required=True)
    args = parser.parse_args()

    feed_class = simulated_binance(args.ws, args.rest)
    exchange_symbols = args.symbols.split(",")
    by_exchange = {v: k for k, v in feed_class.symbol_mapping().items()}
    symbols = [by_exchange[s] for s in exchange_symbols]

    async def create_table() -> None:
        import asyncpg

        conn = await asyncpg.connect(
            user=args.user, database=args.db, host=args.host, port=args.port
        )
        await conn.execute(CANDLES_TABLE)
        await conn.close()

    handler = FeedHandler(
        config={"uvloop": True, "log": {"filename": "/dev/stderr", "level": "WARNING"}}
    )
    loop = asyncio.new_event_loop()  # uvloop's, once FeedHandler has set the policy
    asyncio.set_event_loop(loop)  # FeedHandler.run() asks for the current loop
    loop.run_until_complete(create_table())
    backend = CountedCandles(host=args.host, user=args.user, db=args.db, port=args.port)
    for interval in args.intervals.split(","):
        handler.add_feed(
            feed_class(
                symbols=symbols,
                channels=[CANDLES],
                candle_interval=interval,
                callbacks={CANDLES: backend},
            )
        )
    loop.add_signal_handler(signal.SIGUSR1, write_stats, args.stats)
    write_stats(args.stats)
    print(f"loop {type(loop).__module__}.{type(loop).__name__}", flush=True)
    handler.run()


if __name__ == "__main__":
    main()
