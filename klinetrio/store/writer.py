"""The writer: receives closed candles, batches them, and commits them through a worker thread.

Two tasks share one bounded buffer:

* ``_intake`` moves candles from the channel into the buffer. It never waits on the database,
  so the channel drains at memory speed and the connections upstream never stall long enough to
  miss a ping. This is the lossless edge: while the buffer has room, nothing is dropped.
* ``_flush`` takes a batch (up to ``batch_size`` candles, or whatever arrived within
  ``flush_interval`` of the first), writes it in a worker thread, and retries with backoff when
  the database refuses it. A batch counts as held until it is committed. The interval is short
  (1 ms): batches form by themselves while a commit is in flight, so waiting longer only adds
  latency (at the full load a 20 ms wait cost 20 ms at p50 and bought no CPU: bench/README.md).

A refused write is an outage, not bad data (see ``store.sqlstate``): a lost connection, a
read-only server after a fail-over, a revoked grant, a full disk, a timeout. The writer keeps
every candle, reports unhealthy (``/health`` degraded, ``/ready`` false), logs one warning per
outage (and a reminder a minute) and retries. Only candles the database rejects as data are set
aside: logged with the row, counted, and appended to the dead-letter file. When an outage lasts
so long that the buffer fills, the oldest candles are dropped, counted and logged: the database
is the source of truth for what is missing, so sync refills them from REST once it is back.

Shutdown travels by channel: when every producer has closed its end, the intake ends, the
flusher commits what is left and ``run`` returns. The owner bounds that with a deadline, and
nothing here is shielded from it: a write cancelled by the deadline abandons its worker thread
(which may still commit; every write is idempotent) and its candles count as unwritten.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import trio
from loguru import logger

from klinetrio.core.backoff import Backoff
from klinetrio.core.histogram import Histogram, HistogramSnapshot
from klinetrio.core.models import Candle, StreamKey, format_ms
from klinetrio.errors import DatabaseUnavailable
from klinetrio.store.database import Database, Rejected, WriteResult
from klinetrio.store.deadletters import DeadLetters
from klinetrio.threads import Offload, in_thread, thread_offload

OUTAGE_REMINDER_S = 60.0
# A write that has not returned by then is stuck (a peer that takes our bytes and never
# answers): longer than the server's statement timeout and TCP's own timeouts together.
WRITE_STUCK_S = 90.0

# Every closed candle travels as a batch: one for a live candle, a page for REST.
CandleBatch = Sequence[Candle]


@dataclass(slots=True)
class WriterStatistics:
    received: int = 0
    written: int = 0
    duplicates: int = 0
    dropped: int = 0
    rejected: int = 0  # refused by the database as data, kept in the dead-letter file
    batches: int = 0
    errors: int = 0
    outages: int = 0
    buffered: int = 0
    healthy: bool = True
    channel_closed: bool = False  # every producer closed its end (an orderly end of data)
    last_error: str | None = None
    last_write_latency_s: float = 0.0
    last_open_time: dict[StreamKey, int] = field(default_factory=dict)
    # From receipt of a batch's oldest candle to its commit.
    latency: HistogramSnapshot = field(default_factory=lambda: Histogram().snapshot())


class CandleWriter:
    """Batches closed candles into PostgreSQL. Start it with ``await nursery.start(writer.run, rx)``.

    ``on_dropped(key, open_time)`` is told of the earliest candle of each series dropped from a
    full buffer (the syncer refills it).
    ``dead_letters`` keeps the candles the database rejects as data.
    """

    def __init__(
        self,
        database: Database | Sequence[Database],
        *,
        batch_size: int = 5_000,
        flush_interval: float = 0.001,
        buffer_limit: int = 360_000,
        offload: Offload | None = None,
        on_dropped: Callable[[StreamKey, int], None] | None = None,
        dead_letters: DeadLetters | None = None,
        backpressure: bool = False,
        stuck_after: float = WRITE_STUCK_S,
    ) -> None:
        databases = [database] if isinstance(database, Database) else list(database)
        # One lane per connection, each with its own worker thread: with two, Python builds the
        # next batch while PostgreSQL inserts the last one (backfill); live collection uses one.
        self._offload = offload
        self._lanes = [(db, self._new_offload()) for db in databases]
        self._stuck_after = stuck_after
        self._in_flight = 0
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._buffer: deque[tuple[float, Candle]] = deque()
        self._buffer_limit = buffer_limit
        self._on_dropped = on_dropped
        self._dead_letters = dead_letters
        # Backfill has nobody to keep up with: a full buffer makes its producers wait instead
        # of dropping. Live collection must never make a connection wait, so it drops instead.
        self._backpressure = backpressure
        self._drained = trio.Event()
        self._arrived = trio.Event()
        self._intake_closed = False
        self._stats = WriterStatistics()
        self._latency = Histogram()
        self._drop_logged_at = -1e9
        # One outage, however many lanes see it: (began at, last reminder at) or None.
        self._outage: tuple[float, float] | None = None

    def _new_offload(self) -> Offload:
        return self._offload or thread_offload(trio.CapacityLimiter(1))

    def statistics(self) -> WriterStatistics:
        """A snapshot: reading it changes nothing, and it does not change afterwards."""
        return replace(
            self._stats,
            buffered=len(self._buffer) + self._in_flight,
            last_open_time=dict(self._stats.last_open_time),
            latency=self._latency.snapshot(),
        )

    @property
    def healthy(self) -> bool:
        """False while the database refuses writes (an outage)."""
        return self._stats.healthy

    @property
    def lanes(self) -> list[tuple[Database, Offload]]:
        """Each connection with the offload that owns its thread (closing goes through it)."""
        return list(self._lanes)

    async def run(
        self,
        receive_channel: trio.MemoryReceiveChannel[CandleBatch],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Connect, report started, then write until the channel closes and the buffer drains."""
        with receive_channel:
            await self._connect()
            task_status.started()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._intake, receive_channel)
                for lane in range(len(self._lanes)):
                    nursery.start_soon(self._flush_loop, lane)

    async def _connect(self) -> None:
        backoff = Backoff(initial=0.5, maximum=10.0)
        database, offload = self._lanes[0]
        while True:
            try:
                await offload(database.ping)
            except DatabaseUnavailable as exc:
                self._refused(exc, backoff)
                await trio.sleep(backoff.next_delay())
            else:
                self._recovered()
                return

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

    async def _flush_loop(self, lane: int) -> None:
        backoff = Backoff(initial=0.5, maximum=30.0)
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
                await self._flush_once(lane)
            except DatabaseUnavailable as exc:
                self._refused(exc, backoff)
                await trio.sleep(backoff.next_delay())
            else:
                self._recovered()
                backoff.reset()

    def _refused(self, exc: DatabaseUnavailable, backoff: Backoff) -> None:
        """An outage: one warning when it begins, a reminder a minute, the rest at DEBUG."""
        stats = self._stats
        stats.errors += 1
        stats.last_error = str(exc)
        stats.healthy = False
        now = trio.current_time()
        held = len(self._buffer) + self._in_flight
        if self._outage is None:
            self._outage = (now, now)
            stats.outages += 1
            logger.warning(
                "database unavailable, holding {count:,} candles and retrying: {error}",
                count=held,
                error=exc,
            )
        elif now - self._outage[1] >= OUTAGE_REMINDER_S:
            self._outage = (self._outage[0], now)
            logger.warning(
                "database still unavailable after {seconds:.0f}s, holding {count:,} candles: {error}",
                seconds=now - self._outage[0],
                count=held,
                error=exc,
            )
        else:
            logger.debug(
                "database unavailable, retrying in about {delay:.1f}s: {error}",
                delay=backoff.peek(),
                error=exc,
            )

    def _recovered(self) -> None:
        if self._outage is not None:
            logger.success(
                "database is back after {seconds:.1f}s: writing resumed",
                seconds=trio.current_time() - self._outage[0],
            )
            self._outage = None
        self._stats.healthy = True

    async def _flush_once(self, lane: int) -> None:
        # The batch leaves the buffer as it is claimed, so neither another lane nor an overflow
        # can take it. If the write fails, or is cancelled (its abandoned thread may still
        # commit: writes are idempotent), it goes back to the front, in order.
        database, offload = self._lanes[lane]
        count = min(self._batch_size, len(self._buffer))
        items = [self._buffer.popleft() for _ in range(count)]
        self._in_flight += count
        self._drained.set()
        candles = [candle for _, candle in items]
        started = trio.current_time()
        try:
            with trio.move_on_after(self._stuck_after) as waiting:
                written: WriteResult = await offload(database.write, candles)
            if waiting.cancelled_caught:
                # Its thread is abandoned and keeps the old connection: the lane goes on with
                # a new connection (and thread) of its own.
                self._lanes[lane] = (database.reopened(), self._new_offload())
                raise DatabaseUnavailable(
                    f"a write did not return within {self._stuck_after:.0f}s;"
                    " abandoned its connection for a new one"
                )
        except BaseException:
            self._buffer.extendleft(reversed(items))
            raise
        finally:
            self._in_flight -= count
        done = trio.current_time()
        self._record(candles, written, started, done, items[0][0])
        if written.rejected:
            await self._set_aside(written.rejected)

    async def _set_aside(self, rejected: tuple[Rejected, ...]) -> None:
        """Rows refused as data: one log line each with the row, and the dead-letter file."""
        self._stats.rejected += len(rejected)
        kept = "" if self._dead_letters is None else f"; kept in {self._dead_letters.path}"
        for r in rejected:
            logger.error(
                "the database rejects a candle as data ({sqlstate}){kept}: {candle}",
                sqlstate=r.sqlstate,
                kept=kept,
                candle=r.candle,
            )
        if self._dead_letters is not None:
            try:
                await in_thread(self._dead_letters.append, rejected)
            except OSError as exc:
                logger.error(
                    "cannot append to the dead-letter file {path}: {error}",
                    path=self._dead_letters.path,
                    error=exc,
                )

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
        stats.duplicates += len(candles) - written.count - len(written.rejected)
        stats.last_write_latency_s = done - started
        last = stats.last_open_time
        for candle in candles:
            key = candle.key
            if candle.open_time > last.get(key, -1):
                last[key] = candle.open_time
        self._latency.observe(done - oldest_received)
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
