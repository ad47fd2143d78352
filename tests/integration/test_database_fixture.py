"""``database_url`` gives every test a fresh, empty database of its own, also under Trio.

The tests record the databases they used; each checks that the ones before it (whichever ran
first) are gone, so they hold in any order and alone.
"""

from __future__ import annotations

import psycopg
import trio

_USER_TABLES = (
    "SELECT count(*) FROM information_schema.tables"
    " WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
)
_seen: list[str] = []


def _use(url: str) -> str:
    """Check that the database is empty, leave a table behind, return the database's name."""
    with psycopg.connect(url, autocommit=True) as conn:
        name = conn.execute("SELECT current_database()").fetchone()
        assert name is not None
        assert name[0] not in ("postgres", "template0", "template1", "klinetrio")
        assert conn.execute(_USER_TABLES).fetchone() == (0,)
        conn.execute("CREATE TABLE leftover (x int)")
        return str(name[0])


def _check_and_record(name: str, pg_server_url: str) -> None:
    assert name not in _seen  # a new database for every test
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        for old in _seen:  # and the earlier tests' ones are gone, leftovers and all
            row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (old,))
            assert row.fetchone() is None
    _seen.append(name)


def test_database_is_fresh_and_empty(database_url: str, pg_server_url: str) -> None:
    _check_and_record(_use(database_url), pg_server_url)


async def test_database_from_trio_worker_thread(database_url: str, pg_server_url: str) -> None:
    with trio.fail_after(30):
        name = await trio.to_thread.run_sync(_use, database_url)
    _check_and_record(name, pg_server_url)
