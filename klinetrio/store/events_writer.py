"""The writer of one event table (trades, book tickers, tickers, depth snapshots).

The same shape as the candle writer (``store.writer``), sized for rates far above candles:

* ``_intake`` moves batches of rows from the channel into a bounded buffer at memory speed and
  never waits on the database, so the stream connections upstream never stall. While the
  buffer has room nothing is dropped: this is the lossless edge.
* ``_flush_loop`` takes up to ``batch_size`` rows (or what arrived within ``flush_interval``),
  writes them with one COPY in the table's worker thread and retries with backoff while the
  database refuses (an outage: the rows stay held, ``healthy`` is False).

When an outage lasts so long that the buffer fills, the oldest rows are dropped and counted,
and ``on_dropped`` is told of them: for trades the syncer refills their agg ids from REST; the
sample streams (book tickers, tickers, depth) cannot be healed, so the count is all there is.
Rows the database rejects as data are counted and logged, never retried.

Shutdown travels by channel: when every producer has closed its end, the intake ends, the
flusher commits what is left and ``run`` returns; the owner bounds that with a deadline.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import trio
from loguru import logger

from klinetrio.binance.wire_kinds import Row
from klinetrio.core.backoff import Backoff
from klinetrio.errors import DatabaseUnavailable
from klinetrio.store.events import EventStore
from klinetrio.threads import Offload, thread_offload

RowBatch = Sequence[Row]
DROP_LOG_EVERY_S = 10.0


@dataclass(frozen=True, slots=True)
class EventWriterStatistics:
    table: str
    received: int = 0
    written: int = 0
    duplicates: int = 0
    dropped: int = 0
    rejected: int = 0
    batches: int = 0
    errors: int = 0
    buffered: int = 0
    healthy: bool = True
    channel_closed: bool = False
    last_error: str | None = None


class EventWriter:
    """Batches rows of one table into PostgreSQL: ``await nursery.start(writer.run, rx)``.

    ``on_dropped(rows)`` is told of the rows a full buffer dropped (oldest first).
    """

    def __init__(
        self,
        store: EventStore,
        *,
        batch_size: int = 20_000,
        flush_interval: float = 0.05,
        buffer_limit: int = 1_000_000,
        offload: Offload | None = None,
        on_dropped: Callable[[list[Row]], None] | None = None,
    ) -> None:
        self.store = store
        self.offload = offload or thread_offload(trio.CapacityLimiter(1))
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._buffer_limit = buffer_limit
        self._on_dropped = on_dropped
        self._buffer: deque[Row] = deque()
        self._first_at = 0.0  # when the oldest buffered row arrived
        self._in_flight = 0
        self._arrived = trio.Event()
        self._intake_closed = False
        self._stats = EventWriterStatistics(store.table.name)
        self._drop_logged_at = -1e9
        self._outage = False

    @property
    def table(self) -> str:
        return self.store.table.name

    @property
    def healthy(self) -> bool:
        return self._stats.healthy

    def statistics(self) -> EventWriterStatistics:
        """A snapshot: reading it changes nothing."""
        return replace(self._stats, buffered=len(self._buffer) + self._in_flight)

    async def run(
        self,
        receive_channel: trio.MemoryReceiveChannel[RowBatch],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Report started, then write until the channel closes and the buffer drains."""
        with receive_channel:
            task_status.started()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._intake, receive_channel)
                nursery.start_soon(self._flush_loop)

    async def _intake(self, receive_channel: trio.MemoryReceiveChannel[RowBatch]) -> None:
        buffer = self._buffer
        try:
            async for batch in receive_channel:
                if not buffer:
                    self._first_at = trio.current_time()
                buffer.extend(batch)
                self._stats = replace(self._stats, received=self._stats.received + len(batch))
                overflow = len(buffer) - self._buffer_limit
                if overflow > 0:
                    self._drop_oldest(overflow)
                self._arrived.set()
            self._stats = replace(self._stats, channel_closed=True)
        finally:
            self._intake_closed = True
            self._arrived.set()

    def _drop_oldest(self, count: int) -> None:
        dropped = [self._buffer.popleft() for _ in range(count)]
        self._stats = replace(self._stats, dropped=self._stats.dropped + count)
        if self._on_dropped is not None:
            self._on_dropped(dropped)
        now = trio.current_time()
        if now - self._drop_logged_at >= DROP_LOG_EVERY_S:
            self._drop_logged_at = now
            logger.error(
                "{table} writer buffer full ({limit:,} rows): dropped {count:,} oldest so far",
                table=self.table,
                limit=self._buffer_limit,
                count=self._stats.dropped,
            )

    async def _flush_loop(self) -> None:
        backoff = Backoff(initial=0.5, maximum=30.0)
        while True:
            if not self._buffer:
                if self._intake_closed:
                    return
                self._arrived = trio.Event()
                await self._arrived.wait()
                continue
            if len(self._buffer) < self._batch_size and not self._intake_closed:
                waited = trio.current_time() - self._first_at
                await trio.sleep(max(0.0, self._flush_interval - waited))
            try:
                await self._flush_once()
            except DatabaseUnavailable as exc:
                self._refused(exc)
                await trio.sleep(backoff.next_delay())
            else:
                if self._outage:
                    logger.success("database is back: writing {table} resumed", table=self.table)
                self._outage = False
                self._stats = replace(self._stats, healthy=True)
                backoff.reset()

    def _refused(self, exc: DatabaseUnavailable) -> None:
        stats = self._stats
        self._stats = replace(stats, errors=stats.errors + 1, last_error=str(exc), healthy=False)
        if not self._outage:
            self._outage = True
            logger.warning(
                "database unavailable, holding {count:,} {table} rows and retrying: {error}",
                count=len(self._buffer) + self._in_flight,
                table=self.table,
                error=exc,
            )

    async def _flush_once(self) -> None:
        # The batch leaves the buffer as it is claimed, so an overflow cannot take it; if the
        # write fails or is cancelled it goes back to the front, in order (writes are
        # idempotent, so an abandoned thread that still commits does no harm).
        count = min(self._batch_size, len(self._buffer))
        rows = [self._buffer.popleft() for _ in range(count)]
        self._in_flight += count
        if self._buffer:
            self._first_at = trio.current_time()
        try:
            written, rejected = await self.offload(self.store.write, rows)
        except BaseException:
            self._buffer.extendleft(reversed(rows))
            raise
        finally:
            self._in_flight -= count
        stats = self._stats
        self._stats = replace(
            stats,
            batches=stats.batches + 1,
            written=stats.written + written,
            duplicates=stats.duplicates + count - written - len(rejected),
            rejected=stats.rejected + len(rejected),
        )
        for row in rejected:
            logger.error(
                "the database rejects a {table} row as data: {row}", table=self.table, row=row
            )
        logger.debug("saved {count:,} {table} rows", count=written, table=self.table)


__all__ = ["EventWriter", "EventWriterStatistics", "RowBatch"]
