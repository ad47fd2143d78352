"""The writer: receives closed candles, batches them, and commits them through a worker thread.

Two tasks share one bounded buffer:

* ``_intake`` moves candles from the channel into the buffer. It never waits on the database,
  so the channel drains at memory speed and the connections upstream never stall long enough to
  miss a ping. This is the lossless edge: while the buffer has room, nothing is dropped.
* ``_flush`` takes a batch (up to ``batch_size`` candles, or whatever arrived within
  ``flush_interval`` of the first), writes it in a worker thread, and retries with backoff when
  the database is away. The batch stays in the buffer until it is committed.

When the database stays away so long that the buffer fills, the oldest candles are dropped,
counted and logged: the database is the source of truth for what is missing, so sync refills
them from REST once it is back.

Shutdown travels by channel: when every producer has closed its end, the intake ends, the
flusher commits what is left and ``run`` returns. The owner bounds that with a deadline; the
final flush runs shielded so a cancellation cannot interrupt a commit halfway.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio
from loguru import logger

from klinetrio.core.backoff import Backoff
from klinetrio.core.models import Candle, StreamKey, format_ms
from klinetrio.errors import DatabaseError, DatabaseUnavailable
from klinetrio.store.database import Database, WriteResult

T = TypeVar("T")
OUTAGE_REMINDER_S = 60.0
Offload = Callable[..., Awaitable[Any]]

# Every closed candle travels as a batch: one for a live candle, a page for REST.
CandleBatch = Sequence[Candle]


@dataclass(slots=True)
class WriterStatistics:
    received: int = 0
    written: int = 0
    duplicates: int = 0
    dropped: int = 0
    batches: int = 0
    errors: int = 0
    buffered: int = 0
    healthy: bool = True
    channel_closed: bool = False  # every producer closed its end (an orderly end of data)
    last_error: str | None = None
    last_write_latency_s: float = 0.0
    last_open_time: dict[StreamKey, int] = field(default_factory=dict)


def thread_offload(limiter: trio.CapacityLimiter) -> Offload:
    """Run blocking calls in a worker thread, one at a time (one connection, one thread)."""

    async def offload(fn: Callable[..., T], *args: Any) -> T:
        return await trio.to_thread.run_sync(functools.partial(fn, *args), limiter=limiter)

    return offload


class CandleWriter:
    """Batches closed candles into PostgreSQL. Start it with ``await nursery.start(writer.run, rx)``.

        ``on_batch(count, latency)`` is told of every commit (metrics); ``on_dropped(key, open_time)``
    of the earliest candle of each series dropped from a full buffer (the syncer refills it).
    """

    def __init__(
        self,
        database: Database | Sequence[Database],
        *,
        batch_size: int = 5_000,
        flush_interval: float = 0.02,
        buffer_limit: int = 360_000,
        offload: Offload | None = None,
        on_batch: Callable[[int, float], None] | None = None,
        on_dropped: Callable[[StreamKey, int], None] | None = None,
        backpressure: bool = False,
    ) -> None:
        databases = [database] if isinstance(database, Database) else list(database)
        # One lane per connection, each with its own worker thread: with two, Python builds the
        # next batch while PostgreSQL inserts the last one (backfill); live collection uses one.
        self._lanes = [(db, offload or thread_offload(trio.CapacityLimiter(1))) for db in databases]
        self._in_flight = 0
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._buffer: deque[tuple[float, Candle]] = deque()
        self._buffer_limit = buffer_limit
        self._on_batch = on_batch
        self._on_dropped = on_dropped
        # Backfill has nobody to keep up with: a full buffer makes its producers wait instead
        # of dropping. Live collection must never make a connection wait, so it drops instead.
        self._backpressure = backpressure
        self._drained = trio.Event()
        self._arrived = trio.Event()
        self._intake_closed = False
        self._stats = WriterStatistics()
        self._drop_logged_at = -1e9

    def statistics(self) -> WriterStatistics:
        self._stats.buffered = len(self._buffer) + self._in_flight
        return self._stats

    async def run(
        self,
        receive_channel: trio.MemoryReceiveChannel[CandleBatch],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Connect and migrate, report started, then write until the channel closes and drains."""
        with receive_channel:
            await self._connect()
            task_status.started()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._intake, receive_channel)
                for database, offload in self._lanes:
                    nursery.start_soon(self._flush_loop, database, offload)

    async def _connect(self) -> None:
        backoff = Backoff(initial=0.5, maximum=10.0)
        while True:
            try:
                database, offload = self._lanes[0]
                await offload(database.ping)
                return
            except DatabaseUnavailable as exc:
                delay = backoff.next_delay()
                self._mark_unhealthy(exc)
                logger.warning(
                    "database unavailable, retrying in {delay:.1f}s: {error}",
                    delay=delay,
                    error=exc,
                )
                await trio.sleep(delay)

    async def _intake(self, receive_channel: trio.MemoryReceiveChannel[CandleBatch]) -> None:
        try:
            async for batch in receive_channel:
                while (
                    self._backpressure and len(self._buffer) + self._in_flight >= self._buffer_limit
                ):
                    self._drained = trio.Event()
                    await self._drained.wait()
                self._stats.received += len(batch)
                now = trio.current_time()
                self._buffer.extend((now, candle) for candle in batch)
                # With backpressure the buffer may overshoot by one batch, and nothing is dropped.
                overflow = len(self._buffer) - self._buffer_limit
                if overflow > 0 and not self._backpressure:
                    self._drop_oldest(overflow)
                self._arrived.set()
            self._stats.channel_closed = True
        finally:
            self._intake_closed = True
            self._arrived.set()

    def _drop_oldest(self, count: int) -> None:
        earliest: dict[StreamKey, int] = {}
        for _ in range(count):
            _, candle = self._buffer.popleft()
            key = candle.key
            if candle.open_time < earliest.get(key, candle.open_time + 1):
                earliest[key] = candle.open_time
        self._stats.dropped += count
        if self._on_dropped is not None:
            for key, open_time in earliest.items():
                self._on_dropped(key, open_time)
        now = trio.current_time()
        if now - self._drop_logged_at >= 10:
            self._drop_logged_at = now
            logger.error(
                "writer buffer full ({limit:,} candles): dropped {count:,} oldest so far; "
                "sync refills them from REST once the database is back",
                limit=self._buffer_limit,
                count=self._stats.dropped,
            )

    async def _flush_loop(self, database: Database, offload: Offload) -> None:
        backoff = Backoff(initial=0.5, maximum=30.0)
        outage_since: float | None = None
        reminded_at = 0.0
        while True:
            if not self._buffer:
                if self._intake_closed:
                    return
                if self._arrived.is_set():
                    # Only a set event is replaced: another lane may be waiting on the unset one.
                    self._arrived = trio.Event()
                await self._arrived.wait()
                continue
            if len(self._buffer) < self._batch_size and not self._intake_closed:
                # Let a batch gather, but never hold the oldest candle much past the interval.
                waited = trio.current_time() - self._buffer[0][0]
                await trio.sleep(max(0.0, self._flush_interval - waited))
                if not self._buffer:
                    continue  # another lane took it
            try:
                with trio.CancelScope(shield=self._intake_closed):
                    await self._flush_once(database, offload)
            except DatabaseUnavailable as exc:
                self._mark_unhealthy(exc)
                delay = backoff.next_delay()
                now = trio.current_time()
                if outage_since is None:
                    outage_since = reminded_at = now
                    logger.warning(
                        "database unavailable, holding {count:,} candles and retrying: {error}",
                        count=len(self._buffer),
                        error=exc,
                    )
                elif now - reminded_at >= OUTAGE_REMINDER_S:
                    reminded_at = now
                    logger.warning(
                        "database still unavailable after {seconds:.0f}s, holding {count:,} candles",
                        seconds=now - outage_since,
                        count=len(self._buffer),
                    )
                else:
                    logger.debug(
                        "database unavailable, retrying in {delay:.1f}s: {error}",
                        delay=delay,
                        error=exc,
                    )
                await trio.sleep(delay)
            else:
                if outage_since is not None:
                    logger.success(
                        "database is back after {seconds:.1f}s: writing resumed",
                        seconds=trio.current_time() - outage_since,
                    )
                    outage_since = None
                self._stats.healthy = True
                backoff.reset()

    async def _flush_once(self, database: Database, offload: Offload) -> None:
        # The batch leaves the buffer as it is claimed, so neither another lane nor an overflow
        # can take it; if the write fails it goes back to the front, in order.
        count = min(self._batch_size, len(self._buffer))
        items = [self._buffer.popleft() for _ in range(count)]
        self._in_flight += count
        self._drained.set()
        candles = [candle for _, candle in items]
        started = trio.current_time()
        try:
            written = await offload(database.write, candles)
        except DatabaseError as exc:
            self._buffer.extendleft(reversed(items))
            if isinstance(exc, DatabaseUnavailable):
                raise
            # Not transient and not one bad row (those are dropped inside write): keep the batch
            # and treat it like an outage so nothing received is lost.
            raise DatabaseUnavailable(str(exc)) from exc
        finally:
            self._in_flight -= count
        done = trio.current_time()
        self._record(candles, written, started, done, items[0][0])

    def _record(
        self,
        candles: list[Candle],
        written: WriteResult,
        started: float,
        done: float,
        oldest_received: float,
    ) -> None:
        stats = self._stats
        stats.batches += 1
        stats.written += written.count
        stats.duplicates += len(candles) - written.count
        stats.last_write_latency_s = done - started
        last = stats.last_open_time
        for candle in candles:
            key = candle.key
            if candle.open_time > last.get(key, -1):
                last[key] = candle.open_time
        if self._on_batch is not None:
            self._on_batch(len(candles), done - oldest_received)
        if written.count == 0:
            logger.debug("batch of {count} candles: all already stored", count=len(candles))
        elif written.count <= len(written.first):
            for symbol, interval, open_time in written.first:
                logger.info(
                    "saved {symbol} {interval} {time}",
                    symbol=symbol,
                    interval=interval,
                    time=format_ms(open_time),
                )
        else:
            logger.info(
                "saved {count:,} candles of {streams} (newest {time})",
                count=written.count,
                streams="1 stream" if written.streams == 1 else f"{written.streams:,} streams",
                time=format_ms(written.newest or 0),
            )

    def _mark_unhealthy(self, exc: Exception) -> None:
        self._stats.errors += 1
        self._stats.last_error = str(exc)
        self._stats.healthy = False
