"""``klinetrio serve`` against ``klinetrio simulate``, both as real subprocesses.

The simulator replays real Binance candles (BTCUSDT and ETHUSDT 1h, across the archives'
switch from milliseconds to microseconds on 2025-01-01) on an accelerated clock. The table must
end with every candle that closed while serve ran, exactly once, every field equal to what the
exchange serves, and nothing for a candle still open.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import psycopg
import pytest
from support.processes import (
    Command,
    free_port,
    health_of,
    hourly_archives,
    replay_dir,
    simulator,
    wait_http,
    wait_newest_closed,
    wait_until,
)

HOUR_MS = 3_600_000
SYMBOLS = ("BTCUSDT", "ETHUSDT")
MONTHS = ("2024-11", "2024-12", "2025-01", "2025-02")
START = "2024-12-31T12:00"  # the exchange clock at start; the first 2025 candles come live
START_MS = 1735646400000
SPEED = 3600.0  # an hour candle closes every real second


def exchange_rows(base: str, symbol: str, start_ms: int, end_ms: int) -> list[list[object]]:
    rows: list[list[object]] = []
    cursor = start_ms
    while cursor <= end_ms:
        page = httpx.get(
            f"{base}/api/v3/klines",
            params={
                "symbol": symbol,
                "interval": "1h",
                "startTime": cursor,
                "endTime": end_ms,
                "limit": 1000,
            },
            timeout=10,
        ).json()
        rows.extend(page)
        if len(page) < 1000:
            break
        cursor = int(page[-1][0]) + HOUR_MS
    return rows


def table_rows(database_url: str, symbol: str) -> list[tuple[object, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            """
            SELECT (extract(epoch FROM time) * 1000)::bigint, open::text, high::text, low::text,
                   close::text, volume::text, (extract(epoch FROM close_time) * 1000)::bigint,
                   quote_volume::text, trades, taker_buy_volume::text,
                   taker_buy_quote_volume::text, source, market, interval
              FROM candles WHERE symbol = %s ORDER BY time
            """,
            (symbol,),
        ).fetchall()


@pytest.mark.shared_data
def test_serve_stores_every_closed_candle_exactly_once(
    shared_data: Path, tmp_path: Path, database_url: str
) -> None:
    data = replay_dir(shared_data, tmp_path, hourly_archives(SYMBOLS, MONTHS))
    http_port = free_port()
    with simulator(
        tmp_path,
        "--data",
        str(data),
        "--start",
        START,
        "--speed",
        str(SPEED),
        "--updates-per-second",
        "4",
    ) as (_, base):
        serve = Command(
            ["serve"],
            tmp_path / "serve.log",
            env={
                "KLINETRIO_DATABASE_URL": database_url,
                "KLINETRIO_SYMBOLS": "btcusdt,ETHUSDT",
                "KLINETRIO_INTERVALS": "1h",
                "KLINETRIO_WS_URL": base.replace("http://", "ws://"),
                "KLINETRIO_REST_URL": base,
                "KLINETRIO_HTTP_ADDR": f"127.0.0.1:{http_port}",
                "KLINETRIO_SYNC_LOOKBACK": "1d",
            },
        )
        health_url = f"http://127.0.0.1:{http_port}"
        try:
            wait_http(f"{health_url}/ready", timeout=30, process=serve)
            assert httpx.get(f"{health_url}/live").status_code == 200
            wait_until(  # a dozen candles per symbol arrive live
                lambda: (
                    sum(c["closed_candles"] for c in health_of(health_url)["connections"]) >= 24
                ),
                timeout=60,
                what="24 live candles",
                process=serve,
            )
            health = httpx.get(f"{health_url}/health").json()
            metrics = httpx.get(f"{health_url}/metrics").text
            assert health["status"] == "healthy"
            assert health["ready"] is True
            assert health["connections"][0]["subscribed"] is True
            assert "klinetrio_rows_written_total" in metrics
            assert "klinetrio_writer_latency_seconds_bucket" in metrics
            # Let the newest closed candle of each symbol arrive, then stop at once.
            newest_closed = wait_newest_closed(
                base, health_url, [f"{s} 1h" for s in SYMBOLS], HOUR_MS
            )
            stop_started = time.monotonic()
            serve.signal(signal.SIGTERM)
            code = serve.wait(15)
            stop_took = time.monotonic() - stop_started
        finally:
            if serve.process.poll() is None:
                serve.kill()
        end_now = int(httpx.get(f"{base}/api/v3/time").json()["serverTime"])
        log = serve.output()
        assert code == 0, log[-3000:]
        assert stop_took < 10
        assert "Traceback" not in log

        for symbol in SYMBOLS:
            stored = table_rows(database_url, symbol)
            times = [int(r[0]) for r in stored]  # type: ignore[call-overload]
            # From the look-back: a day before the exchange's "now" when serve started, which at
            # this speed is a few hours after the simulator's start ...
            assert START_MS - 24 * HOUR_MS <= times[0] <= START_MS - 16 * HOUR_MS
            # ... contiguous, exactly once ...
            assert times == list(range(times[0], times[-1] + HOUR_MS, HOUR_MS)), symbol
            # ... up to at least the candle that had closed when SIGTERM was sent, and nothing open.
            assert times[-1] >= newest_closed
            assert all(int(r[6]) < end_now for r in stored)  # type: ignore[call-overload]
            expected = exchange_rows(base, symbol, times[0], times[-1])
            assert len(expected) == len(stored)
            for row, source in zip(stored, expected, strict=True):
                assert list(row[:11]) == source[:11], (symbol, row, source)
                assert row[11] in ("ws", "rest")
                assert row[12:] == ("spot", "1h")
            assert any(r[11] == "ws" for r in stored), "no candle came live"
            assert any(r[11] == "rest" for r in stored), "the look-back did not come from REST"
