"""``klinetrio backfill --source rest`` against ``klinetrio simulate`` replaying the real archives.

REST only (``tests/e2e/test_archives.py`` has the archives): a fake exchange with a weight limit
of a few dozen per few seconds: the backfill must pace itself
(no 418 ever), store every closed candle exactly as served, nothing for the candle in progress,
remember the real holes (the 2023-03-24 13:00 halt, the months the archives lack), and a rerun
must change nothing.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import psycopg
import pytest
from support.processes import Command, simulator

HOUR_MS = 3_600_000
MINUTE_MS = 60_000
NOW = "2025-05-31T12:05"  # the exchange clock at start: the 12:00 candle is in progress
NOW_MS = 1748693100000
# The exchange clock runs 30 times faster than ours: a suspected hole is asked about again a
# minute of exchange time later (2 s), and the 12:00 candle stays in progress for the 110 s
# of real time the test may take.
SPEED = "30"


def replay_dir(shared_data: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    spot = shared_data / "vision" / "spot"
    for path in [*spot.glob("BTCUSDT-1h-*.csv"), *spot.glob("BTCUSDT-1m-2020-01-0*.zip")]:
        (data / path.name).symlink_to(path)
    return data


def exchange_rows(base: str, interval: str, start_ms: int, end_ms: int) -> list[list[object]]:
    rows: list[list[object]] = []
    cursor = start_ms
    while True:
        response = httpx.get(
            f"{base}/api/v3/klines",
            params={
                "symbol": "BTCUSDT",
                "interval": interval,
                "startTime": cursor,
                "endTime": end_ms,
                "limit": 1000,
            },
            timeout=10,
        )
        if response.status_code == 429:  # the test's own reads share the exchange's limit
            time.sleep(float(response.headers["Retry-After"]))
            continue
        page = response.json()
        rows.extend(page)
        if len(page) < 1000:
            return rows
        cursor = int(page[-1][0]) + 1


def table(database_url: str, interval: str) -> list[list[object]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            """
            SELECT (extract(epoch FROM time) * 1000)::bigint, open::text, high::text, low::text,
                   close::text, volume::text, (extract(epoch FROM close_time) * 1000)::bigint,
                   quote_volume::text, trades, taker_buy_volume::text, taker_buy_quote_volume::text
              FROM candles WHERE symbol = 'BTCUSDT' AND interval = %s ORDER BY time
            """,
            (interval,),
        ).fetchall()
    return [list(r) for r in rows]


@pytest.mark.shared_data
def test_backfill_is_exact_paced_and_idempotent(
    shared_data: Path, tmp_path: Path, database_url: str
) -> None:
    data = replay_dir(shared_data, tmp_path)
    with simulator(
        tmp_path,
        "--data",
        str(data),
        "--start",
        NOW,
        "--speed",
        SPEED,
        "--weight-limit",
        "40",
        "--weight-window",
        "5",
    ) as (sim, base):
        env = {"KLINETRIO_DATABASE_URL": database_url, "KLINETRIO_REST_URL": base}
        runs = []
        for attempt in (1, 2):
            for args in (
                [
                    "--symbol",
                    "btcusdt",
                    "--interval",
                    "1h",
                    "--start",
                    "2023-01-01",
                    "--source",
                    "rest",
                ],
                [
                    "--symbol",
                    "BTCUSDT",
                    "--interval",
                    "1m",
                    "--start",
                    "2020-01-01",
                    "--end",
                    "2020-01-04",
                    "--source",
                    "rest",
                ],
            ):
                run = Command(
                    ["backfill", *args], tmp_path / f"backfill-{attempt}-{args[3]}.log", env=env
                )
                assert run.wait(120) == 0, run.output()[-3000:]
                runs.append(run.output())
                if attempt == 1:
                    snapshot = {"1h": table(database_url, "1h"), "1m": table(database_url, "1m")}
        hours = table(database_url, "1h")
        minutes = table(database_url, "1m")
        expected_hours = exchange_rows(base, "1h", 1672531200000, NOW_MS)
        expected_minutes = exchange_rows(base, "1m", 1577836800000, 1578096000000 - 1)
        sim_log = sim.output()

    # Every closed candle, exactly as the exchange serves it; the one in progress is not final.
    assert expected_hours[-1][0] == NOW_MS - 5 * MINUTE_MS  # REST does serve it ...
    assert hours == [r[:11] for r in expected_hours[:-1]]  # ... and backfill does not store it
    assert minutes == [r[:11] for r in expected_minutes]
    assert len(minutes) == 3 * 1440
    # The real halt stays a hole: 743 hours in March 2023.
    march = [r for r in hours if 1677628800000 <= int(r[0]) < 1680307200000]  # type: ignore[call-overload]
    assert len(march) == 743
    # Paced under 40 weight per 5 s: never banned.
    assert "answered 418" not in sim_log
    # A rerun fetches nothing and changes nothing.
    assert {"1h": hours, "1m": minutes} == snapshot
    for output in runs[2:]:
        assert "backfill done: 0 candles fetched" in output, output[-2000:]
    with psycopg.connect(database_url) as conn:
        holes = conn.execute(
            "SELECT to_char(start_time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'),"
            " to_char(end_time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI')"
            " FROM candle_holes WHERE interval = '1h' ORDER BY start_time"
        ).fetchall()
    assert ("2023-03-24 13:00", "2023-03-24 14:00") in holes
    assert ("2023-06-01 00:00", "2024-11-01 00:00") in holes
