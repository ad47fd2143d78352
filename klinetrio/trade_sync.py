"""The trade syncer: aggregate trade ids are consecutive, so a missing id is a provable gap, and
REST (``/api/v3/aggTrades?fromId=``, 1000 per page) fills it by id.

Requests come from the hot loop (``request_trades`` for a jump in ids; ``trades_began`` for the
first trade of a stream after a start or a subscription: what lies between the store's newest
id and it is missing) and from the trades writer (``dropped``: rows a full buffer let go).
Each is a range ``[first, last]``; ``run`` fills them one by one into the trades writer's
channel, each page's weight reserved in the market's REST budget. A failed page is retried with
backoff; nothing here ever blocks the hot loop (requests are appended to a list).
"""

from __future__ import annotations

from collections.abc import Sequence

import trio
from loguru import logger

from klinetrio.binance import wire_kinds as wk
from klinetrio.binance.rest import AGG_TRADES_PAGE, RestClient
from klinetrio.core.backoff import Backoff
from klinetrio.core.models import StreamKey
from klinetrio.errors import KlinetrioError
from klinetrio.store import events
from klinetrio.store.database import Database
from klinetrio.threads import Offload

PAGE = AGG_TRADES_PAGE


class TradeSyncer:
    """Fills agg id gaps from REST. ``await nursery.start(syncer.run, trades_send_channel)``."""

    def __init__(
        self, rest: dict[str, RestClient], database: Database, *, offload: Offload
    ) -> None:
        self._rest = rest
        self._database = database
        self._offload = offload
        # (key, first id or None for "after the store's newest", last id)
        self._pending: list[tuple[StreamKey, int | None, int]] = []
        self._wake = trio.Event()
        self.filled = 0
        self.requests = 0

    def request_trades(self, key: StreamKey, first_id: int, last_id: int) -> None:
        if first_id <= last_id:
            self._add(key, first_id, last_id)

    def trades_began(self, key: StreamKey, first_id: int) -> None:
        self._add(key, None, first_id - 1)

    def dropped(self, rows: Sequence[wk.Row]) -> None:
        """Rows the trades writer could not keep: their ids are asked for again."""
        spans: dict[tuple[str, str], tuple[int, int]] = {}
        for row in rows:
            agg_id = row[3]
            assert isinstance(agg_id, int)
            where = (row[0], row[1])
            low, high = spans.get(where, (agg_id, agg_id))
            spans[where] = (min(low, agg_id), max(high, agg_id))
        for (market, symbol), (low, high) in spans.items():
            self._add(StreamKey(symbol, "aggTrade", market), low, high)

    def _add(self, key: StreamKey, first: int | None, last: int) -> None:
        self.requests += 1
        self._pending.append((key, first, last))
        self._wake.set()

    async def run(
        self,
        send_channel: trio.MemorySendChannel[Sequence[wk.Row]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        with send_channel:
            task_status.started()
            backoff = Backoff(initial=0.5, maximum=30.0)
            while True:
                if not self._pending:
                    self._wake = trio.Event()
                    await self._wake.wait()
                    continue
                key, first, last = self._pending.pop(0)
                try:
                    await self._fill(send_channel, key, first, last)
                except KlinetrioError as exc:
                    logger.warning(
                        "{key}: filling trades failed, retrying: {error}", key=key, error=exc
                    )
                    self._pending.append((key, first, last))
                    await trio.sleep(backoff.next_delay())
                else:
                    backoff.reset()

    async def _fill(
        self,
        send_channel: trio.MemorySendChannel[Sequence[wk.Row]],
        key: StreamKey,
        first: int | None,
        last: int,
    ) -> None:
        if first is None:
            newest = await self._offload(
                self._database.call,
                "reading the newest trade",
                events.last_agg_ids,
                key.market,
                [key.symbol],
            )
            if key.symbol not in newest:
                return  # nothing stored yet: the stream is where this symbol's trades begin
            first = newest[key.symbol] + 1
            # What the store lacks below its newest (a crash mid-fill, a page lost): the
            # database is the source of truth for what is missing.
            holes = await self._offload(
                self._database.call,
                "finding missing trade ids",
                events.missing_agg_ids,
                key.market,
                key.symbol,
                0,
            )
            for low, high in holes:
                self._add(key, low, high)
        rest = self._rest[key.market]
        while first <= last:
            page = await rest.agg_trades(key.symbol, from_id=first, limit=PAGE)
            rows = [t.row(key.market, key.symbol) for t in page if first <= t.agg_id <= last]
            if rows:
                await send_channel.send(rows)
                self.filled += len(rows)
            if not page or page[-1].agg_id >= last:
                break
            first = page[-1].agg_id + 1
        logger.info("{key}: trades up to id {last} filled from REST", key=key, last=last)


__all__ = ["PAGE", "TradeSyncer"]
