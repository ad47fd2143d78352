"""A long trade gap over a day that has ended comes from the day's aggTrades archive, not from
57 REST pages: the fake exchange replays the real PEPEUSDT aggTrades archive of 2024-10-27
(57,229 trades) two days later; the store holds the day's first 100 trades, and a restart finds
the stream beginning after the day's last one. A damaged archive (wrong checksum) leaves the
whole gap to REST, said once. Either way every trade is stored once, exactly the file's."""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import httpx
import psycopg
import pytest
import trio

from klinetrio.binance import wire_kinds as wk
from klinetrio.binance.archive import ArchiveClient
from klinetrio.binance.rest import RestClient
from klinetrio.core.models import StreamKey, parse_utc_ms
from klinetrio.simulate import Simulator, SimulatorConfig
from klinetrio.store import events
from klinetrio.store.database import Database
from klinetrio.store.events import EventStore
from klinetrio.store.events_writer import EventWriter
from klinetrio.threads import thread_offload
from klinetrio.trade_sync import TradeSyncer

NAME = "PEPEUSDT-aggTrades-2024-10-27"
KEEP = 100  # trades of the day already stored


def recorded(shared_data: Path) -> list[tuple[object, ...]]:
    path = shared_data / "vision" / "spot-aggTrades" / f"{NAME}.zip"
    with zipfile.ZipFile(path) as archive:
        text = archive.read(f"{NAME}.csv").decode()
    return [
        (int(a), Decimal(p), Decimal(q), int(f), int(last), int(t), m == "True")
        for a, p, q, f, last, t, m, _ in csv.reader(io.StringIO(text))
    ]


def stored(database_url: str) -> list[tuple[object, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT agg_id, price, quantity, first_trade_id, last_trade_id,"
            " (extract(epoch FROM time) * 1000)::bigint, buyer_is_maker"
            " FROM trades WHERE symbol = 'PEPEUSDT' ORDER BY agg_id"
        ).fetchall()


@pytest.mark.shared_data
@pytest.mark.parametrize("corrupt", [False, True], ids=["archive", "damaged-archive"])
async def test_a_gap_over_an_ended_day_comes_from_its_archive(
    shared_data: Path, database_url: str, corrupt: bool
) -> None:
    trades = recorded(shared_data)
    first_id, last_id = int(trades[0][0]), int(trades[-1][0])  # type: ignore[call-overload]
    db = Database(database_url)
    db.migrate()
    store = EventStore(db, events.TRADES)
    before = [
        wk.RestAggTrade(a, str(p), str(q), f, last, t, m).row("spot", "PEPEUSDT")  # type: ignore[arg-type]
        for a, p, q, f, last, t, m in trades[:KEEP]
    ]
    assert store.write(before) == (KEEP, [])
    simulator = Simulator(
        SimulatorConfig(
            port=0,
            data_dir=str(shared_data / "vision" / "spot-aggTrades"),
            start_ms=parse_utc_ms("2024-10-29", "test"),
            speed=1.0,
            symbols=("BTCUSDT",),
            archive_corrupt=1 if corrupt else 0,
        )
    )
    writer = EventWriter(store, batch_size=20_000)
    key = StreamKey("PEPEUSDT", "aggTrade")
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(simulator.serve)
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient() as http:
                rest = RestClient(http, base)
                archive = ArchiveClient(http, base)
                syncer = TradeSyncer(
                    {"spot": rest},
                    Database(database_url),
                    offload=thread_offload(trio.CapacityLimiter(1)),
                    archives={"spot": archive},
                )
                send, receive = trio.open_memory_channel[Sequence[wk.Row]](64)
                async with trio.open_nursery() as inner:
                    await inner.start(writer.run, receive)
                    await inner.start(syncer.run, send)
                    syncer.trades_began(key, last_id + 1)  # the stream began after the day
                    while (  # noqa: ASYNC110
                        syncer.statistics().pending
                        or writer.statistics().buffered
                        or syncer.filled < len(trades) - KEEP
                    ):
                        await trio.sleep(0.05)
                    inner.cancel_scope.cancel()
            nursery.cancel_scope.cancel()
    db.close()
    assert stored(database_url) == trades  # every trade once, exactly the file's
    pages = rest.statistics().requests
    if corrupt:
        assert syncer.from_archives == 0
        assert archive.statistics().mismatches == 1
        assert pages >= (len(trades) - KEEP) // 1000  # the whole gap from REST
    else:
        assert syncer.from_archives == len(trades) - KEEP
        assert archive.statistics().files == 1
        assert pages <= 3  # the exchange's time and the page that dated the gap
    assert (first_id, last_id) == (trades[0][0], trades[-1][0])
