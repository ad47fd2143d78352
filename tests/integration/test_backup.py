"""Backups, restores and exports against a real PostgreSQL server: what comes back is the table.

The embedded database's round trip, through the real CLI, is in tests/e2e/test_backup_cli.py.
"""

from __future__ import annotations

import csv
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
import trio
from conftest import with_database
from psycopg import sql
from support.candles import checksum, january_2020, rest_candles

from klinetrio.core.backups import backup_name, parse_time_of_day, to_delete
from klinetrio.core.models import StreamKey
from klinetrio.errors import BackupError
from klinetrio.store.backups import Backups
from klinetrio.store.database import Database
from klinetrio.store.dump import backup_to, restore_from, server_major, tool_for
from klinetrio.store.export import CSV_HEADER, export
from klinetrio.store.policies import StoreOptions

JAN1 = 1_577_836_800_000


@pytest.fixture
def fresh_url(pg_server_url: str) -> Iterator[str]:
    """A second empty database on the same server, to restore into."""
    name = f"klinetrio_restore_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    yield with_database(pg_server_url, name)
    with psycopg.connect(pg_server_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def filled(url: str, shared_data: Path) -> None:
    db = Database(url)
    db.migrate()
    db.write(january_2020(shared_data))
    db.write(rest_candles(shared_data / "rest" / "BTCUSDT_1h_2025-01-01.json", "BTCUSDT", "1h"))
    db.close()


def test_backup_then_restore_gives_an_identical_table(
    database_url: str, fresh_url: str, shared_data: Path, tmp_path: Path
) -> None:
    filled(database_url, shared_data)
    before = checksum(database_url)
    assert before[0] == 4320 + 744
    out = tmp_path / "klinetrio-20240101T000000Z.dump"
    size = backup_to(database_url, out, embedded=False)
    assert size == out.stat().st_size > 10_000
    assert not list(tmp_path.glob("*.partial"))
    assert out.read_bytes()[:5] == b"PGDMP"
    restore_from(fresh_url, out, embedded=False)
    assert checksum(fresh_url) == before
    # The restored database is klinetrio's: migrations have nothing left to do.
    assert Database(fresh_url).migrate().applied == ()
    # Once restored, it is no longer empty.
    with pytest.raises(BackupError, match="is not empty"):
        restore_from(fresh_url, out, embedded=False)


def test_the_tools_match_the_server_and_bad_files_are_refused(
    database_url: str, tmp_path: Path
) -> None:
    major = server_major(database_url)
    tool = tool_for("pg_dump", database_url, embedded=False)
    assert f"/{major}/" in str(tool.path) or "pginstall" in str(tool.path)
    assert "password" not in tool.dbname
    not_a_dump = tmp_path / "notes.dump"
    not_a_dump.write_text("hello")
    with pytest.raises(BackupError, match="not a pg_dump custom-format backup"):
        restore_from(database_url, not_a_dump, embedded=False)
    with pytest.raises(BackupError, match="no such backup file"):
        restore_from(database_url, tmp_path / "missing.dump", embedded=False)
    from klinetrio.store.dump import find_tool

    with pytest.raises(BackupError, match="no pg_dump of PostgreSQL 9 found"):
        find_tool("pg_dump", 9)


def test_export_csv_and_parquet_read_back_equal_the_table(
    database_url: str, shared_data: Path, tmp_path: Path
) -> None:
    pa_csv = pytest.importorskip("pyarrow.csv")
    pq = pytest.importorskip("pyarrow.parquet")
    filled(database_url, shared_data)
    key = StreamKey("BTCUSDT", "1m")
    end = JAN1 + 2 * 86_400_000
    assert export(database_url, key, JAN1, end, fmt="csv", out=str(tmp_path / "a.csv")) == 2880
    assert (
        export(database_url, key, JAN1, end, fmt="parquet", out=str(tmp_path / "a.parquet")) == 2880
    )
    with psycopg.connect(database_url) as conn:
        table = conn.execute(
            "SELECT time, close_time, open, high, low, close, volume, quote_volume, trades,"
            " taker_buy_volume, taker_buy_quote_volume, market, symbol, interval, source"
            " FROM candles WHERE interval = '1m' AND time < %s ORDER BY time",
            (datetime(2020, 1, 3, tzinfo=UTC),),
        ).fetchall()

    # CSV: data.binance.vision's 12 columns, ms times; the first day equals the original archive.
    with open(tmp_path / "a.csv", newline="") as file:
        rows = list(csv.reader(file))
    assert tuple(rows[0]) == CSV_HEADER
    assert len(rows) == 1 + 2880
    import zipfile

    with zipfile.ZipFile(shared_data / "vision" / "spot" / "BTCUSDT-1m-2020-01-01.zip") as archive:
        original = archive.read(archive.namelist()[0]).decode().splitlines()
    assert [",".join(r) for r in rows[1:1441]] == original

    def ms(t: datetime) -> str:
        return str((t - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1))

    assert rows[1:] == [
        [
            ms(t),
            str(o),
            str(h),
            str(lo),
            str(c),
            str(v),
            ms(ct),
            str(qv),
            str(n),
            str(tb),
            str(tq),
            "0",
        ]
        for t, ct, o, h, lo, c, v, qv, n, tb, tq, *_ in table
    ]
    read = pa_csv.read_csv(tmp_path / "a.csv").to_pylist()
    assert [r["open_time"] for r in read] == [int(t.timestamp() * 1000) for t, *_ in table]

    # Parquet: the table's columns, exact decimals, UTC timestamps.
    parquet = pq.read_table(tmp_path / "a.parquet")
    assert str(parquet.schema.field("time").type) == "timestamp[ms, tz=UTC]"
    assert str(parquet.schema.field("close_time").type) == "timestamp[us, tz=UTC]"
    assert str(parquet.schema.field("open").type).startswith("decimal128(")
    back = [
        (
            r["time"],
            r["close_time"],
            r["open"],
            r["high"],
            r["low"],
            r["close"],
            r["volume"],
            r["quote_volume"],
            r["trades"],
            r["taker_buy_volume"],
            r["taker_buy_quote_volume"],
            r["market"],
            r["symbol"],
            r["interval"],
            r["source"],
        )
        for r in parquet.to_pylist()
    ]
    assert back == [tuple(row) for row in table]
    assert all(isinstance(v, Decimal) for v in back[0][2:8])
    # A derived interval exports the same way.
    Database(database_url).migrate(StoreOptions(derived_intervals=("1h",)))
    assert (
        export(
            database_url,
            StreamKey("BTCUSDT", "1h"),
            JAN1,
            end,
            fmt="csv",
            out=str(tmp_path / "h.csv"),
        )
        == 48
    )
    assert not list(tmp_path.glob("*.partial"))


async def test_daily_backups_run_on_schedule_and_rotate(
    database_url: str, shared_data: Path, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    from klinetrio.store.dump import archive_has_timescaledb

    filled(database_url, shared_data)
    start = datetime(2024, 3, 10, 22, 0, tzinfo=UTC)
    directory = tmp_path / "backups"
    directory.mkdir()
    old = [backup_name(start - timedelta(days=d)) for d in range(1, 120)]
    for name in old:
        (directory / name).write_bytes(b"")
    (directory / "keep-me.txt").write_text("not a backup")

    def wall_clock() -> datetime:
        return start + timedelta(seconds=trio.current_time())

    async def inline(fn, *args):  # type: ignore[no-untyped-def]
        return fn(*args)

    backups = Backups(
        database_url,
        directory,
        at=parse_time_of_day("00:30"),
        embedded=False,
        wall_clock=wall_clock,
        offload=inline,
        run_process=run_inline,
    )
    with trio.fail_after(3 * 86_400):  # virtual seconds
        async with trio.open_nursery() as nursery:
            await nursery.start(backups.run)
            assert backups.statistics().next_backup_at == "2024-03-11T00:30:00Z"
            await trio.sleep(2.5 * 3600 + 60)  # 00:30 has passed once
            first = backups.statistics()
            await trio.sleep(86_400)  # and once more
            second = backups.statistics()
            nursery.cancel_scope.cancel()
    assert first.backups == 1
    assert first.last_backup_at == "2024-03-11T00:30:00Z"
    assert first.last_backup_file == str(directory / "klinetrio-20240311T003000Z.dump")
    assert first.last_backup_bytes == (directory / "klinetrio-20240311T003000Z.dump").stat().st_size
    assert second.backups == 2
    assert second.failures == 0
    assert second.next_backup_at == "2024-03-13T00:30:00Z"
    names = sorted(p.name for p in directory.iterdir())
    assert "keep-me.txt" in names
    kept = [n for n in names if n.endswith(".dump")]
    every = [*old, "klinetrio-20240311T003000Z.dump", "klinetrio-20240312T003000Z.dump"]
    assert kept == sorted(set(every) - set(to_delete(every)))
    assert 30 < len(kept) <= 42
    assert kept[-1] == "klinetrio-20240312T003000Z.dump"
    assert second.removed == 121 - len(kept)
    tool = tool_for("pg_restore", database_url, embedded=False)
    assert not archive_has_timescaledb(tool, directory / kept[-1])


async def test_a_failed_backup_is_counted_and_serve_goes_on(tmp_path: Path) -> None:
    async def inline(fn, *args):  # type: ignore[no-untyped-def]
        return fn(*args)

    backups = Backups(
        "postgresql://postgres@127.0.0.1:1/none",
        tmp_path,
        at=parse_time_of_day("00:00"),
        embedded=False,
        offload=inline,
    )
    with trio.fail_after(30):
        assert await backups.backup_now() is None
    stats = backups.statistics()
    assert stats.failures == 1
    assert "cannot connect" in (stats.last_error or "")
    assert list(await trio.Path(tmp_path).iterdir()) == []


async def run_inline(command, **kwargs):  # type: ignore[no-untyped-def]
    """trio.run_process's shape, run to completion without yielding (autojump clock)."""
    import subprocess

    return subprocess.run(list(command), capture_output=True, env=kwargs.get("env"), check=False)  # noqa: ASYNC221
