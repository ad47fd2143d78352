"""Fixtures shared by the whole suite.

PostgreSQL, in two layers:

- ``pg_server_url`` (session): a server on which tests may ``CREATE DATABASE``. It is
  ``KLINETRIO_TEST_DATABASE_URL`` when that is set (e.g.
  ``postgresql://postgres@127.0.0.1:5432/postgres``), otherwise an embedded PostgreSQL that the
  suite starts in a temporary directory and stops at the end, so that a machine with no
  PostgreSQL at all (CI, a fresh laptop) still runs every test. The embedded one runs with
  ``fsync`` off: it is thrown away, and creating a database per test must be quick.
- ``database_url`` (function): a fresh, empty database on that server, for one test only, dropped
  afterwards. Tests never share tables, so they need no cleanup and may run in any order.

Data: ``shared_data`` is ``../shared/data`` next to the project, or a skip where it is absent.

All fixtures are sync; pytest-trio (``trio_mode``) hands them to async tests as usual. They block
only during set-up and tear-down, never while a test's Trio loop runs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from loguru import logger
from psycopg import sql

from klinetrio.store.embedded import EmbeddedPostgres

TEST_DATABASE_URL = "KLINETRIO_TEST_DATABASE_URL"


def with_database(url: str, database: str) -> str:
    """``url`` pointing at ``database`` instead (user, host, port and options unchanged)."""
    return urlunsplit(urlsplit(url)._replace(path="/" + database))


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """A URL of a PostgreSQL server where tests may create databases (see the module doc)."""
    if url := os.environ.get(TEST_DATABASE_URL):
        yield url
        return
    # Not under tmp_path_factory: every pytest run resets /tmp/pytest-of-<user> to mode 0700,
    # which would lock the server's unprivileged account (when we are root) out of its data.
    data_dir = Path(tempfile.mkdtemp(prefix="klinetrio-test-postgres-"))
    with EmbeddedPostgres(data_dir) as pg:
        url = with_database(pg.url, "postgres")
        with psycopg.connect(url, autocommit=True) as conn:
            for setting in ("fsync", "synchronous_commit", "full_page_writes"):
                conn.execute(sql.SQL("ALTER SYSTEM SET {} = off").format(sql.Identifier(setting)))
            conn.execute("SELECT pg_reload_conf()")
        yield url
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def database_url(pg_server_url: str) -> Iterator[str]:
    """A URL of a new, empty database that exists for this test only."""
    name = f"klinetrio_test_{uuid.uuid4().hex[:16]}"
    try:
        admin = psycopg.connect(pg_server_url, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        pytest.fail(f"cannot reach the test PostgreSQL ({TEST_DATABASE_URL}?): {exc}")
    with admin:
        # template0: template1 may hold someone's objects, and copying it needs it unused.
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    try:
        yield with_database(pg_server_url, name)
    finally:
        with psycopg.connect(pg_server_url, autocommit=True, connect_timeout=10) as admin:
            # A test that leaked a connection (or a cancelled worker thread) must not make
            # DROP DATABASE fail or hang.
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            force = sql.SQL(" WITH (FORCE)") if admin.info.server_version >= 130000 else sql.SQL("")
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {}{}").format(sql.Identifier(name), force)
            )


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` next to the project (recorded exchange data), or skip the test."""
    path = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip("needs ../shared/data")
    return path


@dataclass
class LogRecord:
    level: str
    message: str


@pytest.fixture
def logs() -> Iterator[list[LogRecord]]:
    """klinetrio's log records (DEBUG and up) while the test runs, as (level, message)."""
    records: list[LogRecord] = []
    logger.enable("klinetrio")
    sink = logger.add(
        lambda m: records.append(LogRecord(m.record["level"].name, str(m.record["message"]))),
        level="DEBUG",
    )
    try:
        yield records
    finally:
        logger.remove(sink)
        logger.disable("klinetrio")


def _redis_answers(host: str, port: int) -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis server on 127.0.0.1:6379 (``KLINETRIO_TEST_REDIS_URL`` to use another), or a
    skip where none answers."""
    url = os.environ.get("KLINETRIO_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    parts = urlsplit(url)
    if not _redis_answers(parts.hostname or "127.0.0.1", parts.port or 6379):
        pytest.skip(f"needs a Redis server at {url}")
    return url
