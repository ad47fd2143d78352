"""The store's layout, applied at every start: compression, retention, derived views.

``apply_options`` makes the database match the settings, idempotently, and is safe to run from
several processes at once (it holds the migration lock). On TimescaleDB every hypertable of
``schema.HYPERTABLES`` gets compression settings (segmented by its series columns, newest first:
also what a manual ``compress_chunk`` uses) and a compression policy at ``compress_after``
(none when it is off); each table in ``retention`` gets a retention policy,
and every other loses its own. A policy whose setting changed is replaced, so the jobs always
say what the settings say (read back from ``timescaledb_information.jobs``). On plain
PostgreSQL there is nothing to compress — one warning says so — and retention is done by
``serve`` itself (``klinetrio.store.retention``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg
from loguru import logger
from psycopg import sql

from klinetrio.core.durations import format_duration_ms, postgres_interval
from klinetrio.store import derived
from klinetrio.store.schema import HYPERTABLES, Hypertable

if TYPE_CHECKING:
    from klinetrio.settings import Settings

Conn = psycopg.Connection[tuple[object, ...]]
# The migration lock of ``database.migrate``: layout changes and migrations never interleave.
_LOCK_ID = 0x6B6C696E


@dataclass(frozen=True, slots=True)
class StoreOptions:
    """What the settings say the store should look like (see ``Settings``)."""

    compress_after_ms: int | None = 7 * 86_400_000
    retention: tuple[tuple[str, int], ...] = ()
    derived_intervals: tuple[str, ...] = ()
    collected_intervals: tuple[str, ...] = ("1m",)

    @classmethod
    def from_settings(cls, settings: Settings) -> StoreOptions:
        return cls(
            compress_after_ms=settings.compress_after_ms,
            retention=settings.retention,
            derived_intervals=settings.derived_intervals,
            collected_intervals=settings.intervals,
        )


@dataclass(frozen=True, slots=True)
class LayoutReport:
    timescale: bool
    changes: tuple[str, ...] = ()


def timescale_enabled(conn: Conn) -> bool:
    return (
        conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
        is not None
    )


def existing_hypertables(conn: Conn) -> list[Hypertable]:
    """The tables of ``HYPERTABLES`` that exist in the database and are hypertables."""
    rows = conn.execute(
        "SELECT hypertable_name FROM timescaledb_information.hypertables"
        " WHERE hypertable_schema = current_schema()"
    ).fetchall()
    names = {str(r[0]) for r in rows}
    return [t for t in HYPERTABLES if t.name in names]


def apply_options(conn: Conn, options: StoreOptions) -> LayoutReport:
    """Make compression, retention policies and derived views match ``options``."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
        timescale = timescale_enabled(conn)
        changes: list[str] = []
        if timescale:
            for table in existing_hypertables(conn):
                changes += _compression(conn, table, options.compress_after_ms)
                retention = dict(options.retention)
                changes += _retention(conn, table, retention.get(table.name))
        plans = derived.plan_views(
            options.derived_intervals, options.collected_intervals, continuous=timescale
        )
        changes += derived.ensure_views(conn, plans)
    for change in changes:
        logger.info("store: {change}", change=change)
    if not timescale and options.compress_after_ms is not None:
        logger.warning(
            "compression needs TimescaleDB, which this server lacks: tables stay uncompressed"
        )
    return LayoutReport(timescale, tuple(changes))


def _compression(conn: Conn, table: Hypertable, compress_after_ms: int | None) -> list[str]:
    changes = []
    row = conn.execute(
        "SELECT segmentby, orderby FROM timescaledb_information.hypertable_compression_settings"
        " WHERE hypertable = %s::regclass",
        (table.name,),
    ).fetchone()
    wanted = (",".join(table.segmentby), table.orderby)
    have = None if row is None else (_plain(row[0]), _plain(row[1]))
    if have != (_plain(wanted[0]), _plain(wanted[1])):
        conn.execute(
            sql.SQL(
                "ALTER TABLE {} SET (timescaledb.compress, timescaledb.compress_segmentby = {},"
                " timescaledb.compress_orderby = {})"
            ).format(sql.Identifier(table.name), sql.Literal(wanted[0]), sql.Literal(wanted[1]))
        )
        changes.append(f"{table.name} compressed by ({wanted[0]}) ordered by {wanted[1]}")
    changes += _policy(
        conn,
        table,
        proc="policy_compression",
        key="compress_after",
        wanted_ms=compress_after_ms,
        remove="remove_compression_policy",
        add="add_compression_policy",
        what="compression",
    )
    return changes


def _retention(conn: Conn, table: Hypertable, keep_ms: int | None) -> list[str]:
    return _policy(
        conn,
        table,
        proc="policy_retention",
        key="drop_after",
        wanted_ms=keep_ms,
        remove="remove_retention_policy",
        add="add_retention_policy",
        what="retention",
    )


def _policy(
    conn: Conn,
    table: Hypertable,
    *,
    proc: str,
    key: str,
    wanted_ms: int | None,
    remove: str,
    add: str,
    what: str,
) -> list[str]:
    """Replace ``table``'s policy job of kind ``proc`` unless it already has ``wanted_ms``."""
    jobs = conn.execute(
        "SELECT job_id, (config->>%s)::interval = %s::interval"
        " FROM timescaledb_information.jobs WHERE proc_name = %s"
        " AND hypertable_schema = current_schema() AND hypertable_name = %s",
        (key, postgres_interval(wanted_ms or 1), proc, table.name),
    ).fetchall()
    if wanted_ms is not None and len(jobs) == 1 and jobs[0][1]:
        return []
    if not jobs and wanted_ms is None:
        return []
    if jobs:
        conn.execute(
            sql.SQL("SELECT {}(%s, if_exists => true)").format(sql.Identifier(remove)),
            (table.name,),
        )
    if wanted_ms is None:
        return [f"{table.name}: {what} policy removed"]
    conn.execute(
        sql.SQL("SELECT {}(%s, %s::interval)").format(sql.Identifier(add)),
        (table.name, postgres_interval(wanted_ms)),
    )
    return [f"{table.name}: {what} policy after {format_duration_ms(wanted_ms)}"]


def _plain(text: object) -> str:
    return str(text or "").replace('"', "").replace(" ", "").lower()


def policies(conn: Conn) -> list[tuple[str, str, str]]:
    """(table, kind, interval) of klinetrio's policy jobs: what ``/health`` and tests read back."""
    rows = conn.execute(
        "SELECT hypertable_name, proc_name,"
        " coalesce(config->>'compress_after', config->>'drop_after', config->>'end_offset')"
        " FROM timescaledb_information.jobs WHERE hypertable_schema = current_schema()"
        " AND proc_name IN ('policy_compression', 'policy_retention',"
        " 'policy_refresh_continuous_aggregate') ORDER BY 1, 2"
    ).fetchall()
    return [(str(a), str(b), str(c)) for a, b, c in rows]
