"""Derived intervals on plain PostgreSQL (TimescaleDB: test_timescale.py): the views equal the
aggregation of real candles, show only whole buckets, follow Binance's alignment, and follow the
settings from one start to the next."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from support.candles import aggregate, as_rows, january_2020, rest_candles

from klinetrio.core.intervals import DAY_MS, HOUR_MS
from klinetrio.core.models import StreamKey
from klinetrio.store.database import Database
from klinetrio.store.derived import existing_views, read_candles
from klinetrio.store.policies import StoreOptions

JAN1 = 1_577_836_800_000  # 2020-01-01T00:00Z


def options(derived: tuple[str, ...], intervals: tuple[str, ...] = ("1m",)) -> StoreOptions:
    return StoreOptions(derived_intervals=derived, collected_intervals=intervals)


def test_candles_1h_equals_the_aggregation_of_the_real_1m_archives(
    database_url: str, shared_data: Path
) -> None:
    minutes = january_2020(shared_data)
    db = Database(database_url)
    report = db.migrate(options(("1h", "10m")))
    assert report.layout is not None
    assert not report.layout.timescale
    assert db.write(minutes).count == 4320
    with psycopg.connect(database_url) as conn:
        hours = read_candles(conn, StreamKey("BTCUSDT", "1h"), JAN1, JAN1 + 3 * DAY_MS)
        assert len(hours) == 72
        assert as_rows(hours) == aggregate(minutes, "1h", HOUR_MS)
        assert {c.source for c in hours} == {"derived"}
        # The view itself says the same, and so does a range that starts inside a bucket.
        from_view = conn.execute(
            "SELECT count(*), min(time), max(close_time) FROM candles_1h WHERE symbol = 'BTCUSDT'"
        ).fetchone()
        assert from_view is not None
        assert from_view[0] == 72
        inside = read_candles(
            conn, StreamKey("BTCUSDT", "1h"), JAN1 + 90 * 60_000, JAN1 + 3 * HOUR_MS
        )
        assert [c.open_time for c in inside] == [JAN1 + 2 * HOUR_MS]
        tens = read_candles(
            conn, StreamKey("BTCUSDT", "10m"), JAN1, JAN1 + DAY_MS, limit=3, descending=True
        )
        assert [c.open_time for c in tens] == [JAN1 + DAY_MS - k * 600_000 for k in (1, 2, 3)]

        # One 1m row gone: its hour is not whole any more and disappears; the others stay.
        conn.execute("DELETE FROM candles WHERE time = '2020-01-02 13:37+00'")
        conn.commit()
        hours = read_candles(conn, StreamKey("BTCUSDT", "1h"), JAN1, JAN1 + 3 * DAY_MS)
        assert len(hours) == 71
        assert JAN1 + DAY_MS + 13 * HOUR_MS not in {c.open_time for c in hours}
        count = conn.execute("SELECT count(*) FROM candles_1h").fetchone()
        assert count == (71,)
    db.close()


def test_derived_3d_and_1w_open_where_binance_opens_them(
    database_url: str, shared_data: Path
) -> None:
    rest = shared_data / "rest"
    days = rest_candles(rest / "BTCUSDT_1d_2016-01-01.json", "BTCUSDT", "1d") + rest_candles(
        rest / "BTCUSDT_1d_2018-01-01.json", "BTCUSDT", "1d"
    )
    db = Database(database_url)
    db.migrate(options(("3d", "1w"), ("1d",)))
    db.write(days)
    first, last = days[0].open_time, days[-1].open_time + DAY_MS
    with psycopg.connect(database_url) as conn:
        derived_3d = read_candles(conn, StreamKey("BTCUSDT", "3d"), first, last)
        derived_1w = read_candles(conn, StreamKey("BTCUSDT", "1w"), first, last)
    db.close()
    # Binance's own 3d and 1w candles of the same years, where they are whole in the 1d data.
    binance_3d = {
        c.open_time: c for c in rest_candles(rest / "BTCUSDT_3d_2015-01-01.json", "BTCUSDT", "3d")
    }
    binance_1w = {
        c.open_time: c for c in rest_candles(rest / "BTCUSDT_1w_2010-01-01.json", "BTCUSDT", "1w")
    }
    assert len(derived_3d) > 280
    assert len(derived_1w) > 115
    for derived, binance in ((derived_3d, binance_3d), (derived_1w, binance_1w)):
        for candle in derived:
            theirs = binance[candle.open_time]
            assert as_rows([candle]) == as_rows([theirs]), candle.open_time


def test_views_follow_the_settings_from_start_to_start(database_url: str) -> None:
    db = Database(database_url)
    first = db.migrate(options(("2m", "10m")))
    again = db.migrate(options(("2m", "10m")))
    changed = db.migrate(options(("10m", "45m"), ("1m", "5m")))
    untouched = db.migrate()  # without options (backfill): the views stay as they are
    assert first.layout is not None
    assert again.layout is not None
    assert changed.layout is not None
    assert untouched.layout is None
    assert first.layout.changes == (
        "created 2m from 1m (view)",
        "created 10m from 1m (view)",
    )
    assert again.layout.changes == ()
    assert changed.layout.changes == ("dropped candles_2m", "created 45m from 1m (view)")
    with psycopg.connect(database_url) as conn:
        assert sorted(existing_views(conn)) == ["candles_10m", "candles_45m"]
        # A view of that name that klinetrio did not make is left alone.
        conn.execute("CREATE VIEW candles_3m AS SELECT 1 AS x")
        conn.commit()
    db.migrate(options(("3m",)))
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT x FROM candles_3m").fetchone() == (1,)
    db.close()


def test_compression_unavailable_is_one_warning(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from loguru import logger

    messages: list[str] = []
    sink = logger.add(lambda m: messages.append(str(m)), level="WARNING")
    logger.enable("klinetrio")
    try:
        db = Database(database_url)
        db.migrate(StoreOptions())
        db.migrate(StoreOptions(compress_after_ms=None))
        db.close()
    finally:
        logger.remove(sink)
        logger.disable("klinetrio")
    assert sum("compression needs TimescaleDB" in m for m in messages) == 1
