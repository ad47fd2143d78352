"""The bulk path against a real PostgreSQL: archive rows in exactly as Binance wrote them (µs kept),
idempotent, range-bound, a rejected batch set apart, lanes in parallel, outages retried."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
import trio
import trio.testing

from klinetrio.binance.vision import ChunkReader, parse_file_name
from klinetrio.core.intervals import Interval
from klinetrio.errors import DatabaseUnavailable
from klinetrio.store.bulk import BatchRejected, BulkBatch, BulkStore, BulkWriter
from klinetrio.store.database import Database

JAN_2025 = 1735689600000


def migrated(url: str) -> None:
    db = Database(url)
    db.migrate()
    db.close()


def batches(path: Path, market: str = "spot") -> list[BulkBatch]:
    name = parse_file_name(path.name)
    assert name is not None
    start, end = name.span
    out = []
    with path.open("rb") as stream:
        reader = ChunkReader(stream, path.name, interval=Interval(name.interval), span=name.span)
        while (chunk := reader.read()) is not None:
            out.append(
                BulkBatch(market, name.symbol, name.interval, start, end, chunk.csv, chunk.rows)
            )
        reader.close()
    return out


def stored(url: str, interval: str = "1h") -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            """
            SELECT market, (extract(epoch FROM time) * 1000)::bigint,
                   (extract(epoch FROM close_time) * 1000000)::bigint, open::text, high::text,
                   low::text, close::text, volume::text, quote_volume::text, trades,
                   taker_buy_volume::text, taker_buy_quote_volume::text, source
              FROM candles WHERE interval = %s ORDER BY time
            """,
            (interval,),
        ).fetchall()


def file_rows(path: Path) -> list[list[str]]:
    lines = path.read_text().splitlines()
    return [line.split(",") for line in lines if line[:1].isdigit()]


@pytest.mark.shared_data
def test_rows_go_in_exactly_as_written_and_twice_changes_nothing(
    shared_data: Path, database_url: str
) -> None:
    migrated(database_url)
    spot = shared_data / "vision" / "spot"
    store = BulkStore(database_url)
    files = [spot / "BTCUSDT-1h-2023-03.csv", spot / "BTCUSDT-1h-2025-01.csv"]
    try:
        first = sum(store.load(b) for f in files for b in batches(f))
        second = sum(store.load(b) for f in files for b in batches(f))
    finally:
        store.close()
    assert (first, second) == (743 + 744, 0)
    rows = stored(database_url)
    expected = []
    for f in files:
        for r in file_rows(f):
            micros = int(r[0]) >= 10**14
            open_ms = int(r[0]) // 1000 if micros else int(r[0])
            close_us = int(r[6]) if micros else int(r[6]) * 1000
            expected.append(
                ("spot", open_ms, close_us, *r[1:6], r[7], int(r[8]), r[9], r[10], "archive")
            )
    assert rows == expected
    assert rows[-1][2] == 1738367999999999  # 2025's µs close time, to the microsecond


def test_only_the_batch_range_is_kept_and_the_source_is_the_batchs(database_url: str) -> None:
    migrated(database_url)
    hour = 3_600_000
    csv = b"".join(
        f"{JAN_2025 + i * hour},1.0,1.0,1.0,1.0,1,{JAN_2025 + (i + 1) * hour - 1},1,1,1,1,0\n".encode()
        for i in range(5)
    )
    store = BulkStore(database_url)
    try:
        kept = store.load(
            BulkBatch("usdm", "BTCUSDT", "1h", JAN_2025 + hour, JAN_2025 + 3 * hour, csv, 5, "rest")
        )
    finally:
        store.close()
    assert kept == 2
    rows = stored(database_url)
    assert [(r[0], r[1], r[2], r[-1]) for r in rows] == [
        ("usdm", JAN_2025 + hour, (JAN_2025 + 2 * hour - 1) * 1000, "rest"),
        ("usdm", JAN_2025 + 2 * hour, (JAN_2025 + 3 * hour - 1) * 1000, "rest"),
    ]


def test_a_batch_that_partly_overlaps_adds_only_the_new_rows(database_url: str) -> None:
    migrated(database_url)
    minute = 60_000
    rows = [
        f"{JAN_2025 + i * minute},1.{i},1,1,1,1,{JAN_2025 + (i + 1) * minute - 1},1,1,1,1,0\n"
        for i in range(6)
    ]
    store = BulkStore(database_url)
    try:
        assert (
            store.load(BulkBatch("spot", "X", "1m", 0, 2**62, "".join(rows[2:4]).encode(), 2)) == 2
        )
        changed = "".join(rows).replace(",1.2,", ",9.9,").encode()  # a stored row, other values
        assert store.load(BulkBatch("spot", "X", "1m", 0, 2**62, changed, 6)) == 4
    finally:
        store.close()
    with psycopg.connect(database_url) as conn:
        opens = [r[0] for r in conn.execute("SELECT open::text FROM candles ORDER BY time")]
    assert opens == ["1.0", "1.1", "1.2", "1.3", "1.4", "1.5"]  # the stored row unchanged


def test_a_batch_the_database_rejects_costs_only_itself(database_url: str) -> None:
    migrated(database_url)
    good = f"{JAN_2025},1.0,1.0,1.0,1.0,1,{JAN_2025 + 59_999},1,1,1,1,0\n".encode()
    bad = good.replace(b",1.0,", b",1.0.0,", 1)
    store = BulkStore(database_url)
    try:
        with pytest.raises(BatchRejected, match="rejects these rows"):
            store.load(BulkBatch("spot", "X", "1m", 0, 2**62, bad, 1))
        assert store.load(BulkBatch("spot", "X", "1m", 0, 2**62, good, 1)) == 1
    finally:
        store.close()


@pytest.mark.shared_data
async def test_lanes_write_in_parallel_and_count(shared_data: Path, database_url: str) -> None:
    migrated(database_url)
    spot = shared_data / "vision" / "spot"
    work = [b for f in sorted(spot.glob("ETHUSDT-1h-*.csv")) for b in batches(f)]
    writer = BulkWriter([BulkStore(database_url), BulkStore(database_url)])
    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for batch in work:
                    nursery.start_soon(writer.write, batch)
    finally:
        await writer.aclose()
    stats = writer.statistics()
    assert stats.batches == len(work)
    assert stats.rows == stats.written == 5088
    assert stats.healthy
    assert len(stored(database_url)) == 5088


class FlakyStore(BulkStore):
    """Fails the first ``failures`` loads as an outage would."""

    def __init__(self, failures: int) -> None:
        super().__init__("postgresql://unused")
        self.failures = failures
        self.calls = 0

    def load(self, batch: BulkBatch) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise DatabaseUnavailable("connection refused")
        return batch.rows


async def test_an_outage_is_held_and_retried(autojump_clock: trio.testing.MockClock) -> None:
    async def inline(fn, *args):  # type: ignore[no-untyped-def]
        return fn(*args)

    store = FlakyStore(failures=3)
    writer = BulkWriter([store], offload=inline)
    with trio.fail_after(120):
        written = await writer.write(BulkBatch("spot", "X", "1m", 0, 1, b"x\n", 7))
    assert written == 7
    assert store.calls == 4
    stats = writer.statistics()
    assert (stats.errors, stats.batches, stats.healthy) == (3, 1, True)
