"""Unattended for months, compressed into half a minute: every fault at once.

``klinetrio serve`` runs against ``klinetrio simulate`` replaying real candles with connections
dropped every few dozen frames, forced closes (Binance's 24-hour limit, accelerated) every few
seconds, 3% garbage and 5% duplicate frames; meanwhile the database goes away for four seconds,
and the collector is killed with SIGKILL and restarted. The table must still end with every
candle of the window exactly once and exact, no 418 ever, and SIGTERM must still exit 0.
"""

from __future__ import annotations

import signal
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

HOUR_MS = 3_600_000
SYMBOLS = ("BTCUSDT", "ETHUSDT")
MONTHS = ("2024-11", "2024-12", "2025-01", "2025-02")
START = "2024-12-31T12:00"
START_MS = 1735646400000


@pytest.mark.shared_data
def test_no_candle_is_lost_or_doubled_under_every_fault(
    shared_data: Path, tmp_path: Path, database_url: str
) -> None:
    data = replay_dir(shared_data, tmp_path, hourly_archives(SYMBOLS, MONTHS))
    parts = urlsplit(database_url)
    faults = [
        "--drop-after",
        "35",
        "--drop-spread",
        "0.6",
        "--close-after",
        "3",
        "--shutdown-grace",
        "0.5",
        "--garbage",
        "0.03",
        "--duplicates",
        "0.05",
    ]
    with (
        ThreadedProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy,
        simulator(
            tmp_path,
            "--data",
            str(data),
            "--start",
            START,
            "--speed",
            "3600",
            "--updates-per-second",
            "4",
            *faults,
        ) as (sim, base),
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
        statuses: list[str] = []

        def status_changes() -> str:
            status = str(health_of(url).get("status"))
            if not statuses or status != statuses[-1]:
                statuses.append(status)
            return status

        try:
            wait_http(f"{url}/ready", timeout=30, process=first)
            status_changes()
            written = lambda: int(health_of(url).get("candles_written", 0))  # noqa: E731
            wait_until(
                lambda: written() >= 2 * 24 + 8, timeout=30, what="live candles", process=first
            )
            proxy.cut()
            # The database is away while eight hours of candles arrive and are held.
            wait_until(
                lambda: status_changes() != "healthy" and health_of(url).get("buffer_size", 0) >= 8,
                timeout=30,
                what="candles held through the outage",
                process=first,
            )
            proxy.restore()
            wait_until(
                lambda: status_changes() == "healthy" and health_of(url).get("buffer_size", 1) == 0,
                timeout=30,
                what="the writer to catch up",
                process=first,
            )
            caught_up = written()
            wait_until(lambda: written() >= caught_up + 6, timeout=30, what="more live candles")
        finally:
            first.kill()  # SIGKILL: whatever it held in memory is gone
        killed_at = exchange_time(base)
        # Candles close while nothing collects.
        wait_until(lambda: exchange_time(base) >= killed_at + 2 * HOUR_MS, timeout=30, what="time")
        second = Command(["serve"], tmp_path / "serve-2.log", env=env)
        try:
            wait_http(f"{url}/ready", timeout=30, process=second)
            wait_until(
                lambda: exchange_time(base) >= killed_at + 8 * HOUR_MS,
                timeout=30,
                what="six more hours on the exchange",
            )
            # A drop can swallow the newest candle; sync must bring it within seconds.
            newest_closed = wait_newest_closed(base, url, [f"{s} 1h" for s in SYMBOLS], HOUR_MS)
            second.signal(signal.SIGTERM)
            code = second.wait(15)
        finally:
            if second.process.poll() is None:
                second.kill()
        sim_log = sim.output()
        expected = {
            s: httpx.get(
                f"{base}/api/v3/klines",
                params={
                    "symbol": s,
                    "interval": "1h",
                    "startTime": START_MS - 30 * HOUR_MS,
                    "limit": 1000,
                },
            ).json()
            for s in SYMBOLS
        }

    logs = first.output() + second.output()
    assert code == 0, second.output()[-3000:]
    assert "Traceback" not in logs
    assert statuses[0] == "healthy"
    assert "degraded" in statuses
    assert statuses[-1] == "healthy"
    assert "answered 418" not in sim_log
    # The faults really happened, and rotations overlapped (make-before-break).
    assert "dropping the connection" in sim_log
    assert "caught up and closed" in logs
    assert "malformed frame" in logs
    # A person can follow it: a handful of warnings per fault, not a flood.
    warnings = [line for line in logs.splitlines() if " WARNING " in line or " ERROR " in line]
    assert len(warnings) < 80, "\n".join(warnings)

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
            assert times[0] <= START_MS - 16 * HOUR_MS  # the start-up look-back
            assert times == list(range(times[0], times[-1] + HOUR_MS, HOUR_MS)), symbol
            assert times[-1] >= newest_closed
            served = {int(r[0]): r[:11] for r in expected[symbol]}
            for row in rows:
                assert list(row) == served[int(row[0])], (symbol, row)
