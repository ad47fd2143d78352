"""Retention by serve on plain PostgreSQL, table sizes, and candle_features, on a real server."""

from __future__ import annotations

import math
import statistics
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
import trio
from support.candles import january_2020

from klinetrio.core.intervals import DAY_MS, MINUTE_MS
from klinetrio.core.models import Candle
from klinetrio.store.database import Database
from klinetrio.store.retention import Retention
from klinetrio.store.sizes import SizeMonitor, table_sizes

JAN1 = 1_577_836_800_000


def minute(symbol: str, i: int, interval: str = "1m") -> Candle:
    t = JAN1 + i * MINUTE_MS
    return Candle(
        symbol,
        interval,
        t,
        (t + MINUTE_MS - 1) * 1000,
        "1",
        "2",
        "0.5",
        "1.5",
        "3",
        "4",
        5,
        "1",
        "2",
        "rest",
    )


async def inline(fn, *args):  # type: ignore[no-untyped-def]
    return fn(*args)


async def test_retention_removes_exactly_the_rows_past_the_horizon(database_url: str) -> None:
    db = Database(database_url)
    db.migrate()
    rows = [
        minute(s, i, iv)
        for s in ("BTCUSDT", "ETHUSDT")
        for iv in ("1m", "5m")
        for i in range(2_000)
    ]
    db.write(rows)
    db.close()
    now = JAN1 + 2 * DAY_MS
    keep = 2 * DAY_MS - 1_000 * MINUTE_MS  # the horizon is JAN1 + 1000 minutes
    retention = Retention(
        database_url, [("candles", keep)], batch=300, clock=lambda: now, offload=inline
    )
    with trio.fail_after(30):
        deleted = await retention.purge()
        again = await retention.purge()
    assert deleted == 4 * 1_000
    assert again == 0
    stats = retention.statistics()
    assert stats.passes == 2
    assert stats.deleted == 4_000
    assert stats.last_pass_at == "2020-01-03T00:00:00Z"
    assert stats.errors == 0
    assert stats.tables == {"candles": "1880m"}
    with psycopg.connect(database_url) as conn:
        left = conn.execute(
            "SELECT symbol, interval, count(*), min(time) FROM candles GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()
    horizon = conn_time(JAN1 + 1_000 * MINUTE_MS)
    assert [(s, i, n) for s, i, n, _ in left] == [
        ("BTCUSDT", "1m", 1_000),
        ("BTCUSDT", "5m", 1_000),
        ("ETHUSDT", "1m", 1_000),
        ("ETHUSDT", "5m", 1_000),
    ]
    assert {t for *_, t in left} == {horizon}


def conn_time(t_ms: int):  # type: ignore[no-untyped-def]
    from klinetrio.core.models import ms_to_datetime

    return ms_to_datetime(t_ms)


async def test_the_retention_task_runs_hourly_and_reports_errors(
    database_url: str, autojump_clock: trio.testing.MockClock
) -> None:
    db = Database(database_url)
    db.migrate()
    db.write([minute("BTCUSDT", i) for i in range(10)])
    db.close()
    now = [JAN1 + 10 * MINUTE_MS]
    retention = Retention(
        database_url, [("candles", 5 * MINUTE_MS)], clock=lambda: now[0], offload=inline
    )
    with trio.fail_after(4 * 3600):  # virtual seconds: the clock jumps
        async with trio.open_nursery() as nursery:
            await nursery.start(retention.run)
            assert retention.statistics().deleted == 5  # the first pass runs at start
            now[0] += 3 * MINUTE_MS
            await trio.sleep(3600.5)
            assert retention.statistics().passes == 2
            assert retention.statistics().deleted == 8
            nursery.cancel_scope.cancel()
    broken = Retention(
        "postgresql://postgres@127.0.0.1:1/none", [("candles", DAY_MS)], offload=inline
    )
    with trio.fail_after(30):
        assert await broken.purge() == 0
    assert broken.statistics().errors == 1
    assert "cannot connect" in (broken.statistics().last_error or "")


def test_table_sizes_on_plain_postgresql(database_url: str) -> None:
    db = Database(database_url)
    db.migrate()
    db.write([minute("BTCUSDT", i) for i in range(1_000)])
    db.close()
    with psycopg.connect(database_url) as conn:
        sizes = table_sizes(conn)
    assert [s.table for s in sizes][:3] == ["candles", "long_short_ratios", "open_interest"]
    assert sizes[0].total_bytes > 100_000
    assert not sizes[0].hypertable
    assert sizes[0].before_compression_bytes is None


async def test_the_size_monitor_keeps_a_snapshot(database_url: str) -> None:
    Database(database_url).migrate()
    monitor = SizeMonitor(database_url, offload=inline)
    assert monitor.statistics().tables == ()
    with trio.fail_after(30):
        await monitor.measure()
    assert monitor.statistics().tables[0].table == "candles"
    assert monitor.statistics().measured_at is not None


def test_candle_features_match_a_computation_in_python(
    database_url: str, shared_data: Path
) -> None:
    candles = january_2020(shared_data)
    db = Database(database_url)
    db.migrate()
    db.write(candles)
    db.close()
    window = 20
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT (extract(epoch FROM time) * 1000)::bigint, close, volume, close_minmax,"
            " close_zscore, volume_minmax, volume_zscore, log_return"
            " FROM candle_features('spot', 'BTCUSDT', '1m', %s, %s::timestamptz, %s::timestamptz)",
            (window, "2020-01-01 00:10+00", "2020-01-02 00:00+00"),
        ).fetchall()
    assert len(rows) == 1440 - 10
    closes = [Decimal(c.close) for c in candles]
    volumes = [Decimal(c.volume) for c in candles]
    for t, close, volume, c_mm, c_z, v_mm, v_z, log_return in rows:
        i = (t - JAN1) // MINUTE_MS
        assert close == closes[i]
        assert log_return == pytest.approx(math.log(closes[i] / closes[i - 1]), rel=1e-12)
        if i < window - 1:
            assert c_mm is None  # not a whole window before it
            assert c_z is None
            continue
        for value, series, mm, z in ((close, closes, c_mm, c_z), (volume, volumes, v_mm, v_z)):
            frame = series[i - window + 1 : i + 1]
            low, high = min(frame), max(frame)
            assert mm == pytest.approx(float((value - low) / (high - low)), rel=1e-12)
            assert z == pytest.approx(
                float((value - statistics.mean(frame)) / statistics.stdev(frame)), rel=1e-9
            )
    with psycopg.connect(database_url) as conn, pytest.raises(psycopg.errors.InvalidParameterValue):
        conn.execute("SELECT * FROM candle_features('spot', 'BTCUSDT', '1m', 1, now(), now())")
