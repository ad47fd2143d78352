"""Retention on plain PostgreSQL: ``serve`` deletes rows past each table's horizon itself.

(TimescaleDB drops whole chunks with its own retention policies; see ``policies``.)

Once an hour, for each table of ``KLINETRIO_RETENTION``, the rows older than ``now - keep`` are
deleted series by series in bounded batches, one short transaction each, so a large first purge
never holds locks for long or bloats one transaction, and a cancellation waits for one batch at
most. The series are found with a skip scan over the primary key (its leading columns are the
table's series columns), so no full scan is needed to list them.

``now`` is the wall clock: horizons are days long, so neither clock skew nor the exchange's
time matters here, and tests pass their own clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import psycopg
import trio
from loguru import logger
from psycopg import sql

from klinetrio.core.durations import format_duration_ms
from klinetrio.errors import DatabaseError
from klinetrio.store.connect import connect, translate_errors
from klinetrio.store.schema import hypertable
from klinetrio.threads import Offload, thread_offload

EVERY_S = 3600.0
BATCH = 10_000
Conn = psycopg.Connection[tuple[object, ...]]


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def series(conn: Conn, table: str) -> list[tuple[object, ...]]:
    """Every distinct value of ``table``'s series columns, by a skip scan over its index."""
    columns = hypertable(table).segmentby
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    prev = sql.SQL(", ").join(sql.SQL("s.{}").format(sql.Identifier(c)) for c in columns)
    query = sql.SQL(
        "WITH RECURSIVE s AS ("
        " (SELECT {cols} FROM {t} ORDER BY {cols} LIMIT 1)"
        " UNION ALL"
        " SELECT n.* FROM s, LATERAL (SELECT {cols} FROM {t} WHERE ({cols}) > ({prev})"
        " ORDER BY {cols} LIMIT 1) n"
        ") SELECT * FROM s"
    ).format(cols=cols, t=sql.Identifier(table), prev=prev)
    with translate_errors(f"listing the series of {table}"):
        rows = conn.execute(query).fetchall()
        conn.rollback()
    return [tuple(r) for r in rows]


def delete_batch(
    conn: Conn, table: str, key: Sequence[object], horizon: datetime, batch: int = BATCH
) -> int:
    """Delete up to ``batch`` rows of one series older than ``horizon``; how many went."""
    spec = hypertable(table)
    match = sql.SQL(" AND ").join(
        sql.SQL("{} = %s").format(sql.Identifier(c)) for c in spec.segmentby
    )
    query = sql.SQL(
        "DELETE FROM {t} WHERE ctid = ANY(ARRAY("
        "SELECT ctid FROM {t} WHERE {match} AND {time} < %s LIMIT %s))"
    ).format(t=sql.Identifier(table), match=match, time=sql.Identifier(spec.time_column))
    with translate_errors(f"deleting old rows of {table}"):
        deleted = conn.execute(query, (*key, horizon, batch)).rowcount
        conn.commit()
    return deleted


@dataclass(frozen=True, slots=True)
class RetentionStatistics:
    """A snapshot of the retention task."""

    tables: dict[str, str]
    passes: int = 0
    deleted: int = 0
    last_pass_at: str | None = None
    last_pass_deleted: int = 0
    errors: int = 0
    last_error: str | None = None


class Retention:
    """Deletes rows past their table's retention, hourly. ``await nursery.start(retention.run)``."""

    def __init__(
        self,
        database_url: str,
        retention: Sequence[tuple[str, int]],
        *,
        every_s: float = EVERY_S,
        batch: int = BATCH,
        clock: Callable[[], int] = wall_ms,
        offload: Offload | None = None,
    ) -> None:
        self._url = database_url
        self._retention = tuple(retention)
        self._every = every_s
        self._batch = batch
        self._clock = clock
        self._offload = offload or thread_offload(trio.CapacityLimiter(1))
        self._conn: Conn | None = None
        self._stats = RetentionStatistics({t: format_duration_ms(ms) for t, ms in retention})

    def statistics(self) -> RetentionStatistics:
        return self._stats

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with logger.contextualize(component="retention"):
            task_status.started()
            try:
                while True:
                    await self.purge()
                    await trio.sleep(self._every)
            finally:
                with trio.move_on_after(5, shield=True):
                    await self._offload(self._close)

    async def purge(self) -> int:
        """One pass over every table; the rows deleted. Errors are logged and counted."""
        now = self._clock()
        total = 0
        try:
            for table, keep_ms in self._retention:
                horizon = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=now - keep_ms)
                exists = await self._offload(self._exists, table)
                if not exists:
                    continue
                for key in await self._offload(self._series, table):
                    while True:
                        deleted = await self._offload(self._delete, table, key, horizon)
                        total += deleted
                        if deleted < self._batch:
                            break
        except DatabaseError as exc:
            self._stats = replace(self._stats, errors=self._stats.errors + 1, last_error=str(exc))
            logger.warning("retention pass failed: {error}", error=exc)
            await self._offload(self._close)
        stamp = datetime.fromtimestamp(now / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self._stats = replace(
            self._stats,
            passes=self._stats.passes + 1,
            deleted=self._stats.deleted + total,
            last_pass_at=stamp,
            last_pass_deleted=total,
        )
        if total:
            logger.info("retention deleted {count:,} rows", count=total)
        return total

    def _connection(self) -> Conn:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = connect(self._url)
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _exists(self, table: str) -> bool:
        conn = self._connection()
        with translate_errors("checking a table"):
            row = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()
            conn.rollback()
        return row is not None and row[0] is not None

    def _series(self, table: str) -> list[tuple[object, ...]]:
        return series(self._connection(), table)

    def _delete(self, table: str, key: Sequence[object], horizon: datetime) -> int:
        return delete_batch(self._connection(), table, key, horizon, self._batch)
