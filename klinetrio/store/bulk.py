"""The bulk path into ``candles``: kline CSV rows straight through ``COPY``, tens of thousands at a time.

Archive rows never become Python objects. A batch is the exact CSV bytes of a data.binance.vision
file (checked by :mod:`klinetrio.binance.vision`), copied with ``COPY ... (FORMAT csv)`` into a
per-connection temporary staging table whose columns are the file's, then moved into ``candles``
by one ``INSERT ... SELECT`` that adds the series' key, converts ms or µs times exactly in SQL
and keeps only the batch's range of open times. PostgreSQL parses the numbers (``numeric``:
exact). Every batch is idempotent: a row already stored is never changed (``ON CONFLICT DO
NOTHING``, taken only when a conflict is there; see ``_INSERT_NEW``).

Text (CSV) was measured against binary COPY on this path (see ``bench/README.md``): binary needs
Python to cut and frame every field of every row, which costs more than PostgreSQL's CSV parser
saves, so the rows go in as Binance wrote them.

Two layers, like :mod:`klinetrio.store.database` and :mod:`klinetrio.store.writer`:

- ``BulkStore``: one connection, blocking, not thread-safe; ``load(batch)`` commits a batch.
- ``BulkWriter``: Trio; a pool of stores, each used by one worker thread at a time, so batches of
  several files are written at once while others are downloaded and parsed. ``write`` returns
  once its batch is committed. A database outage is retried with capped backoff (the batch is
  held, nothing is lost); a batch PostgreSQL rejects as data raises :class:`BatchRejected`.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass

import msgspec
import psycopg
import trio
from loguru import logger

from klinetrio.core.backoff import Backoff
from klinetrio.errors import DatabaseError, DatabaseUnavailable
from klinetrio.store.connect import connect, translate_errors
from klinetrio.store.database import WRITE_TIMEOUT_S
from klinetrio.threads import Offload, thread_offload

OUTAGE_REMINDER_S = 60.0
# Closing: quick, unless a thread is stuck on a dead peer (then left to the OS).
CLOSE_DEADLINE_S = 2.0

_CREATE_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS candles_bulk (
    open_time bigint, open numeric, high numeric, low numeric, close numeric, volume numeric,
    close_time bigint, quote_volume numeric, trades bigint, taker_buy_volume numeric,
    taker_buy_quote_volume numeric, ignore text
) ON COMMIT DELETE ROWS
"""
_COPY = "COPY candles_bulk FROM STDIN (FORMAT csv)"
# A millisecond time stays below 1e14 until the year 5138, a microsecond one passed it in 1973:
# each row says its own unit, so a file of either kind (or a batch of REST rows) goes in as is.
_INSERT_TEMPLATE = """
WITH new AS (
    INSERT INTO candles (market, symbol, interval, time, close_time, open, high, low, close,
                         volume, quote_volume, trades, taker_buy_volume, taker_buy_quote_volume,
                         source)
    SELECT %(market)s, %(symbol)s, %(interval)s,
           timestamptz 'epoch' + time_ms * interval '1 millisecond',
           timestamptz 'epoch' + CASE WHEN close_time >= 100000000000000 THEN close_time
                                      ELSE close_time * 1000 END * interval '1 microsecond',
           open, high, low, close, volume, quote_volume, trades,
           taker_buy_volume, taker_buy_quote_volume, %(source)s
      FROM (SELECT *, CASE WHEN open_time >= 100000000000000 THEN open_time / 1000
                           ELSE open_time END AS time_ms
              FROM candles_bulk) AS staged
     WHERE time_ms >= %(start)s AND time_ms < %(end)s
    {conflict}
    RETURNING 1
)
SELECT count(*) FROM new
"""
# Archive batches fill ranges the table lacked when they were planned, so they almost never
# conflict, and a plain INSERT is ~25 % faster than ON CONFLICT's speculative insertion (see
# bench/README.md). So the plain INSERT runs first, under a savepoint; a row that is already
# there (another writer got there first, a rerun) rolls back to it, and the same staged rows go
# in with ON CONFLICT DO NOTHING. The outcome is the same either way: every new row, no other.
_INSERT_NEW = _INSERT_TEMPLATE.format(conflict="")
_INSERT = _INSERT_TEMPLATE.format(conflict="ON CONFLICT DO NOTHING")


@dataclass(frozen=True, slots=True)
class BulkBatch:
    """Rows of one series as kline CSV, and the open times ``[start, end)`` to keep."""

    market: str
    symbol: str
    interval: str
    start: int
    end: int
    csv: bytes
    rows: int
    source: str = "archive"


class BatchRejected(DatabaseError):
    """PostgreSQL refused a batch as data (SQLSTATE class 22 or 23): retrying cannot help."""


