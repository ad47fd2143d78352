"""The archive filler end to end in one process: the simulator's archives and REST on
127.0.0.1:0, a real PostgreSQL, the bulk path. Missing months fall back to days, a corrupted file
and a day not published go to REST, and a halt inside a file is asked of REST once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import trio

from klinetrio.binance.archive import ArchiveClient
from klinetrio.binance.rest import RestClient
from klinetrio.core.models import StreamKey, parse_utc_ms
from klinetrio.core.planner import Piece
from klinetrio.history import ArchiveFiller, FillReport
from klinetrio.progress import FileProgress
from klinetrio.simulate import Simulator, SimulatorConfig
from klinetrio.store.bulk import BulkStore, BulkWriter
from klinetrio.store.database import Database

pytestmark = pytest.mark.shared_data
KEY = StreamKey("BTCUSDT", "1h")
NOW = parse_utc_ms("2023-05-20T12:30", "now")
JAN = parse_utc_ms("2023-01-01", "start")
END = parse_utc_ms("2023-05-20T12:00", "end")
HALT = (parse_utc_ms("2023-03-24T13:00", "h"), parse_utc_ms("2023-03-24T14:00", "h"))


class CountingRest(RestClient):
    pages = 0

    async def klines(self, *args: Any, **kwargs: Any) -> Any:
        self.pages += 1
        return await super().klines(*args, **kwargs)


@asynccontextmanager
async def filler(
    shared_data: Path,
    database_url: str,
    *,
    rest: bool = True,
    files_in_flight: int = 6,
    **overrides: Any,
) -> AsyncIterator[tuple[ArchiveFiller, CountingRest]]:
    db = Database(database_url)
    db.migrate()
    db.close()
    data = shared_data / "vision" / "spot"
    sim = Simulator(SimulatorConfig(port=0, start_ms=NOW, data_dir=str(data), **overrides))
    async with trio.open_nursery() as nursery:
        port = await nursery.start(sim.serve)
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient() as http:
            client = CountingRest(http, base)
            bulk = BulkWriter([BulkStore(database_url), BulkStore(database_url)])
            try:
                archives = ArchiveClient(http, base)
                rest_client = client if rest else None
                yield (
                    ArchiveFiller(archives, bulk, rest_client, files_in_flight=files_in_flight),
                    client,
                )
            finally:
                await bulk.aclose()
        nursery.cancel_scope.cancel()


def sources(database_url: str) -> dict[str, int]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT source, count(*) FROM candles GROUP BY 1").fetchall()
    return {str(s): int(n) for s, n in rows}


def file_values(shared_data: Path) -> set[tuple[int, str, str]]:
    values = set()
    for month in ("01", "02", "03", "04", "05"):
        for line in (
            (shared_data / "vision" / "spot" / f"BTCUSDT-1h-2023-{month}.csv")
            .read_text()
            .splitlines()
        ):
            cells = line.split(",")
            if cells[0].isdigit() and int(cells[0]) < END:
                values.add((int(cells[0]), cells[1], cells[10]))
    return values


async def test_months_days_fallbacks_and_a_confirmed_halt(
    shared_data: Path, database_url: str
) -> None:
    with trio.fail_after(60):
        async with filler(
            shared_data,
            database_url,
            archive_missing=("2023-04", "2023-04-10", "2023-05-02"),
            archive_corrupt=1,
            files_in_flight=1,  # one file at a time: January is the one corrupted
        ) as (fill, rest):
            progress = FileProgress("archives")
            report = await fill.fill(KEY, [(JAN, END)], NOW, progress=progress)
    # January monthly but corrupted (to REST), February and March monthly, April from its days
    # but the 10th, May 1-19 from days but the 2nd; the halt asked of REST once, found empty.
    assert report.mismatches == 1
    assert report.not_published == 3  # April's monthly file, 2023-04-10, 2023-05-02
    assert report.files == 2 + 29 + 18
    days = [parse_utc_ms(d, "d") for d in ("2023-04-10", "2023-05-02", "2023-05-20")]
    assert report.rest == [
        Piece("rest", JAN, parse_utc_ms("2023-02-01", "d")),
        Piece("rest", days[0], days[0] + 86_400_000),
        Piece("rest", days[1], days[1] + 86_400_000),
        Piece("rest", days[2], END),
    ]
    assert report.holes == [HALT]
    assert rest.pages == 1  # the halt, nothing else
    assert report.rows == report.written == sources(database_url)["archive"]
    assert progress.files_done == report.files
    assert progress.files_total == report.files  # the month replaced by its days, failures dropped
    # What the archives gave is what the files hold, exactly.
    with psycopg.connect(database_url) as conn:
        stored = {
            (int(t), str(o), str(q))
            for t, o, q in conn.execute(
                "SELECT (extract(epoch FROM time) * 1000)::bigint, open::text,"
                " taker_buy_quote_volume::text FROM candles"
            )
        }
    assert stored <= file_values(shared_data)
    assert len(stored) == report.rows


async def test_a_second_fill_of_what_is_stored_writes_nothing(
    shared_data: Path, database_url: str
) -> None:
    with trio.fail_after(60):
        async with filler(shared_data, database_url) as (fill, _):
            first = await fill.fill(KEY, [(JAN, END)], NOW)
            again = await fill.fill(KEY, [(JAN, END)], NOW)
    assert first.written == first.rows > 3000
    assert (again.rows, again.written) == (first.rows, 0)


async def test_archive_mode_never_asks_rest(shared_data: Path, database_url: str) -> None:
    with trio.fail_after(60):
        async with filler(shared_data, database_url, rest=False) as (fill, rest):
            report = await fill.fill(
                KEY, [(parse_utc_ms("2023-03-01", "s"), END)], NOW, mode="archive"
            )
    assert rest.pages == 0
    assert report.holes == []  # a halt is not confirmed without REST
    assert report.absent == 1
    assert report.rest == [Piece("rest", parse_utc_ms("2023-05-20", "d"), END)]  # today: no file
    assert sources(database_url) == {"archive": 743 + 720 + 19 * 24}


def test_reports_merge() -> None:
    a = FillReport(files=1, rows=10, written=5, holes=[(1, 2)])
    a.merge(FillReport(files=2, rows=1, written=1, mismatches=1, rest=[Piece("rest", 0, 1)]))
    assert (a.files, a.rows, a.written, a.mismatches, a.holes, len(a.rest)) == (
        3,
        11,
        6,
        1,
        [(1, 2)],
        1,
    )


async def test_startup_sync_with_a_long_lookback_takes_days_from_the_archives(
    shared_data: Path, database_url: str
) -> None:
    from collections.abc import Sequence

    from klinetrio.core.models import Candle
    from klinetrio.sync import Syncer

    sync_db = Database(database_url)
    sent: list[Candle] = []
    try:
        with trio.fail_after(60):
            async with filler(shared_data, database_url) as (fill, rest):
                syncer = Syncer(rest, sync_db, lookback_ms=10 * 86_400_000, archives=fill)
                send, receive = trio.open_memory_channel[Sequence[Candle]](100)
                async with send, receive:
                    fetched = await syncer.sync(KEY, None, None, send)
                    while True:
                        try:
                            sent.extend(receive.receive_nowait())
                        except trio.WouldBlock:
                            break
                short = Syncer(rest, sync_db, lookback_ms=2 * 86_400_000, archives=fill)
                pages = rest.pages
                send, receive = trio.open_memory_channel[Sequence[Candle]](100)
                async with send, receive:
                    await short.sync(StreamKey("BTCUSDT", "1m"), None, None, send)
                assert rest.pages > pages  # a 2-day look-back stays with REST
    finally:
        sync_db.close()
    # From 2023-05-10 13:00 (now - 10 days, rounded up) to 05-20 12:00: 11 hours of the 10th and
    # 12 of the 20th from REST, the nine whole days between from daily files.
    assert sources(database_url) == {"archive": 9 * 24}
    assert fetched == len(sent) == 11 + 12
    assert {c.open_time for c in sent} >= {END - 3_600_000}


def stored_by_file(database_url: str) -> dict[str, int]:
    """Stored rows per archive file they came from: a month before May 2023, a day in it."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT CASE WHEN time < '2023-05-01' THEN to_char(time AT TIME ZONE 'UTC', 'YYYY-MM')"
            " ELSE to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD') END, count(*)"
            " FROM candles GROUP BY 1"
        ).fetchall()
    return {str(period): int(n) for period, n in rows}


async def test_a_cancelled_fill_leaves_whole_batches_and_a_rerun_completes(
    shared_data: Path, database_url: str
) -> None:
    from support import eventually

    whole = {"2023-01": 744, "2023-02": 672, "2023-03": 743, "2023-04": 720}
    whole.update({f"2023-05-{d:02d}": 24 for d in range(1, 20)})
    with trio.fail_after(60):
        async with filler(shared_data, database_url, files_in_flight=1) as (fill, _):
            bulk = fill._bulk
            async with trio.open_nursery() as nursery:
                nursery.start_soon(fill.fill, KEY, [(JAN, END)], NOW)
                await eventually(lambda: bulk.statistics().batches >= 3)
                nursery.cancel_scope.cancel()
            # Nothing half-written: every file (one batch each here) is in whole or not at all,
            # even if a write whose thread was left to finish commits after the cancel.
            stopped = stored_by_file(database_url)
            assert all(whole[period] == count for period, count in stopped.items()), stopped
            assert len(stopped) < len(whole)  # it did stop part-way
            again = await fill.fill(KEY, [(JAN, END)], NOW)
    assert again.rows == sum(whole.values())
    assert stored_by_file(database_url) == whole
