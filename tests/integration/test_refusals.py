"""A refused write is an outage, not bad data: against a real PostgreSQL that turns read-only,
revokes a grant, loses its table, or refuses a row for what it holds.

Each time the writer must keep every candle, say it is unhealthy, and write them all once the
database takes them again; only a row rejected as data goes to the dead-letter file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import psycopg
import pytest
import trio
from psycopg import sql
from support import eventually
from support.database import database_name, set_read_only, terminate_sessions

from klinetrio.core.models import Candle
from klinetrio.errors import DatabaseUnavailable, SchemaMissing
from klinetrio.store.database import Database
from klinetrio.store.deadletters import DeadLetters
from klinetrio.store.migrations import load_migrations
from klinetrio.store.writer import CandleWriter


def candle(minute: int, **fields: object) -> Candle:
    t = 1_700_000_040_000 + minute * 60_000
    values: dict[str, object] = {
        "symbol": "BTCUSDT",
        "interval": "1m",
        "open_time": t,
        "close_time_us": (t + 59_999) * 1000,
        "open": "1.5",
        "high": "2",
        "low": "1",
        "close": "1.75",
        "volume": "10",
        "quote_volume": "15",
        "trades": minute,
        "taker_buy_volume": "4",
        "taker_buy_quote_volume": "6",
    }
    values.update(fields)
    return Candle(**values)  # type: ignore[arg-type]


def stored_trades(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [int(r[0]) for r in conn.execute("SELECT trades FROM candles ORDER BY time")]  # type: ignore[call-overload]


def test_a_read_only_server_refuses_as_an_outage(pg_server_url: str, database_url: str) -> None:
    db = Database(database_url)
    db.migrate()
    set_read_only(pg_server_url, database_url, True)
    try:
        # The session the fail-over cut fails first (57P01 admin shutdown, or no answer at
        # all), unless the connection was already seen closed and a new session opened, which
        # is told the server is read-only; the next one is told so for sure. Each time: an
        # outage.
        with pytest.raises(DatabaseUnavailable) as caught:
            db.write([candle(0)])
        assert caught.value.sqlstate in ("57P01", None, "25006")
        with pytest.raises(DatabaseUnavailable) as caught:
            db.write([candle(0)])
        assert caught.value.sqlstate == "25006"
        assert "read-only" in str(caught.value)
    finally:
        set_read_only(pg_server_url, database_url, False)
    assert db.write([candle(0)]).count == 1


async def test_the_writer_holds_everything_while_the_server_is_read_only(
    pg_server_url: str, database_url: str
) -> None:
    Database(database_url).migrate()
    writer = CandleWriter(Database(database_url), batch_size=10, flush_interval=0.01)
    send, receive = trio.open_memory_channel[Sequence[Candle]](8)
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run, receive)
            async with send:
                for minute in range(5):
                    await send.send([candle(minute)])
                await eventually(lambda: writer.statistics().written == 5)
                await trio.to_thread.run_sync(set_read_only, pg_server_url, database_url, True)
                for minute in range(5, 30):
                    await send.send([candle(minute)])
                await eventually(lambda: writer.statistics().errors >= 2)
                stats = writer.statistics()
                assert not stats.healthy
                assert stats.buffered == 25
                assert stats.last_error is not None
                assert "25006" in stats.last_error
                await trio.to_thread.run_sync(set_read_only, pg_server_url, database_url, False)
    stats = writer.statistics()
    assert stats.healthy
    assert (stats.written, stats.dropped, stats.rejected, stats.outages) == (30, 0, 0, 1)
    assert stored_trades(database_url) == list(range(30))


async def test_a_revoked_grant_is_an_outage_until_it_is_given_back(
    pg_server_url: str, database_url: str
) -> None:
    Database(database_url).migrate()
    role = f"klinetrio_writer_{database_name(database_url)[-8:]}"
    with psycopg.connect(database_url, autocommit=True) as owner:
        owner.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        owner.execute(sql.SQL("GRANT SELECT, INSERT ON candles TO {}").format(sql.Identifier(role)))
    try:
        user_url = database_url.replace("postgres@", f"{role}@", 1)
        writer = CandleWriter(Database(user_url), batch_size=10, flush_interval=0.01)
        send, receive = trio.open_memory_channel[Sequence[Candle]](8)
        with trio.fail_after(40):
            async with trio.open_nursery() as nursery:
                await nursery.start(writer.run, receive)
                async with send:
                    await send.send([candle(0)])
                    await eventually(lambda: writer.statistics().written == 1)
                    with psycopg.connect(database_url, autocommit=True) as owner:
                        owner.execute(
                            sql.SQL("REVOKE INSERT ON candles FROM {}").format(sql.Identifier(role))
                        )
                    await send.send([candle(1), candle(2)])
                    await eventually(lambda: writer.statistics().errors >= 1)
                    stats = writer.statistics()
                    assert not stats.healthy
                    assert stats.last_error is not None
                    assert "42501" in stats.last_error
                    assert stats.buffered == 2
                    with psycopg.connect(database_url, autocommit=True) as owner:
                        owner.execute(
                            sql.SQL("GRANT INSERT ON candles TO {}").format(sql.Identifier(role))
                        )
        assert writer.statistics().written == 3
        assert stored_trades(database_url) == [0, 1, 2]
    finally:
        with psycopg.connect(database_url, autocommit=True) as owner:
            terminate_sessions(owner, database_name(database_url))
            owner.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            owner.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


async def test_a_dropped_candles_table_is_recreated_and_the_buffer_written(
    database_url: str,
) -> None:
    Database(database_url).migrate()
    writer = CandleWriter(Database(database_url), batch_size=10, flush_interval=0.01)
    send, receive = trio.open_memory_channel[Sequence[Candle]](8)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run, receive)
            async with send:
                await send.send([candle(m) for m in range(3)])
                await eventually(lambda: writer.statistics().written == 3)
                with psycopg.connect(database_url, autocommit=True) as conn:
                    conn.execute("DROP TABLE candles")
                await send.send([candle(m) for m in range(3, 8)])
                await eventually(lambda: writer.statistics().written == 8)
    stats = writer.statistics()
    assert (stats.buffered, stats.dropped, stats.rejected) == (0, 0, 0)
    # What was stored before the drop went with the table; everything held since is there.
    assert stored_trades(database_url) == [3, 4, 5, 6, 7]
    with psycopg.connect(database_url) as conn:
        index = conn.execute(
            "SELECT 1 FROM pg_indexes WHERE indexname = 'candles_symbol_interval_time_idx'"
        ).fetchone()
    assert index is not None


def test_a_missing_table_is_an_outage_to_a_reader(database_url: str) -> None:
    db = Database(database_url)
    db.migrate()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP TABLE candle_holes")
    with pytest.raises(SchemaMissing):
        db.holes(candle(0).key, 0, 10**13)


async def test_rows_rejected_as_data_go_to_the_dead_letter_file(
    database_url: str, tmp_path: Path
) -> None:
    Database(database_url).migrate()
    dead = DeadLetters(tmp_path / "dead-letters")
    writer = CandleWriter(
        Database(database_url), batch_size=100, flush_interval=0.01, dead_letters=dead
    )
    batch = [candle(m) for m in range(100)]
    batch[17] = candle(17, close="1.7.5")  # 22P02: not a number
    batch[60] = candle(60, source="telepathy")  # 23514: the source check
    send, receive = trio.open_memory_channel[Sequence[Candle]](8)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run, receive)
            async with send:
                await send.send(batch)
    stats = writer.statistics()
    assert (stats.written, stats.rejected, stats.duplicates, stats.buffered) == (98, 2, 0, 0)
    assert stats.healthy
    assert stored_trades(database_url) == [m for m in range(100) if m not in (17, 60)]
    lines = [json.loads(line) for line in dead.path.read_text().splitlines()]
    assert [(d["sqlstate"], d["row"]["trades"]) for d in lines] == [("22P02", 17), ("23514", 60)]
    assert lines[0]["row"]["close"] == "1.7.5"
    assert lines[0]["table"] == "candles"


def test_every_migration_is_idempotent(database_url: str) -> None:
    # The repair for a dropped table re-runs them all, so each must survive running twice.
    with psycopg.connect(database_url, autocommit=True) as conn:
        for migration in load_migrations():
            conn.execute(migration.sql.encode())
            conn.execute(migration.sql.encode())
