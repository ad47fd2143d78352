"""The writers of the event tables against a real PostgreSQL: exact values, idempotence,
batching, overflow and the trade-id queries the syncer relies on."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import trio

from klinetrio.binance.wire_kinds import Row
from klinetrio.store import events
from klinetrio.store.database import Database
from klinetrio.store.events import EventStore
from klinetrio.store.events_writer import EventWriter, RowBatch

T0 = 1_700_000_000_000


def trade(agg_id: int, symbol: str = "PEPEUSDT") -> Row:
    t = T0 + agg_id
    return ("spot", symbol, t, agg_id, "0.00001234", "1234567.89", agg_id * 2, agg_id * 2 + 1,
            agg_id % 2 == 0, "ws")  # fmt: skip


def test_every_table_takes_exact_values_once(database_url: str) -> None:
    db = Database(database_url)
    db.migrate()
    rows: dict[str, list[Row]] = {
        "trades": [trade(1), trade(2)],
        "book_tickers": [("spot", "BTCUSDT", T0, 7, "60755.18000000", "0.34024", "60755.19", "0.6")],
        "tickers": [("spot", "BTCUSDT", T0, "1", "2", "0.5", "1.5", "10", "15", "-3.003", "1.2", 99)],
        "depth_snapshots": [
            ("spot", "BTCUSDT", T0, 17044571457, '[["1782.00000000","6.48300000"]]', "[]")
        ],
    }  # fmt: skip
    for name, batch in rows.items():
        store = EventStore(db, events.EVENT_TABLES[name])
        assert store.write(batch) == (len(batch), [])
        assert store.write(batch) == (0, [])
    # All new: the plain INSERT; meeting a stored row, or one twice: ON CONFLICT, new rows only.
    trades = EventStore(db, events.TRADES)
    assert trades.write([trade(2), trade(3), trade(3), trade(4)]) == (2, [])
    assert trades.write([trade(5), trade(5)]) == (1, [])
    with psycopg.connect(database_url) as conn:
        price, qty, maker = conn.execute(
            "SELECT price, quantity, buyer_is_maker FROM trades WHERE agg_id = 2"
        ).fetchone()  # type: ignore[misc]
        assert (price, qty, maker) == (Decimal("0.00001234"), Decimal("1234567.89"), True)
        (bid,) = conn.execute("SELECT bid_price::text FROM book_tickers").fetchone()  # type: ignore[misc]
        assert bid == "60755.18000000"
        bids, asks = conn.execute("SELECT bids, asks FROM depth_snapshots").fetchone()  # type: ignore[misc]
        assert bids == [["1782.00000000", "6.48300000"]]
        assert asks == []
        (ms,) = conn.execute(
            "SELECT (extract(epoch FROM time) * 1000)::bigint FROM tickers"
        ).fetchone()  # type: ignore[misc]
        assert ms == T0
    db.close()


def test_a_bad_row_is_set_aside_alone(database_url: str) -> None:
    db = Database(database_url)
    db.migrate()
    store = EventStore(db, events.TRADES)
    bad = ("spot", "X", T0, 5, "not-a-number", "1", 1, 1, True, "ws")
    written, rejected = store.write([trade(1), bad, trade(3)])
    assert written == 2
    assert rejected == [bad]
    db.close()


def test_newest_and_missing_ids(database_url: str) -> None:
    db = Database(database_url)
    db.migrate()
    store = EventStore(db, events.TRADES)
    store.write([trade(i) for i in (*range(10, 20), *range(25, 30), 40)])
    assert db.call("t", events.last_agg_ids, "spot", ["PEPEUSDT", "NONE"]) == {"PEPEUSDT": 40}
    assert db.call("t", events.missing_agg_ids, "spot", "PEPEUSDT", 0) == [(20, 24), (30, 39)]
    db.close()


async def test_writer_batches_drains_and_counts_overflow(database_url: str) -> None:
    Database(database_url).migrate()
    dropped: list[Row] = []
    writer = EventWriter(
        EventStore(Database(database_url), events.TRADES),
        batch_size=100,
        buffer_limit=10_000,
        on_dropped=dropped.extend,
    )
    send, receive = trio.open_memory_channel[RowBatch](16)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run, receive)
            async with send:
                for i in range(1000):
                    await send.send([trade(i)])
    stats = writer.statistics()
    assert (stats.received, stats.written, stats.dropped, stats.buffered) == (1000, 1000, 0, 0)
    assert stats.channel_closed
    assert stats.batches >= 10
    with psycopg.connect(database_url) as conn:
        (count,) = conn.execute("SELECT count(DISTINCT agg_id) FROM trades").fetchone()  # type: ignore[misc]
    assert count == 1000
    assert not dropped


async def test_a_full_buffer_hands_its_oldest_rows_on(database_url: str) -> None:
    dropped: list[Row] = []
    # No migration and an unreachable database: everything is held, then the oldest go.
    writer = EventWriter(
        EventStore(Database("postgresql://nobody@127.0.0.1:1/none"), events.TRADES),
        buffer_limit=50,
        on_dropped=dropped.extend,
    )
    send, receive = trio.open_memory_channel[RowBatch](16)
    with trio.move_on_after(3):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run, receive)
            for i in range(80):
                await send.send([trade(i)])
            await trio.sleep(1)
            assert not writer.healthy
            nursery.cancel_scope.cancel()
    assert [r[3] for r in dropped] == list(range(30))
    assert writer.statistics().dropped == 30
