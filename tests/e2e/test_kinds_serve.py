"""Every stream kind end to end: ``klinetrio serve`` with
``KLINETRIO_STREAMS=kline,aggTrade,bookTicker,ticker,depth`` for two symbols against
``klinetrio simulate``, both real subprocesses, under dropped connections and a ``kill -9`` with
a restart.

- Every aggregate trade the exchange produced from the first one serve saw to the last before
  its stop is stored exactly once: ids contiguous, every value equal to the exchange's REST
  answer. The ids lost to the drops and to the kill come back from REST by id.
- Every bookTicker, ticker and depth20 frame serve received in its second run (seen by a relay
  client of serve, which gets what serve gets) is in its table.
- The candles stay as exact as before: contiguous 1m, equal to the exchange's.
"""

from __future__ import annotations

import json
import re
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
from support.processes import Command, exchange_time, free_port, simulator, wait_http, wait_until
from support.relay import RelayClient

SYMBOLS = ("BTCUSDT", "ETHUSDT")
MINUTE_MS = 60_000
SPEED = 60.0  # an exchange minute per real second
STREAMS = "kline,aggTrade,bookTicker,ticker,depth"
RELAYED = [f"{s.lower()}@{k}" for s in SYMBOLS for k in ("bookTicker", "ticker", "depth20")]


