"""Opening a PostgreSQL connection that can never hang a stop, and what psycopg's errors mean.

Every connection klinetrio opens comes from ``connect`` (TCP keepalives, ``tcp_user_timeout``,
an optional ``statement_timeout``). psycopg errors are translated here by SQLSTATE (see
``sqlstate``): an outage of any kind becomes ``DatabaseUnavailable`` (the caller keeps its rows
and retries), a missing table ``SchemaMissing``, and only a refusal of the rows themselves
``RejectedAsData``. Blocking; nothing here knows of Trio.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg.conninfo import conninfo_to_dict

from klinetrio.errors import DatabaseError, DatabaseUnavailable, RejectedAsData, SchemaMissing
from klinetrio.settings import redact_url
from klinetrio.store.sqlstate import Refusal, classify


@contextmanager
def translate_errors(action: str) -> Iterator[None]:
    """Turn psycopg errors into klinetrio's, by what they mean for the rows (see ``sqlstate``)."""
    try:
        yield
    except psycopg.Error as exc:
        raise database_error(exc, action) from exc


def database_error(exc: psycopg.Error, action: str) -> DatabaseError:
    """The klinetrio error for a psycopg one: an outage unless the SQLSTATE blames the data."""
    state = exc.sqlstate
    text = one_line(exc)
    verdict = classify(state)
    if verdict is Refusal.BAD_DATA:
        assert state is not None
        return RejectedAsData(f"database rejected the data while {action}: {text}", state)
    if verdict is Refusal.MISSING_TABLE:
        return SchemaMissing(f"a table is missing while {action}: {text}", state)
    if state is None:
        return DatabaseUnavailable(f"database unavailable while {action}: {text}")
    name = type(exc).__name__
    return DatabaseUnavailable(f"database refused {action} ({state} {name}): {text}", state)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# A connection must never hang a stop: a frozen network path (no RST, no FIN) is found dead by
# TCP keepalives while we wait for an answer, and by tcp_user_timeout while our own data sits
# unacknowledged. Values given in the URL win.
CONNECTION_DEFAULTS = {
    "connect_timeout": "5",
    "application_name": "klinetrio",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "15000",
}


def connect(
    url: str, *, statement_timeout_s: float | None = None
) -> psycopg.Connection[tuple[object, ...]]:
    """Open a connection (see ``CONNECTION_DEFAULTS``): an unreachable server is
    ``DatabaseUnavailable``; a malformed URL, a refused login or a missing database is
    ``DatabaseError`` (retrying would not help).

    ``statement_timeout_s`` bounds every statement on the server's side, so a write stuck
    behind a lock or on a sick server fails (and is retried) instead of waiting forever.
    """
    try:
        params: dict[str, object] = dict(conninfo_to_dict(url))
    except psycopg.ProgrammingError as exc:
        raise DatabaseError(f"invalid database URL {redact_url(url)}: {one_line(exc)}") from exc
    for key, value in CONNECTION_DEFAULTS.items():
        params.setdefault(key, value)
    try:
        conn = psycopg.connect(**params)  # type: ignore[arg-type]
    except psycopg.OperationalError as exc:
        message = one_line(exc)
        if "password authentication failed" in message or "does not exist" in message:
            raise DatabaseError(f"cannot use database {redact_url(url)}: {message}") from exc
        raise DatabaseUnavailable(f"cannot connect to {redact_url(url)}: {message}") from exc
    except psycopg.Error as exc:
        raise DatabaseError(f"cannot connect to {redact_url(url)}: {one_line(exc)}") from exc
    if statement_timeout_s is not None:
        try:
            with translate_errors("setting the statement timeout"):
                conn.execute(f"SET statement_timeout = {round(statement_timeout_s * 1000)}")
                conn.commit()
        except BaseException:
            conn.close()
            raise
    return conn


__all__ = ["CONNECTION_DEFAULTS", "connect", "database_error", "one_line", "translate_errors"]
