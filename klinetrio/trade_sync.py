"""The trade syncer: aggregate trade ids are consecutive, so a missing id is a provable gap, and
REST (``/api/v3/aggTrades?fromId=``, 1000 per page) fills it by id; a long gap takes the days
that have ended from the daily ``aggTrades`` archives (checksummed), one file a day instead of
hundreds of pages, and REST for what no file holds (today, a file not yet published).

Requests come from the hot loop (``request_trades`` for a jump in ids; ``trades_began`` for the
first trade of a stream after a start or a subscription: what lies between the store's newest
id and it is missing) and from the trades writer (``dropped``: rows a full buffer let go).
Each is a range ``[first, last]``; ``run`` fills them one by one into the trades writer's
channel, each page's weight reserved in the market's REST budget. A failed page is retried with
backoff; nothing here ever blocks the hot loop (requests are appended to a list).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import trio
from loguru import logger

from klinetrio.binance import wire_kinds as wk
from klinetrio.binance.archive import ArchiveClient
from klinetrio.binance.rest import AGG_TRADES_PAGE, RestClient
from klinetrio.binance.trade_archive import read_agg_trades
from klinetrio.core.backoff import Backoff
from klinetrio.core.intervals import DAY_MS
from klinetrio.core.models import StreamKey, format_ms
from klinetrio.errors import ArchiveError, KlinetrioError
from klinetrio.store import events
from klinetrio.store.database import Database
from klinetrio.threads import Offload, in_thread

PAGE = AGG_TRADES_PAGE
# A gap of more ids than this takes the days that have ended from the archives.
ARCHIVE_MIN_IDS = 10 * PAGE
# Rows handed to the trades writer at a time from an archive day.
ARCHIVE_BATCH = 20_000


@dataclass(frozen=True, slots=True)
class TradeSyncStatistics:
    """``requests``: ranges of ids asked for; ``filled``: trades fetched into the writer (of
    them ``from_archives`` from daily files); ``pending``: ranges waiting (or being filled);
    ``errors``: failed pages (retried)."""

    requests: int = 0
    filled: int = 0
    from_archives: int = 0
    pending: int = 0
    errors: int = 0
    last_error: str | None = None


class TradeSyncer:
    """Fills agg id gaps from REST. ``await nursery.start(syncer.run, trades_send_channel)``."""

    def __init__(
        self,
        rest: dict[str, RestClient],
        database: Database,
        *,
        offload: Offload,
        archives: dict[str, ArchiveClient] | None = None,
    ) -> None:
        self._rest = rest
        self._database = database
        self._offload = offload
        self._archives = archives or {}
        # (market, symbol, day) whose file the archive does not have (or had wrong): REST.
        self._unpublished: set[tuple[str, str, str]] = set()
        self.from_archives = 0
        # (key, first id or None for "after the store's newest", last id)
        self._pending: list[tuple[StreamKey, int | None, int]] = []
        self._wake = trio.Event()
        self.filled = 0
        self.requests = 0
        self.errors = 0
        self._filling = 0
        self._last_error: str | None = None

    def statistics(self) -> TradeSyncStatistics:
        return TradeSyncStatistics(
            self.requests,
            self.filled,
            self.from_archives,
            len(self._pending) + self._filling,
            self.errors,
            self._last_error,
        )

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
                self._filling = 1
                try:
                    await self._fill(send_channel, key, first, last)
                except KlinetrioError as exc:
                    self.errors += 1
                    self._last_error = str(exc)
                    logger.warning(
                        "{key}: filling trades failed, retrying: {error}", key=key, error=exc
                    )
                    self._pending.append((key, first, last))
                    await trio.sleep(backoff.next_delay())
                else:
                    backoff.reset()
                finally:
                    self._filling = 0

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
        archive = self._archives.get(key.market)
        now_ms: int | None = None
        start, filled_before = first, self.filled
        while first <= last:
            page = await rest.agg_trades(key.symbol, from_id=first, limit=PAGE)
            if not page:
                break
            if archive is not None and last - first + 1 > ARCHIVE_MIN_IDS:
                if now_ms is None:
                    now_ms = await rest.server_time()
                day_ms = page[0].trade_time - page[0].trade_time % DAY_MS
                if day_ms + DAY_MS <= now_ms:  # the day has ended: its file may be out
                    taken = await self._from_archive(
                        send_channel, archive, key, day_ms, first, last
                    )
                    if taken is not None:
                        first = taken + 1
                        continue
            rows = [t.row(key.market, key.symbol) for t in page if first <= t.agg_id <= last]
            if rows:
                await send_channel.send(rows)
                self.filled += len(rows)
            if page[-1].agg_id >= last:
                break
            first = page[-1].agg_id + 1
        count = self.filled - filled_before
        if count:
            logger.info(
                "{key}: {count:,} trades filled (ids {start} .. {last})",
                key=key,
                count=count,
                start=start,
                last=last,
            )

    async def _from_archive(
        self,
        send_channel: trio.MemorySendChannel[Sequence[wk.Row]],
        archive: ArchiveClient,
        key: StreamKey,
        day_ms: int,
        first: int,
        last: int,
    ) -> int | None:
        """Hand on the trades of one ended day's file in ``[first, last]``; the newest id taken,
        or None where the file is not there (or is wrong, or lacks ``first``): REST then."""
        day = format_ms(day_ms)[:10]
        where = (key.market, key.symbol, day)
        if where in self._unpublished:
            return None
        try:
            verified = await archive.fetch_agg_trades(key.symbol, day)
            if verified is None:
                raise ArchiveError(f"{key.symbol}-aggTrades-{day}.zip is not published")
            with verified:
                rows = await in_thread(
                    read_agg_trades, verified.file, key.market, key.symbol, first, last
                )
        except ArchiveError as exc:
            logger.warning("{key}: {error}; REST fills {day}", key=key, error=exc, day=day)
            self._unpublished.add(where)
            return None
        if not rows or rows[0][3] != first:
            self._unpublished.add(where)
            return None
        for start in range(0, len(rows), ARCHIVE_BATCH):
            await send_channel.send(rows[start : start + ARCHIVE_BATCH])
        self.filled += len(rows)
        self.from_archives += len(rows)
        logger.info(
            "{key}: {count:,} trades of {day} from the archive (ids {low} .. {high})",
            key=key,
            count=len(rows),
            day=day,
            low=rows[0][3],
            high=rows[-1][3],
        )
        return rows[-1][3]


__all__ = ["PAGE", "TradeSyncStatistics", "TradeSyncer"]
