"""The hypertable path, against a server with TimescaleDB.

Runs when ``KLINETRIO_TEST_TIMESCALE_URL`` names such a server (a URL where we may CREATE
DATABASE; the extension must be in ``shared_preload_libraries``); skipped otherwise, as in CI,
where plain PostgreSQL is tested by every other test.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from klinetrio.core.models import Candle
from klinetrio.store.database import Database
from klinetrio.store.migrations import migrations_dir
from klinetrio.store.schema import HYPERTABLE_NAMES

SERVER = os.environ.get("KLINETRIO_TEST_TIMESCALE_URL")
pytestmark = pytest.mark.skipif(
    SERVER is None, reason="set KLINETRIO_TEST_TIMESCALE_URL to test TimescaleDB"
)


@pytest.fixture
def timescale_url() -> Iterator[str]:
    assert SERVER is not None
    name = f"klinetrio_ts_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(SERVER, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(SERVER)
    yield urlunsplit(parts._replace(path=f"/{name}"))
    with psycopg.connect(SERVER, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def candle(hour: int) -> Candle:
    t = 1_704_067_200_000 + hour * 3_600_000
    return Candle(
        "BTCUSDT",
        "1h",
        t,
        (t + 3_599_999) * 1000,
        "42000.1",
        "42100",
        "41900",
        "42050.5",
        "1",
        "42000",
        7,
        "0.5",
        "21000",
    )


def test_candles_becomes_a_hypertable_and_stays_idempotent(timescale_url: str) -> None:
    db = Database(timescale_url)
    first = db.migrate()
    second = db.migrate()
    assert first.hypertable
    assert second.hypertable
    assert second.applied == ()
    assert db.write([candle(h) for h in range(48)]).count == 48
    assert db.write([candle(h) for h in range(48)]).count == 0
    db.close()
    with psycopg.connect(timescale_url) as conn:
        hypertables = conn.execute(
            "SELECT hypertable_name FROM timescaledb_information.hypertables"
        ).fetchall()
        buckets = conn.execute(
            "SELECT time_bucket('1 day', time) AS day, max(high)::text, count(*) FROM candles GROUP BY day ORDER BY day"
        ).fetchall()
    # Every table of schema.HYPERTABLES, candles and the others alike.
    assert sorted(h for (h,) in hypertables) == sorted(HYPERTABLE_NAMES)
    assert [(b[1], b[2]) for b in buckets] == [("42100", 24), ("42100", 24)]


def test_an_existing_plain_table_is_converted_with_its_rows(timescale_url: str) -> None:
    with psycopg.connect(timescale_url) as conn:
        conn.execute((migrations_dir() / "0001_candles.sql").read_text().encode())
        conn.execute(
            "INSERT INTO candles VALUES ('spot','BTCUSDT','1h','2024-01-01','2024-01-01 00:59:59.999',"
            "1,1,1,1,1,1,1,1,1,'rest')"
        )
    db = Database(timescale_url)
    assert db.migrate().hypertable
    assert db.count() == 1
    db.close()


# --- the store over years: policies, compression, derived intervals ------------------------------

JAN1 = 1_577_836_800_000


def jobs(url: str) -> list[tuple[str, str, str]]:
    from klinetrio.store.policies import policies

    with psycopg.connect(url) as conn:
        return policies(conn)


def test_policies_exist_as_configured_and_follow_changed_settings(timescale_url: str) -> None:
    from klinetrio.store.policies import StoreOptions

    db = Database(timescale_url)
    first = db.migrate(
        StoreOptions(
            compress_after_ms=7 * 86_400_000,
            retention=(("candles", 4000 * 86_400_000),),
            derived_intervals=("1h",),
        )
    )
    assert first.layout is not None
    assert first.layout.timescale
    assert jobs(timescale_url) == sorted(
        [
            *((t, "policy_compression", "7 days") for t in HYPERTABLE_NAMES),
            ("candles", "policy_retention", "4000 days"),
            ("candles_1h", "policy_refresh_continuous_aggregate", "01:00:00"),
        ]
    )
    same = db.migrate(
        StoreOptions(
            compress_after_ms=7 * 86_400_000,
            retention=(("candles", 4000 * 86_400_000),),
            derived_intervals=("1h",),
        )
    )
    assert same.layout is not None
    assert same.layout.changes == ()
    db.migrate(StoreOptions(compress_after_ms=3 * 86_400_000, derived_intervals=("1h",)))
    assert jobs(timescale_url) == sorted(
        [
            *((t, "policy_compression", "3 days") for t in HYPERTABLE_NAMES),
            ("candles_1h", "policy_refresh_continuous_aggregate", "01:00:00"),
        ]
    )
    db.migrate(StoreOptions(compress_after_ms=None))
    assert jobs(timescale_url) == []
    with psycopg.connect(timescale_url) as conn:
        settings = conn.execute(
            "SELECT segmentby, orderby FROM timescaledb_information.hypertable_compression_settings"
            " WHERE hypertable = 'candles'::regclass"
        ).fetchone()
    assert settings == ("market,symbol,interval", '"time" DESC')
    db.close()


def compress_all(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "SELECT compress_chunk(c, if_not_compressed => true) FROM show_chunks('candles') c"
        )
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE is_compressed), count(*) FROM timescaledb_information.chunks"
            " WHERE hypertable_name = 'candles'"
        ).fetchone()
    assert row is not None
    assert row[0] == row[1]
    return int(row[0])


def test_compression_keeps_every_value_and_a_backfill_lands_once(
    timescale_url: str, shared_data: Path
) -> None:
    from support.candles import checksum, january_2020

    from klinetrio.store.policies import StoreOptions
    from klinetrio.store.sizes import table_sizes

    minutes = january_2020(shared_data)
    reference = Database(timescale_url)
    reference.migrate(StoreOptions(compress_after_ms=None))
    reference.write(minutes)
    whole = checksum(timescale_url)
    assert compress_all(timescale_url) >= 1
    assert checksum(timescale_url) == whole  # compress_chunk kept every value
    with psycopg.connect(timescale_url) as conn:
        sizes = table_sizes(conn)
    assert sizes[0].hypertable
    assert sizes[0].compressed_chunks == sizes[0].chunks
    assert sizes[0].before_compression_bytes is not None
    assert sizes[0].after_compression_bytes is not None
    assert sizes[0].after_compression_bytes < sizes[0].before_compression_bytes

    # A backfill of old history into compressed chunks: only the missing rows land, once.
    with psycopg.connect(timescale_url) as conn:
        conn.execute("TRUNCATE candles")
    holes = {5, 700, 1439, 2000, 4319}
    reference.write([c for i, c in enumerate(minutes) if i not in holes])
    compress_all(timescale_url)
    assert reference.write(minutes).count == len(holes)
    assert reference.write(minutes).count == 0
    assert reference.count() == 4320
    assert checksum(timescale_url) == whole
    reference.close()


def test_candles_1h_is_a_continuous_aggregate_of_the_real_1m_archives(
    timescale_url: str, shared_data: Path
) -> None:
    from support.candles import aggregate, as_rows, january_2020

    from klinetrio.core.models import StreamKey
    from klinetrio.store.derived import read_candles
    from klinetrio.store.policies import StoreOptions

    minutes = january_2020(shared_data)
    db = Database(timescale_url)
    report = db.migrate(StoreOptions(compress_after_ms=None, derived_intervals=("1h",)))
    assert report.layout is not None
    assert "created 1h from 1m (continuous aggregate)" in report.layout.changes
    db.write(minutes)
    key = StreamKey("BTCUSDT", "1h")
    expected = aggregate(minutes, "1h", 3_600_000)
    with psycopg.connect(timescale_url, autocommit=True) as conn:
        # Real-time aggregation: right without any refresh...
        assert as_rows(read_candles(conn, key, JAN1, JAN1 + 3 * 86_400_000)) == expected
        conn.execute("CALL refresh_continuous_aggregate('candles_1h', NULL, NULL)")
        # ... and from the materialized buckets after one.
        assert as_rows(read_candles(conn, key, JAN1, JAN1 + 3 * 86_400_000)) == expected
        conn.execute("DELETE FROM candles WHERE time = '2020-01-02 13:37+00'")
        conn.execute("CALL refresh_continuous_aggregate('candles_1h', NULL, NULL)")
        hours = read_candles(conn, key, JAN1, JAN1 + 3 * 86_400_000)
    assert len(hours) == 71
    assert JAN1 + 86_400_000 + 13 * 3_600_000 not in {c.open_time for c in hours}
    db.close()


def test_backup_and_restore_keep_hypertables_compressed_chunks_and_aggregates(
    timescale_url: str, shared_data: Path, tmp_path: Path
) -> None:
    from support.candles import checksum, january_2020

    from klinetrio.core.models import StreamKey
    from klinetrio.store.derived import read_candles
    from klinetrio.store.dump import backup_to, restore_from
    from klinetrio.store.policies import StoreOptions

    db = Database(timescale_url)
    db.migrate(StoreOptions(compress_after_ms=None, derived_intervals=("1h",)))
    db.write(january_2020(shared_data))
    db.close()
    compress_all(timescale_url)
    # A backup taken while the refresh policy is half way: TimescaleDB moves the watermark with
    # the first batch (the newest buckets), so the older ones are neither materialized nor
    # aggregated in real time until the rest of the refresh; the restore must not keep that.
    with psycopg.connect(timescale_url, autocommit=True) as conn:
        conn.execute(
            "CALL refresh_continuous_aggregate('candles_1h', '2020-01-02 22:00+00',"
            " '2020-01-04 00:00+00')"
        )
        (half,) = conn.execute("SELECT count(*) FROM candles_1h").fetchone()  # type: ignore[misc]
    assert half < 72
    before = checksum(timescale_url)
    out = tmp_path / "klinetrio-20240101T000000Z.dump"
    backup_to(timescale_url, out, embedded=False)
    assert SERVER is not None
    target = urlunsplit(urlsplit(SERVER)._replace(path=f"/klinetrio_ts_r_{uuid.uuid4().hex[:8]}"))
    with psycopg.connect(SERVER, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{urlsplit(target).path[1:]}"')
    try:
        restore_from(target, out, embedded=False)
        assert checksum(target) == before
        with psycopg.connect(target) as conn:
            assert conn.execute(
                "SELECT count(*) FROM timescaledb_information.hypertables"
            ).fetchone() == (len(HYPERTABLE_NAMES),)
            assert conn.execute("SHOW timescaledb.restoring").fetchone() == ("off",)
            hours = read_candles(conn, StreamKey("BTCUSDT", "1h"), JAN1, JAN1 + 3 * 86_400_000)
            state = conn.execute(
                "SELECT _timescaledb_functions.to_timestamp("
                "_timescaledb_functions.cagg_watermark(mat_hypertable_id))::text"
                " FROM _timescaledb_catalog.continuous_agg"
            ).fetchall()
            jobs_run = conn.execute(
                "SELECT job_id, last_run_status, last_successful_finish::text, total_runs"
                " FROM timescaledb_information.job_stats"
            ).fetchall()
        assert len(hours) == 72, (len(hours), state, jobs_run)
    finally:
        with psycopg.connect(SERVER, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{urlsplit(target).path[1:]}" WITH (FORCE)')
