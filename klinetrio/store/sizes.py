"""How big the tables are, before and after compression where TimescaleDB knows.

``table_sizes(conn)`` is what ``/health`` and ``klinetrio coverage --json`` show; ``SizeMonitor``
measures every few minutes in a worker thread, so ``/health`` reads a snapshot and never waits
on the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
import trio
from loguru import logger

from klinetrio.errors import DatabaseError
from klinetrio.store.connect import connect, translate_errors
from klinetrio.store.schema import HYPERTABLES
from klinetrio.threads import Offload, thread_offload

EVERY_S = 300.0
Conn = psycopg.Connection[tuple[object, ...]]


@dataclass(frozen=True, slots=True)
class TableSize:
    """One table: bytes on disk now (table, indexes, TOAST), and TimescaleDB's compression
    figures when it has compressed chunks (None elsewhere)."""

    table: str
    total_bytes: int
    hypertable: bool = False
    chunks: int | None = None
    compressed_chunks: int | None = None
    before_compression_bytes: int | None = None
    after_compression_bytes: int | None = None


def table_sizes(conn: Conn) -> list[TableSize]:
    """The size of each of klinetrio's tables that exists (blocking)."""
    with translate_errors("measuring table sizes"):
        timescale = (
            conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
            is not None
        )
        hypertables: set[str] = set()
        if timescale:
            hypertables = {
                str(r[0])
                for r in conn.execute(
                    "SELECT hypertable_name FROM timescaledb_information.hypertables"
                    " WHERE hypertable_schema = current_schema()"
                )
            }
        sizes = []
        for spec in HYPERTABLES:
            if conn.execute("SELECT to_regclass(%s)", (spec.name,)).fetchone() == (None,):
                continue
            if spec.name not in hypertables:
                row = conn.execute(
                    "SELECT pg_total_relation_size(%s::regclass)", (spec.name,)
                ).fetchone()
                sizes.append(TableSize(spec.name, _int(row[0] if row else 0)))
                continue
            total = conn.execute("SELECT hypertable_size(%s::regclass)", (spec.name,)).fetchone()
            stats = conn.execute(
                "SELECT total_chunks, number_compressed_chunks, before_compression_total_bytes,"
                " after_compression_total_bytes FROM hypertable_compression_stats(%s::regclass)",
                (spec.name,),
            ).fetchone()
            chunks = conn.execute(
                "SELECT count(*) FROM show_chunks(%s::regclass)", (spec.name,)
            ).fetchone()
            compressed = _int(stats[1]) if stats and stats[1] is not None else 0
            sizes.append(
                TableSize(
                    spec.name,
                    _int(total[0] if total else 0),
                    hypertable=True,
                    chunks=_int(chunks[0] if chunks else 0),
                    compressed_chunks=compressed,
                    before_compression_bytes=_opt(stats[2]) if stats and compressed else None,
                    after_compression_bytes=_opt(stats[3]) if stats and compressed else None,
                )
            )
        conn.rollback()
    return sizes


def _int(value: object) -> int:
    return 0 if value is None else int(str(value))


def _opt(value: object) -> int | None:
    return None if value is None else _int(value)


@dataclass(frozen=True, slots=True)
class SizeStatistics:
    tables: tuple[TableSize, ...] = ()
    measured_at: str | None = None
    last_error: str | None = None


class SizeMonitor:
    """Measures ``table_sizes`` every ``every_s`` seconds; ``statistics()`` is the last result."""

    def __init__(
        self, database_url: str, *, every_s: float = EVERY_S, offload: Offload | None = None
    ) -> None:
        self._url = database_url
        self._every = every_s
        self._offload = offload or thread_offload(trio.CapacityLimiter(1))
        self._stats = SizeStatistics()

    def statistics(self) -> SizeStatistics:
        return self._stats

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self.measure()
            await trio.sleep(self._every)

    async def measure(self) -> None:
        try:
            tables = await self._offload(self._measure)
        except DatabaseError as exc:
            self._stats = SizeStatistics(self._stats.tables, self._stats.measured_at, str(exc))
            logger.debug("table sizes unavailable: {error}", error=exc)
            return
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self._stats = SizeStatistics(tuple(tables), stamp)

    def _measure(self) -> list[TableSize]:
        conn = connect(self._url)
        try:
            return table_sizes(conn)
        finally:
            conn.close()
