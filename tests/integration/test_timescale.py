"""The hypertable path, against a server with TimescaleDB.

Runs when ``KLINETRIO_TEST_TIMESCALE_URL`` names such a server (a URL where we may CREATE
DATABASE; the extension must be in ``shared_preload_libraries``); skipped otherwise, as in CI,
where plain PostgreSQL is tested by every other test.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from klinetrio.core.models import Candle
from klinetrio.store.database import Database, migrations_dir

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
    assert hypertables == [("candles",)]
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
