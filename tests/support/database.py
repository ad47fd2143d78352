"""Doing things to a test database that an operator (or a fail-over) would do to a real one."""

from __future__ import annotations

from urllib.parse import urlsplit

import psycopg
from psycopg import sql


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def set_read_only(admin_url: str, database_url: str, read_only: bool) -> None:
    """What a fail-over looks like from a client: the server turns read-only (or writable
    again), and every open session is cut, so the next ones see the new state."""
    name = database_name(database_url)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = {}").format(
                sql.Identifier(name), sql.Literal("on" if read_only else "off")
            )
        )
        terminate_sessions(admin, name)


def terminate_sessions(admin: psycopg.Connection[tuple[object, ...]], name: str) -> None:
    admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = %s AND pid <> pg_backend_pid()",
        (name,),
    )