class BulkStore:
    """One PostgreSQL connection for bulk loads. Not thread-safe; reconnects after a loss."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None

    def load(self, batch: BulkBatch) -> int:
        """COPY the batch, insert what is new, commit; return how many rows were new."""
        if not batch.csv:
            return 0
        conn = self._connection()
        try:
            with translate_errors("loading candles"):
                try:
                    params = {
                        "market": batch.market,
                        "symbol": batch.symbol,
                        "interval": batch.interval,
                        "source": batch.source,
                        "start": batch.start,
                        "end": batch.end,
                    }
                    with conn.cursor() as cur:
                        with cur.copy(_COPY) as copy:
                            copy.write(batch.csv)
                        try:
                            with conn.transaction():  # a savepoint: the staged rows stay
                                cur.execute(_INSERT_NEW, params)
                        except psycopg.errors.UniqueViolation:
                            cur.execute(_INSERT, params)
                        row = cur.fetchone()
                    conn.commit()
                except (psycopg.DataError, psycopg.IntegrityError) as exc:
                    conn.rollback()
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                    raise BatchRejected(f"the database rejects these rows: {first}") from exc
        except DatabaseUnavailable:
            self.close()
            raise
        except BatchRejected:
            raise
        except BaseException:
            self._rollback()
            raise
        assert row is not None
        count = row[0]
        assert isinstance(count, int)
        return count

    def _connection(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self.close()
            conn = connect(self.url, statement_timeout_s=WRITE_TIMEOUT_S)
            try:
                with translate_errors("preparing the bulk staging table"):
                    conn.execute(_CREATE_STAGING)
                    conn.commit()
            except BaseException:
                with suppress(psycopg.Error):
                    conn.close()
                raise
            self._conn = conn
        return self._conn

    def _rollback(self) -> None:
        if self._conn is not None and not self._conn.closed:
            try:
                self._conn.rollback()
            except psycopg.Error:
                self.close()

    def close(self) -> None:
        if self._conn is not None:
            with suppress(psycopg.Error):
                self._conn.close()
            self._conn = None


class BulkStatistics(msgspec.Struct, frozen=True):
    """Counters of one :class:`BulkWriter` (a snapshot)."""

    batches: int
    rows: int
    """Rows handed in (each batch's row count)."""
    written: int
    """Rows that were new to ``candles``."""
    rejected: int
    """Batches the database refused as data."""
    errors: int
    """Failed attempts (outages included; each retried)."""
    healthy: bool


class BulkWriter:
    """Commits :class:`BulkBatch` es through a pool of :class:`BulkStore` lanes.

    Any number of tasks may ``await write(batch)`` at once: each waits for a free lane (that is
    its backpressure: a producer can be at most one batch ahead of the database), and the lanes
    run in parallel, one worker thread each. ``offload`` replaces the worker threads (tests).
    """

    def __init__(self, stores: Sequence[BulkStore], *, offload: Offload | None = None) -> None:
        if not stores:
            raise ValueError("BulkWriter needs at least one store")
        self._all = [
            (store, offload or thread_offload(trio.CapacityLimiter(1))) for store in stores
        ]
        self._free = list(self._all)
        self._lanes = trio.CapacityLimiter(len(stores))
        self._batches = 0
        self._rows = 0
        self._written = 0
        self._rejected = 0
        self._errors = 0
        self._healthy = True
        self._outage_since: float | None = None

    def statistics(self) -> BulkStatistics:
        return BulkStatistics(
            batches=self._batches,
            rows=self._rows,
            written=self._written,
            rejected=self._rejected,
            errors=self._errors,
            healthy=self._healthy,
        )

    async def write(self, batch: BulkBatch) -> int:
        """Commit ``batch``; return how many of its rows were new. Retries outages until it can."""
        async with self._lanes:
            lane = self._free.pop()
            try:
                return await self._write(lane[0], lane[1], batch)
            finally:
                self._free.append(lane)

    async def _write(self, store: BulkStore, offload: Offload, batch: BulkBatch) -> int:
        backoff = Backoff(initial=0.5, maximum=30.0)
        reminded_at = 0.0
        while True:
            try:
                written: int = await offload(store.load, batch)
            except BatchRejected:
                self._errors += 1
                self._rejected += 1
                raise
            except DatabaseUnavailable as exc:
                self._errors += 1
                self._healthy = False
                now = trio.current_time()
                if self._outage_since is None:
                    self._outage_since = reminded_at = now
                    logger.warning(
                        "database unavailable, holding a batch and retrying: {error}", error=exc
                    )
                elif now - reminded_at >= OUTAGE_REMINDER_S:
                    reminded_at = now
                    logger.warning(
                        "database still unavailable after {seconds:.0f}s",
                        seconds=now - self._outage_since,
                    )
                await trio.sleep(backoff.next_delay())
                continue
            if self._outage_since is not None:
                logger.success(
                    "database is back after {seconds:.1f}s: loading resumed",
                    seconds=trio.current_time() - self._outage_since,
                )
                self._outage_since = None
            self._healthy = True
            self._batches += 1
            self._rows += batch.rows
            self._written += written
            return written

    async def aclose(self) -> None:
        """Close every connection, each through the offload that owns its thread (shielded, and
        bounded: a thread stuck on a dead peer is left to the operating system)."""
        with trio.move_on_after(CLOSE_DEADLINE_S, shield=True):
            for store, offload in self._all:
                await offload(store.close)


__all__ = ["BatchRejected", "BulkBatch", "BulkStatistics", "BulkStore", "BulkWriter"]
