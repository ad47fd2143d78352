"""The trade syncer against a real PostgreSQL and a fake REST transport: gaps by agg id end up
filled, every id stored exactly once, 1000 per page."""

from __future__ import annotations

from collections.abc import Sequence

import httpx
import msgspec
import psycopg
import trio

from klinetrio.binance import wire_kinds as wk
from klinetrio.binance.rest import RestClient
from klinetrio.core.models import StreamKey
from klinetrio.store import events
from klinetrio.store.database import Database
from klinetrio.store.events import EventStore
from klinetrio.store.events_writer import EventWriter
from klinetrio.threads import thread_offload
from klinetrio.trade_sync import TradeSyncer

T0 = 1_700_000_000_000
LAST = 3_000


def trade(agg_id: int) -> dict[str, object]:
    return {"a": agg_id, "p": "1.25", "q": "3", "f": agg_id, "l": agg_id, "T": T0 + agg_id,
            "m": True, "M": True}  # fmt: skip


async def test_gaps_are_filled_by_id_exactly_once(database_url: str) -> None:
    Database(database_url).migrate()
    pages: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v3/aggTrades"
        first = int(request.url.params["fromId"])
        limit = int(request.url.params["limit"])
        assert limit <= 1000
        pages.append(first)
        body = [trade(i) for i in range(first, min(first + limit, LAST + 1))]
        return httpx.Response(200, content=msgspec.json.encode(body))

    store = EventStore(Database(database_url), events.TRADES)
    key = StreamKey("BTCUSDT", "aggTrade")
    # Stored before: ids 1..10 (the last run) and 50 (a page REST brought once).
    stored = [wk.RestAggTrade(i, "1.25", "3", i, i, T0 + i, True).row("spot", "BTCUSDT")
              for i in (*range(1, 11), 50)]  # fmt: skip
    store.write(stored)
    writer = EventWriter(store, batch_size=500)
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        rest = RestClient(http, "http://exchange")
        syncer = TradeSyncer(
            {"spot": rest}, Database(database_url), offload=thread_offload(trio.CapacityLimiter(1))
        )
        send, receive = trio.open_memory_channel[Sequence[wk.Row]](64)
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                await nursery.start(writer.run, receive)
                await nursery.start(syncer.run, send)
                syncer.trades_began(key, LAST + 1)  # the stream began at LAST+1 after a restart
                syncer.request_trades(key, 20, 30)  # a jump on the stream, already covered
                while syncer._pending or writer.statistics().buffered or syncer.filled < 2990:  # noqa: ASYNC110
                    await trio.sleep(0.05)
                nursery.cancel_scope.cancel()
    with psycopg.connect(database_url) as conn:
        ids = [r[0] for r in conn.execute("SELECT agg_id FROM trades ORDER BY agg_id")]
    assert ids == list(range(1, LAST + 1))
    assert pages[:3] == [51, 1051, 2051]
    assert 11 in pages
    assert rest.statistics().weight_used == 4 * len(pages)
