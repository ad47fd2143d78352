"""The writer through long outages and stuck writes, on Trio's autojump clock.

The database is real; its calls run inline (the ``offload`` seam), so virtual time stands
still while PostgreSQL works and jumps while the writer waits: a ten-minute outage takes a
fraction of a second, and every backoff and reminder lands at the virtual time it should.
Where a write must really block (a lock held by another session), it runs in a worker thread,
and the clock jumps only once every task has waited 50 ms of real time: long enough for the
calls that do return (connecting, a ping) to return first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import psycopg
import pytest
import trio
import trio.testing
from conftest import LogRecord
from support import eventually
from support.database import set_read_only

from klinetrio.core.models import Candle
from klinetrio.store.database import Database
from klinetrio.store.writer import OUTAGE_REMINDER_S, CandleWriter


def candle(minute: int) -> Candle:
    t = 1_700_000_040_000 + minute * 60_000
    return Candle(
        "BTCUSDT", "1m", t, (t + 59_999) * 1000, "1", "2", "1", "1", "10", "15", minute, "4", "6"
    )


async def inline(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


@pytest.fixture
def thread_clock() -> trio.testing.MockClock:
    """Autojump, but not while a worker thread that will return is still working."""
    return trio.testing.MockClock(autojump_threshold=0.05)


def stored_trades(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [int(r[0]) for r in conn.execute("SELECT trades FROM candles ORDER BY time")]  # type: ignore[call-overload]


async def test_a_ten_minute_outage_is_one_warning_a_reminder_a_minute_and_no_loss(
    autojump_clock: trio.testing.MockClock,
    pg_server_url: str,
    database_url: str,
    logs: list[LogRecord],
) -> None:
    Database(database_url).migrate()
    writer = CandleWriter(
        Database(database_url), batch_size=50, flush_interval=0.02, offload=inline
    )
    send, receive = trio.open_memory_channel[Sequence[Candle]](64)
    outage_s = 600.0
    with trio.fail_after(3600):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run, receive)
            async with send:
                await send.send([candle(0)])
                await eventually(lambda: writer.statistics().written == 1)
                set_read_only(pg_server_url, database_url, True)
                began = trio.current_time()
                for minute in range(1, 601):  # a candle a second, all through the outage
                    await send.send([candle(minute)])
                    await trio.sleep(outage_s / 600)
                held = writer.statistics()
                assert not held.healthy
                assert held.buffered == 600
                set_read_only(pg_server_url, database_url, False)
    stats = writer.statistics()
    assert (stats.written, stats.buffered, stats.dropped, stats.outages) == (601, 0, 0, 1)
    assert stored_trades(database_url) == list(range(601))
    warnings = [r.message for r in logs if r.level == "WARNING"]
    assert sum("database unavailable, holding" in w for w in warnings) == 1
    # A reminder comes with the first retry a minute or more after the last one; retries are
    # at most 30 s apart once the backoff is capped.
    reminders = sum("still unavailable" in w for w in warnings)
    assert outage_s / (OUTAGE_REMINDER_S + 30) - 1 <= reminders <= outage_s / OUTAGE_REMINDER_S
    assert any("database is back after" in r.message for r in logs)
    # The backoff is capped: retries kept coming all along (at most 30 s apart).
    assert stats.errors >= outage_s / 30
    assert trio.current_time() - began < outage_s + 31


async def test_a_write_stuck_on_a_lock_is_abandoned_at_the_drain_deadline(
    thread_clock: trio.testing.MockClock, database_url: str
) -> None:
    Database(database_url).migrate()
    writer = CandleWriter(Database(database_url), batch_size=50, flush_interval=0.02)
    send, receive = trio.open_memory_channel[Sequence[Candle]](64)
    locker = psycopg.connect(database_url)
    try:
        locker.execute("LOCK TABLE candles IN ACCESS EXCLUSIVE MODE")  # held until rollback
        scope = trio.CancelScope()
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:

                async def run_writer() -> None:
                    with scope:
                        await writer.run(receive)

                nursery.start_soon(run_writer)
                async with send:
                    await send.send([candle(m) for m in range(10)])
                    await eventually(lambda: writer.statistics().received == 10)
                # Every producer is done: the writer has 8 s to drain, and its write is stuck.
                stopped_at = trio.current_time()
                scope.deadline = stopped_at + 8
        assert scope.cancelled_caught
        assert trio.current_time() - stopped_at < 8.1
        stats = writer.statistics()
        assert stats.buffered == 10  # counted as unwritten, none lost from the count
        assert stats.written == 0
    finally:
        locker.rollback()
        locker.close()


async def test_a_write_that_never_returns_gets_a_new_connection(
    thread_clock: trio.testing.MockClock, database_url: str
) -> None:
    Database(database_url).migrate()
    writer = CandleWriter(
        Database(database_url), batch_size=50, flush_interval=0.02, stuck_after=90.0
    )
    send, receive = trio.open_memory_channel[Sequence[Candle]](64)
    locker = psycopg.connect(database_url)
    locker.execute("LOCK TABLE candles IN ACCESS EXCLUSIVE MODE")
    first = writer.lanes[0][0]
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run, receive)
            async with send:
                await send.send([candle(m) for m in range(10)])
                # Polled once a virtual second: each jump of this clock costs 50 ms of real time.
                await eventually(lambda: writer.lanes[0][0] is not first, poll=1.0)
                stats = writer.statistics()
                assert not stats.healthy
                assert stats.last_error is not None
                assert "did not return within 90s" in stats.last_error
                assert stats.buffered == 10
                await trio.to_thread.run_sync(locker.rollback)
                await eventually(lambda: writer.statistics().buffered == 0, poll=1.0)
    locker.close()
    stats = writer.statistics()
    assert stats.healthy
    # The abandoned thread may have committed them first: then the new connection found them
    # stored. Either way each candle is in the table once.
    assert stats.written + stats.duplicates == 10
    assert stored_trades(database_url) == list(range(10))
