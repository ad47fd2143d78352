"""The Trio writer against a real PostgreSQL: batching, draining, and outages."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

import psycopg
import trio
from support import eventually
from support.proxy import CuttableProxy

from klinetrio.core.models import Candle
from klinetrio.store.database import Database
from klinetrio.store.writer import CandleWriter


def candle(symbol: str, minute: int) -> Candle:
    t = 1_700_000_040_000 + minute * 60_000
    return Candle(
        symbol, "1m", t, (t + 59_999) * 1000, "1.5", "2", "1", "1.75", "10", "15", minute, "4", "6"
    )


def stored(url: str) -> list[tuple[str, int]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT symbol, trades FROM candles ORDER BY symbol, time").fetchall()
    return [(str(s), int(t)) for s, t in rows]


async def test_batches_and_drains_everything_on_close(database_url: str) -> None:
    Database(database_url).migrate()
    writer = CandleWriter(Database(database_url), batch_size=50, flush_interval=0.02)
    send, receive = trio.open_memory_channel[Sequence[Candle]](8)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run, receive)
            async with send:
                for minute in range(120):
                    await send.send([candle("BTCUSDT", minute)])
                await send.send([candle("ETHUSDT", m) for m in range(30)])
                await send.send([candle("BTCUSDT", 0)])  # a duplicate
    stats = writer.statistics()
    assert stats.received == 151
    assert stats.written == 150
    assert stats.duplicates == 1
    assert stats.buffered == 0
    assert stats.batches >= 3  # batched by size and time, not row by row
    assert len(stored(database_url)) == 150


async def test_holds_candles_through_a_database_outage(database_url: str) -> None:
    Database(database_url).migrate()
    parts = urlsplit(database_url)
    proxy = CuttableProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    with trio.fail_after(40):
        async with trio.open_nursery() as outer:
            await outer.start(proxy.run)
            writer = CandleWriter(
                Database(proxy.url_for(database_url)), batch_size=20, flush_interval=0.01
            )
            send, receive = trio.open_memory_channel[Sequence[Candle]](8)
            async with trio.open_nursery() as nursery:
                await nursery.start(writer.run, receive)
                async with send:
                    for minute in range(10):
                        await send.send([candle("BTCUSDT", minute)])
                    await eventually(lambda: writer.statistics().written == 10)
                    proxy.cut()
                    for minute in range(10, 40):
                        await send.send([candle("BTCUSDT", minute)])
                    await eventually(lambda: not writer.statistics().healthy)
                    assert writer.statistics().buffered == 30
                    await eventually(lambda: writer.statistics().errors >= 2)  # it retried
                    proxy.restore()
            outer.cancel_scope.cancel()
    stats = writer.statistics()
    assert stats.healthy
    assert stats.errors >= 1
    assert stats.dropped == 0
    assert stats.written == 40
    assert [t for _, t in stored(database_url)] == list(range(40))


async def test_a_full_buffer_drops_the_oldest_and_counts_them(database_url: str) -> None:
    Database(database_url).migrate()
    parts = urlsplit(database_url)
    proxy = CuttableProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    with trio.fail_after(40):
        async with trio.open_nursery() as outer:
            await outer.start(proxy.run)
            writer = CandleWriter(
                Database(proxy.url_for(database_url)),
                batch_size=5,
                flush_interval=0.01,
                buffer_limit=10,
            )
            send, receive = trio.open_memory_channel[Sequence[Candle]](8)
            async with trio.open_nursery() as nursery:
                await nursery.start(writer.run, receive)
                proxy.cut()
                async with send:
                    for minute in range(25):
                        await send.send([candle("BTCUSDT", minute)])
                    await eventually(lambda: writer.statistics().received == 25)
                    proxy.restore()
            outer.cancel_scope.cancel()
    stats = writer.statistics()
    assert stats.dropped == 15
    assert [t for _, t in stored(database_url)] == list(range(15, 25))


async def test_backpressure_makes_producers_wait_and_drops_nothing(database_url: str) -> None:
    Database(database_url).migrate()
    parts = urlsplit(database_url)
    proxy = CuttableProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    with trio.fail_after(40):
        async with trio.open_nursery() as outer:
            await outer.start(proxy.run)
            writer = CandleWriter(
                Database(proxy.url_for(database_url)),
                batch_size=7,
                flush_interval=0.01,
                buffer_limit=10,
                backpressure=True,
            )
            send, receive = trio.open_memory_channel[Sequence[Candle]](0)
            async with trio.open_nursery() as nursery:
                await nursery.start(writer.run, receive)
                proxy.cut()
                async with send:
                    blocked = False
                    for start in range(0, 60, 6):
                        batch = [candle("BTCUSDT", m) for m in range(start, start + 6)]
                        with trio.move_on_after(0.5) as waiting:
                            await send.send(batch)
                        if waiting.cancelled_caught:
                            blocked = True
                            assert writer.statistics().buffered <= 10 + 6
                            proxy.restore()
                            await send.send(batch)
                    assert blocked, "a full buffer should have made the producer wait"
            outer.cancel_scope.cancel()
    stats = writer.statistics()
    assert stats.dropped == 0
    assert [t for _, t in stored(database_url)] == list(range(60))


async def test_two_lanes_write_everything_once(database_url: str) -> None:
    Database(database_url).migrate()
    lanes = [Database(database_url), Database(database_url)]
    writer = CandleWriter(
        lanes, batch_size=500, flush_interval=0.01, buffer_limit=3_000, backpressure=True
    )
    send, receive = trio.open_memory_channel[Sequence[Candle]](0)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run, receive)
            async with send:
                for start in range(0, 20_000, 1_000):
                    await send.send([candle("BTCUSDT", m) for m in range(start, start + 1_000)])
    stats = writer.statistics()
    assert stats.written == 20_000
    assert stats.buffered == 0
    assert stats.batches >= 40
    assert all(db.connected for db in lanes), "both lanes should have written"
    assert [t for _, t in stored(database_url)] == list(range(20_000))
