"""A network path to the database that freezes (no RST, no FIN) must not hang a stop.

``klinetrio serve`` writes through a TCP proxy; the proxy stops forwarding while every socket
stays open, so the writer's statement never returns. SIGTERM must still end serve within its
drain deadline plus 5 s, with one line saying how many candles were left unwritten, a non-zero
exit and no traceback. A restart with the path restored must heal every candle.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
from support.processes import (
    Command,
    exchange_time,
    free_port,
    health_of,
    hourly_archives,
    replay_dir,
    simulator,
    wait_http,
    wait_newest_closed,
    wait_until,
)
from support.proxy import ThreadedProxy

from klinetrio.collector import CLOSE_DEADLINE_S, DRAIN_DEADLINE_S

HOUR_MS = 3_600_000
SYMBOLS = ("BTCUSDT", "ETHUSDT")
MONTHS = ("2024-11", "2024-12", "2025-01", "2025-02")
START = "2024-12-31T12:00"
START_MS = 1735646400000


@pytest.mark.shared_data
def test_a_frozen_database_path_cannot_hang_a_stop_and_a_restart_heals(
    shared_data: Path, tmp_path: Path, database_url: str
) -> None:
    data = replay_dir(shared_data, tmp_path, hourly_archives(SYMBOLS, MONTHS))
    parts = urlsplit(database_url)
    with (
        ThreadedProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy,
        simulator(tmp_path, "--data", str(data), "--start", START, "--speed", "3600") as (
            _,
            base,
        ),
    ):
        http_port = free_port()
        url = f"http://127.0.0.1:{http_port}"
        env = {
            "KLINETRIO_DATABASE_URL": proxy.url_for(database_url),
            "KLINETRIO_SYMBOLS": ",".join(SYMBOLS),
            "KLINETRIO_INTERVALS": "1h",
            "KLINETRIO_WS_URL": base.replace("http://", "ws://"),
            "KLINETRIO_REST_URL": base,
            "KLINETRIO_HTTP_ADDR": f"127.0.0.1:{http_port}",
            "KLINETRIO_SYNC_LOOKBACK": "1d",
        }
        first = Command(["serve"], tmp_path / "serve-1.log", env=env)
        try:
            wait_http(f"{url}/ready", timeout=30, process=first)
            wait_until(
                lambda: health_of(url).get("candles_written", 0) >= 2 * 24 + 4,
                timeout=30,
                what="the look-back and a few live candles",
                process=first,
            )
            proxy.freeze()
            # Candles keep arriving; the writer's statement into the frozen path never returns.
            wait_until(
                lambda: health_of(url).get("buffer_size", 0) >= 4,
                timeout=30,
                what="candles held behind the frozen path",
                process=first,
            )
            first.signal(signal.SIGTERM)
            try:
                code = first.wait(DRAIN_DEADLINE_S + 5)
            except subprocess.TimeoutExpired:
                pytest.fail(
                    f"serve did not stop within the drain deadline + 5 s:\n{first.output()[-3000:]}"
                )
        finally:
            if first.process.poll() is None:
                first.kill()
        log = first.output()
        assert code != 0, log[-3000:]
        assert "Traceback" not in log
        unwritten = [line for line in log.splitlines() if "left unwritten; the next start" in line]
        assert len(unwritten) == 1, log[-3000:]
        assert "candles left unwritten; the next start refills them from REST" in unwritten[0]
        assert int(unwritten[0].split(" candles left")[0].split()[-1].replace(",", "")) >= 4

        proxy.restore()
        stopped_at = exchange_time(base)
        second = Command(["serve"], tmp_path / "serve-2.log", env=env)
        try:
            wait_http(f"{url}/ready", timeout=30, process=second)
            wait_until(
                lambda: exchange_time(base) >= stopped_at + 3 * HOUR_MS,
                timeout=30,
                what="three more hours on the exchange",
            )
            newest_closed = wait_newest_closed(base, url, [f"{s} 1h" for s in SYMBOLS], HOUR_MS)
            second.signal(signal.SIGTERM)
            assert second.wait(15) == 0, second.output()[-3000:]
        finally:
            if second.process.poll() is None:
                second.kill()
        expected = {
            s: httpx.get(
                f"{base}/api/v3/klines",
                params={"symbol": s, "interval": "1h", "startTime": START_MS - 30 * HOUR_MS},
            ).json()
            for s in SYMBOLS
        }
    assert "Traceback" not in second.output()
    with psycopg.connect(database_url) as conn:
        for symbol in SYMBOLS:
            rows = conn.execute(
                """
                SELECT (extract(epoch FROM time) * 1000)::bigint, open::text, high::text, low::text,
                       close::text, volume::text, (extract(epoch FROM close_time) * 1000)::bigint,
                       quote_volume::text, trades, taker_buy_volume::text, taker_buy_quote_volume::text
                  FROM candles WHERE symbol = %s ORDER BY time
                """,
                (symbol,),
            ).fetchall()
            times = [int(r[0]) for r in rows]
            assert times == list(range(times[0], times[-1] + HOUR_MS, HOUR_MS)), symbol
            assert times[-1] >= newest_closed
            served = {int(r[0]): r[:11] for r in expected[symbol]}
            for row in rows:
                assert list(row) == served[int(row[0])], (symbol, row)


def test_a_second_signal_ends_serve_at_once_even_with_a_frozen_database(
    tmp_path: Path, database_url: str
) -> None:
    parts = urlsplit(database_url)
    with (
        ThreadedProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy,
        simulator(tmp_path, "--speed", "600") as (_, base),
    ):
        http_port = free_port()
        url = f"http://127.0.0.1:{http_port}"
        env = {
            "KLINETRIO_DATABASE_URL": proxy.url_for(database_url),
            "KLINETRIO_WS_URL": base.replace("http://", "ws://"),
            "KLINETRIO_REST_URL": base,
            "KLINETRIO_HTTP_ADDR": f"127.0.0.1:{http_port}",
            "KLINETRIO_SYNC_LOOKBACK": "30m",
        }
        serve = Command(["serve"], tmp_path / "serve.log", env=env)
        try:
            wait_http(f"{url}/ready", timeout=30, process=serve)
            proxy.freeze()
            wait_until(
                lambda: health_of(url).get("buffer_size", 0) >= 2,
                timeout=30,
                what="candles held behind the frozen path",
                process=serve,
            )
            serve.signal(signal.SIGTERM)
            wait_until(
                lambda: "draining the writer" in serve.output(), timeout=10, what="the first stop"
            )
            serve.signal(signal.SIGTERM)
            try:
                code = serve.wait(CLOSE_DEADLINE_S + 3)  # not the drain deadline: at once
            except subprocess.TimeoutExpired:
                pytest.fail(f"a second SIGTERM did not end serve:\n{serve.output()[-3000:]}")
        finally:
            if serve.process.poll() is None:
                serve.kill()
    log = serve.output()
    assert code != 0
    assert "Traceback" not in log
    assert "received SIGTERM again: stopping without draining" in log
