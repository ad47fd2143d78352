"""The API's read-only handle on the store: a few connections, each in its own worker thread.

``await reader.call(action, fn, *args)`` runs ``fn(conn, *args)`` (a query of ``reads``) on the
first idle connection, or waits in turn on one of them: a slow coverage report on one lane does
not hold up klines pages on the others. Every session is read-only
(``default_transaction_read_only``), so no API request can change the store, and every
statement is bounded by the read timeout. A connection lost to an outage is reopened by the
next call (``Database`` does that); the request that saw the outage gets
``DatabaseUnavailable``, which the API answers with 503.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

import psycopg
import trio
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from klinetrio.store.database import Database
from klinetrio.threads import Offload, thread_offload

_P = ParamSpec("_P")
_R = TypeVar("_R")
LANES = 2
READ_TIMEOUT_S = 60.0
_READ_ONLY = "-c default_transaction_read_only=on"


def read_only_url(url: str) -> str:
    """``url`` with sessions that refuse writes (unless the URL sets ``options`` itself)."""
    try:
        if "options" in conninfo_to_dict(url):
            return url
    except psycopg.ProgrammingError:
        return url  # connect() reports it with the reason
    return make_conninfo(url, options=_READ_ONLY)


class StoreReader:
    """``lanes`` read-only connections to the store at ``url`` (see the module doc)."""

    def __init__(
        self,
        url: str,
        *,
        lanes: int = LANES,
        statement_timeout_s: float = READ_TIMEOUT_S,
        offload: Offload | None = None,
    ) -> None:
        self.url = read_only_url(url)
        self._lanes: list[tuple[Database, Offload, trio.CapacityLimiter]] = []
        for _ in range(max(1, lanes)):
            limiter = trio.CapacityLimiter(1)
            database = Database(self.url, statement_timeout_s=statement_timeout_s)
            self._lanes.append((database, offload or thread_offload(limiter), limiter))
        self._turn = itertools.cycle(range(len(self._lanes)))

    def _lane(self) -> tuple[Database, Offload]:
        for database, offload, limiter in self._lanes:
            if limiter.borrowed_tokens == 0:
                return database, offload
        database, offload, _ = self._lanes[next(self._turn)]
        return database, offload

    async def call(
        self,
        action: str,
        query: Callable[Concatenate[psycopg.Connection[tuple[Any, ...]], _P], _R],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _R:
        database, offload = self._lane()
        result: _R = await offload(lambda: database.call(action, query, *args, **kwargs))
        return result

    async def aclose(self) -> None:
        """Close every connection, each through the thread lane that owns it."""
        for database, offload, _ in self._lanes:
            await offload(database.close)


__all__ = ["LANES", "StoreReader", "read_only_url"]