def metric_sum(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    pattern = re.compile(rf"^klinetrio_{name}(?:_total)?(?:\{{[^}}]*\}})? (\S+)$", re.M)
    return sum(float(v) for v in pattern.findall(text))


def exchange_trades(base: str, symbol: str, first: int, last: int) -> list[tuple[Any, ...]]:
    """The exchange's trades ``first..last`` by id, 1000 a page."""
    trades: list[tuple[Any, ...]] = []
    cursor = first
    while cursor <= last:
        response = httpx.get(
            f"{base}/api/v3/aggTrades",
            params={"symbol": symbol, "fromId": cursor, "limit": 1000},
            timeout=10,
        )
        if response.status_code == 429:  # the test's reads share the exchange's limit
            time.sleep(float(response.headers.get("Retry-After", "1")))
            continue
        response.raise_for_status()
        page = [t for t in response.json() if t["a"] <= last]
        if not page:
            break
        trades += [
            (t["a"], Decimal(t["p"]), Decimal(t["q"]), t["f"], t["l"], t["T"], t["m"]) for t in page
        ]
        cursor = page[-1]["a"] + 1
    return trades


def newest_trade_id(base: str, symbol: str) -> int:
    body = httpx.get(
        f"{base}/api/v3/aggTrades", params={"symbol": symbol, "limit": 1}, timeout=10
    ).json()
    return int(body[-1]["a"])


def stored_trades(database_url: str, symbol: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT agg_id, price, quantity, first_trade_id, last_trade_id,"
            " (extract(epoch FROM time) * 1000)::bigint, buyer_is_maker"
            " FROM trades WHERE market = 'spot' AND symbol = %s ORDER BY agg_id",
            (symbol,),
        ).fetchall()


def test_every_kind_is_stored_through_drops_and_a_kill(tmp_path: Path, database_url: str) -> None:
    with simulator(
        tmp_path,
        *("--symbols", ",".join(SYMBOLS), "--speed", str(SPEED)),
        *("--trade-rate", "3", "--book-rate", "5", "--depth-rate", "1"),
        *("--updates-per-second", "1", "--drop-after", "1500", "--drop-spread", "0.5"),
    ) as (_sim, base):
        http = f"127.0.0.1:{free_port()}"
        env = {
            "KLINETRIO_DATABASE_URL": database_url,
            "KLINETRIO_SYMBOLS": ",".join(SYMBOLS),
            "KLINETRIO_INTERVALS": "1m",
            "KLINETRIO_STREAMS": STREAMS,
            "KLINETRIO_WS_URL": base.replace("http", "ws"),
            "KLINETRIO_REST_URL": base,
            "KLINETRIO_SYNC_LOOKBACK": "10m",
            "KLINETRIO_HTTP_ADDR": http,
        }
        api = f"http://{http}"

        # The first run: through drops (each connection cut after ~1500 frames), then kill -9.
        first = Command(["serve"], tmp_path / "serve-1.log", env=env)
        wait_http(f"{api}/ready", timeout=30, process=first)
        wait_until(
            lambda: metric_sum(api, "reconnects") >= 2 and metric_sum(api, "trade_gaps") >= 1,
            timeout=60,
            what="two dropped connections and a trade gap",
            process=first,
        )
        first.kill()
        killed_at = exchange_time(base)
        wait_until(
            lambda: exchange_time(base) >= killed_at + 2 * MINUTE_MS,
            timeout=30,
            what="two exchange minutes with serve down",
        )

        # The second run: a restart fills the trades of the kill from REST, by id.
        second = Command(["serve"], tmp_path / "serve-2.log", env=env)
        try:
            wait_http(f"{api}/ready", timeout=30, process=second)
            relay = RelayClient(f"ws://{http}/stream?streams={'/'.join(RELAYED)}")
            restarted_at = exchange_time(base)
            wait_until(
                lambda: (
                    exchange_time(base) >= restarted_at + 3 * MINUTE_MS
                    and metric_sum(api, "reconnects") >= 1
                    and metric_sum(api, "trade_sync_pending") == 0
                    and metric_sum(api, "trades_filled") > 0
                ),
                timeout=60,
                what="a drop in the second run and every trade gap filled",
                process=second,
            )
            assert metric_sum(api, "event_rows_dropped") == 0
            assert metric_sum(api, "event_rows_rejected") == 0
            relay.close()
            last_ids = {s: newest_trade_id(base, s) for s in SYMBOLS}
            # The trades up to those ids must be in before the stop: the stream brings them,
            # or REST after a drop.
            for symbol in SYMBOLS:
                wait_until(
                    lambda symbol=symbol: (
                        (stored_trades(database_url, symbol) or [(0,)])[-1][0] >= last_ids[symbol]
                    ),
                    timeout=30,
                    what=f"{symbol}'s trades up to id {last_ids[symbol]}",
                    process=second,
                )
        finally:
            assert second.stop(30) == 0, second.output()[-3000:]
        log = second.output()
        assert "Traceback" not in first.output() + log

        # Trades: contiguous, each once, each exactly the exchange's.
        with psycopg.connect(database_url) as conn:
            sources = dict(
                conn.execute("SELECT source, count(*) FROM trades GROUP BY 1").fetchall()
            )
        assert sources.get("ws", 0) > 0
        assert sources.get("rest", 0) > 0, sources  # the drops and the kill, filled by id
        for symbol in SYMBOLS:
            rows = stored_trades(database_url, symbol)
            ids = [r[0] for r in rows]
            assert ids == list(range(ids[0], ids[-1] + 1)), symbol  # no gap, no repeat
            assert ids[-1] >= last_ids[symbol]
            assert rows == exchange_trades(base, symbol, ids[0], ids[-1]), symbol

        # Candles: contiguous and exact, as ever.
        with psycopg.connect(database_url) as conn:
            for symbol in SYMBOLS:
                candles = conn.execute(
                    "SELECT (extract(epoch FROM time) * 1000)::bigint, open, high, low, close,"
                    " volume FROM candles WHERE symbol = %s AND interval = '1m' ORDER BY time",
                    (symbol,),
                ).fetchall()
                times = [c[0] for c in candles]
                assert times == list(range(times[0], times[-1] + MINUTE_MS, MINUTE_MS)), symbol
                rest = httpx.get(
                    f"{base}/api/v3/klines",
                    params={"symbol": symbol, "interval": "1m", "startTime": times[0],
                            "endTime": times[-1], "limit": 1000},
                    timeout=10,
                ).json()  # fmt: skip
                assert [tuple([r[0], *map(Decimal, r[1:6])]) for r in rest] == [
                    tuple(c) for c in candles
                ], symbol

    # Every frame of the other kinds serve received (what its relay client got) is stored.
    frames = [json.loads(m) for m in relay.messages]
    assert frames, "the relay client received nothing"
    book: set[tuple[str, int]] = set()
    ticker: set[tuple[str, int]] = set()
    depth: set[tuple[str, int]] = set()
    for frame in frames:
        symbol, kind = frame["stream"].split("@")
        data = frame["data"]
        if kind == "bookTicker":
            book.add((symbol.upper(), int(data["u"])))
        elif kind == "ticker":
            ticker.add((symbol.upper(), int(data["E"])))
        else:
            depth.add((symbol.upper(), int(data["lastUpdateId"])))
    assert book, "no bookTicker frame relayed"
    assert ticker, "no ticker frame relayed"
    assert depth, "no depth20 frame relayed"
    with psycopg.connect(database_url) as conn:
        stored_book = set(conn.execute("SELECT symbol, update_id FROM book_tickers").fetchall())
        stored_ticker = set(
            conn.execute(
                "SELECT symbol, (extract(epoch FROM time) * 1000)::bigint FROM tickers"
            ).fetchall()
        )
        stored_depth = set(
            conn.execute("SELECT symbol, last_update_id FROM depth_snapshots").fetchall()
        )
    assert book <= stored_book, sorted(book - stored_book)[:5]
    assert ticker <= stored_ticker, sorted(ticker - stored_ticker)[:5]
    assert depth <= stored_depth, sorted(depth - stored_depth)[:5]
