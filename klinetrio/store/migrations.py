"""The schema's numbered migrations (``db/NNNN_*.sql``) and the TimescaleDB hypertables.

``migrate`` applies every migration not yet recorded in ``klinetrio_migrations``, under an
advisory lock, so several processes may start at once; every migration is idempotent, so
``reapply`` (the repair for a dropped table) runs them all again. ``ensure_hypertable`` runs at
every start rather than as a migration: a server that gains TimescaleDB later gets its
hypertables on the next start. Blocking; call it on a ``Database``'s connection.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

import psycopg
from loguru import logger

from klinetrio.errors import DatabaseError
from klinetrio.store.connect import one_line, translate_errors
from klinetrio.store.policies import LayoutReport
from klinetrio.store.schema import HYPERTABLES

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# Any constant works; it only has to be the same in every klinetrio process.
_MIGRATION_LOCK_ID = 0x6B6C696E


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


@dataclass(frozen=True, slots=True)
class SchemaReport:
    applied: tuple[str, ...]
    hypertable: bool
    layout: LayoutReport | None = None


def migrations_dir() -> Traversable:
    """The numbered SQL files: inside the wheel (``klinetrio/db``) or the checkout's ``db/``."""
    packaged = resources.files("klinetrio") / "db"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "db"


def load_migrations() -> list[Migration]:
    found: list[Migration] = []
    for entry in migrations_dir().iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), entry.name, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if not found or len(set(versions)) != len(versions):
        raise DatabaseError(f"migrations missing or numbered twice in {migrations_dir()}")
    return found


def migrate(conn: psycopg.Connection[tuple[object, ...]], *, reapply: bool = False) -> SchemaReport:
    """Apply every migration not yet recorded; safe to run at every start, from several processes.

    ``reapply`` runs every migration again, recorded or not: the repair for a table someone
    dropped. Every migration is idempotent (``IF NOT EXISTS``), which a test checks.
    """
    with translate_errors("migrating"), conn.transaction():
        # Converting a big table to a hypertable takes long, and so may the wait for the lock.
        conn.execute("SET LOCAL statement_timeout = 0")
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK_ID,))
        conn.execute(
            """
            CREATE TABLE IF NOT EXISTS klinetrio_migrations (
                version    integer PRIMARY KEY,
                name       text        NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        done = {row[0] for row in conn.execute("SELECT version FROM klinetrio_migrations")}
        applied: list[str] = []
        for migration in load_migrations():
            if migration.version in done and not reapply:
                continue
            conn.execute(migration.sql.encode())
            if migration.version not in done:
                conn.execute(
                    "INSERT INTO klinetrio_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
                applied.append(migration.name)
    for name in applied:
        logger.info("applied migration {name}", name=name)
    return SchemaReport(tuple(applied), ensure_hypertable(conn))


def ensure_hypertable(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    """Make each table of ``schema.HYPERTABLES`` a TimescaleDB hypertable when the server offers
    TimescaleDB; True when they all are.

    Runs at every start rather than as a recorded migration, so a server that gains TimescaleDB
    later gets its hypertables on the next start. Without it the plain tables work the same.
    """
    with translate_errors("checking for TimescaleDB"):
        available = conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
        ).fetchone()
        conn.commit()
        if not available:
            logger.warning("TimescaleDB is not available: candles is a plain table")
            return False
        try:
            with conn.transaction():
                conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
                for table in HYPERTABLES:
                    if conn.execute("SELECT to_regclass(%s)", (table.name,)).fetchone() == (None,):
                        continue  # its migration comes with a later version
                    conn.execute(
                        "SELECT create_hypertable(%s, %s, if_not_exists => TRUE,"
                        " migrate_data => TRUE, chunk_time_interval => %s::interval)",
                        (table.name, table.time_column, table.chunk_interval),
                    )
        except psycopg.errors.FeatureNotSupported as exc:
            logger.warning(
                "TimescaleDB cannot be used ({why}): candles is a plain table", why=one_line(exc)
            )
            return False
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            logger.warning(
                "TimescaleDB cannot be used ({why}): candles is a plain table", why=one_line(exc)
            )
            return False
        logger.info("candles is a TimescaleDB hypertable")
        return True


__all__ = [
    "Migration",
    "SchemaReport",
    "ensure_hypertable",
    "load_migrations",
    "migrate",
    "migrations_dir",
]
