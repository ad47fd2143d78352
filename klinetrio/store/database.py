"""Blocking PostgreSQL access with psycopg 3: the candle write path and the gap queries.

psycopg's async API is asyncio-only, so klinetrio uses the sync API and calls it from Trio worker
threads: one ``Database`` owns one connection and is used by one thread at a time (its owner
wraps calls in ``trio.to_thread.run_sync`` with a ``CapacityLimiter(1)``). Nothing here knows of
Trio.

The write path is ``COPY`` into a per-connection temporary staging table, then one
``INSERT ... SELECT``: COPY is the fastest way in, and every write is idempotent, so replays,
reconnect overlaps and REST refills of candles that the stream already delivered change nothing.
Nearly every live batch is all new, and a plain INSERT costs less than ``ON CONFLICT DO
NOTHING``'s speculative insertion, so the plain one runs first under a savepoint (and, since
it succeeds only if every row went in, without RETURNING); only a batch that meets a stored row
(a rotation's overlap, a restart, a refill) is inserted again with the conflict clause, from the
same staged rows (as the bulk path does: ``store.bulk``). ``bench/live_write.py`` measures both.

psycopg errors are translated at this boundary (see ``connect``): an outage of any kind becomes
``DatabaseUnavailable`` (the caller keeps its rows and retries), a missing table
``SchemaMissing``, and only a refusal of the rows themselves ``RejectedAsData``. Migrations are
``migrations``' (``Database.migrate`` runs them on this connection).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from operator import attrgetter
from typing import Concatenate, ParamSpec, TypeVar

import psycopg
from loguru import logger

from klinetrio.core.models import Candle, StreamKey, datetime_to_ms, ms_to_datetime
from klinetrio.errors import DatabaseUnavailable, RejectedAsData, SchemaMissing
from klinetrio.store.connect import connect, translate_errors
from klinetrio.store.migrations import SchemaReport, migrate
from klinetrio.store.policies import StoreOptions, apply_options

COLUMNS = (
    "market",
    "symbol",
    "interval",
    "time",
    "close_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "trades",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "source",
)
_COLUMN_LIST = ", ".join(COLUMNS)
_P = ParamSpec("_P")
_R = TypeVar("_R")
# How many written rows a write reports one by one (the writer names them in its log line).
WRITTEN_DETAIL = 3
# Server-side bounds of one statement: a write of a batch takes milliseconds, a gap query over
# years of 1m candles a few seconds. Past these the statement fails and is retried.
WRITE_TIMEOUT_S = 60.0
READ_TIMEOUT_S = 300.0


# Times travel as integers and become timestamps in PostgreSQL: exact (milliseconds and
# microseconds since the epoch stay below 2**53, so the interval arithmetic is exact) and far
# cheaper than building a datetime per value in Python.
_CREATE_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS candles_staging (
    market text, symbol text, interval text, time_ms bigint, close_us bigint,
    open numeric, high numeric, low numeric, close numeric, volume numeric, quote_volume numeric,
    trades bigint, taker_buy_volume numeric, taker_buy_quote_volume numeric, source text
) ON COMMIT DELETE ROWS
"""
_COPY_STAGING = "COPY candles_staging FROM STDIN"
# Every staged row, or UniqueViolation if one is stored already: for a batch that is all new
# (what it wrote is then known without RETURNING, see ``_all_new``, which spares a sort).
_INSERT_NEW_FROM_STAGING = f"""
    INSERT INTO candles ({_COLUMN_LIST})
    SELECT market, symbol, interval,
           timestamptz 'epoch' + time_ms * interval '1 millisecond',
           timestamptz 'epoch' + close_us * interval '1 microsecond',
           open, high, low, close, volume, quote_volume, trades,
           taker_buy_volume, taker_buy_quote_volume, source
      FROM candles_staging
"""
# The staged rows not stored yet, and what they were.
_INSERT_FROM_STAGING = f"""
WITH new AS (
{_INSERT_NEW_FROM_STAGING}
    ON CONFLICT DO NOTHING
    RETURNING market, symbol, interval, time
)
SELECT count(*), count(DISTINCT (market, symbol, interval)),
       (extract(epoch FROM max(time)) * 1000)::bigint,
       (array_agg(CASE WHEN market = 'spot' THEN '' ELSE market || ':' END
                  || symbol || ' ' || interval || ' ' || (extract(epoch FROM time) * 1000)::bigint
                  ORDER BY time))[1:{WRITTEN_DETAIL}]
  FROM new
"""
# Characters that would break COPY's text format; Binance's decimal strings never hold them.
_COPY_SPECIAL = str.maketrans("", "", "\\\t\n\r")


@dataclass(frozen=True, slots=True)
class Rejected:
    """A candle the database refused as data, and why (for the dead-letter file)."""

    candle: Candle
    sqlstate: str
    reason: str


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What a write added: how many rows, of how many series, the newest open time, the first
    few rows (symbol, interval, open ms; the symbol as ``usdm:BTCUSDT`` off spot) for log lines a
    person can follow, and the candles the database rejected as data."""

    count: int = 0
    streams: int = 0
    newest: int | None = None
    first: tuple[tuple[str, str, int], ...] = ()
    rejected: tuple[Rejected, ...] = ()

    def merge(self, other: WriteResult) -> WriteResult:
        newest = max((t for t in (self.newest, other.newest) if t is not None), default=None)
        first = (self.first + other.first)[:WRITTEN_DETAIL]
        keys = {(s, i) for s, i, _ in first}
        return WriteResult(
            self.count + other.count,
            max(len(keys), self.streams, other.streams),
            newest,
            first,
            self.rejected + other.rejected,
        )


def copy_text(candles: Sequence[Candle]) -> bytes:
    """The rows in COPY's text format, built in one pass."""
    lines = [
        f"{c.market}\t{c.symbol}\t{c.interval}\t{c.open_time}\t{c.close_time_us}\t{c.open}\t{c.high}"
        f"\t{c.low}\t{c.close}\t{c.volume}\t{c.quote_volume}\t{c.trades}\t{c.taker_buy_volume}"
        f"\t{c.taker_buy_quote_volume}\t{c.source}"
        for c in candles
    ]
    text = "\n".join(lines) + "\n"
    if (
        text.count("\t") != 14 * len(lines)
        or text.count("\n") != len(lines)
        or "\\" in text
        or "\r" in text
    ):
        # Only a malformed string could do this; strip the specials so the row fails as bad data
        # (and is dropped alone) instead of shifting columns.
        text = "".join(line + "\n" for line in _fields_lines(candles))
    return text.encode()


def _fields_lines(candles: Sequence[Candle]) -> list[str]:
    return [
        "\t".join(
            str(v).translate(_COPY_SPECIAL)
            for v in (
                c.market,
                c.symbol,
                c.interval,
                c.open_time,
                c.close_time_us,
                c.open,
                c.high,
                c.low,
                c.close,
                c.volume,
                c.quote_volume,
                c.trades,
                c.taker_buy_volume,
                c.taker_buy_quote_volume,
                c.source,
            )
        )
        for c in candles
    ]


def _all_new(candles: Sequence[Candle]) -> WriteResult:
    """What a batch wrote when every one of its candles was new (the summary the conflict
    form's RETURNING gives, computed here instead)."""
    first = heapq.nsmallest(WRITTEN_DETAIL, candles, key=attrgetter("open_time"))
    return WriteResult(
        len(candles),
        len({(c.market, c.symbol, c.interval) for c in candles}),
        max(c.open_time for c in candles),
        tuple(
            (c.symbol if c.market == "spot" else f"{c.market}:{c.symbol}", c.interval, c.open_time)
            for c in first
        ),
    )


def _parse_written(text: str) -> tuple[str, str, int]:
    symbol, interval, open_ms = text.split(" ")
    return symbol, interval, int(open_ms)


class Database:
    """One PostgreSQL connection and the queries klinetrio runs on it. Not thread-safe.

    The connection is opened lazily and dropped on any outage, so the next call reconnects
    (after a fail-over, possibly to the new primary): the owner only has to retry
    ``DatabaseUnavailable`` with backoff. ``statement_timeout_s`` bounds each statement on the
    server's side (see ``connect``).
    """

    def __init__(self, url: str, *, statement_timeout_s: float | None = None) -> None:
        self.url = url
        self.statement_timeout_s = statement_timeout_s
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._staging = False

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.closed

    def connection(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._discard()
            self._conn = connect(self.url, statement_timeout_s=self.statement_timeout_s)
            self._staging = False
        return self._conn

    def _discard(self) -> None:
        if self._conn is not None:
            with suppress(psycopg.Error):
                self._conn.close()
            self._conn = None

    def close(self) -> None:
        self._discard()

    def reopened(self) -> Database:
        """A new ``Database`` for the same server and settings, with a connection of its own
        (this one's may be stuck in a thread that was abandoned)."""
        return Database(self.url, statement_timeout_s=self.statement_timeout_s)

    @contextmanager
    def _session(self, action: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
        conn = self.connection()
        try:
            with translate_errors(action):
                yield conn
        except DatabaseUnavailable:
            self._discard()
            raise
        except BaseException:
            if not conn.closed:
                try:
                    conn.rollback()
                except psycopg.Error:
                    self._discard()
            raise

    def call(
        self,
        action: str,
        query: Callable[Concatenate[psycopg.Connection[tuple[object, ...]], _P], _R],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _R:
        """Run ``query(conn, ...)`` on this connection, its errors translated like every
        query's (``action`` names it in them): the way other store modules share a lane."""
        with self._session(action) as conn:
            return query(conn, *args, **kwargs)

    def migrate(
        self, options: StoreOptions | None = None, *, reapply: bool = False
    ) -> SchemaReport:
        """Migrate; with ``options`` (serve's settings) also make the compression and retention
        policies and the derived views match them (without, they are left as they are).
        ``reapply`` re-runs every migration (the repair for a dropped table)."""
        with self._session("migrating") as conn:
            report = migrate(conn, reapply=reapply)
        if options is None:
            return report
        # A new session: a failed CREATE EXTENSION (not preloaded) may have ended the last one.
        with self._session("applying compression, retention and derived intervals") as conn:
            return replace(report, layout=apply_options(conn, options))

    def ping(self) -> None:
        with self._session("checking the connection") as conn:
            conn.execute("SELECT 1")
            conn.rollback()

    def write(self, candles: Sequence[Candle]) -> WriteResult:
        """Insert candles idempotently; report what was new and what was rejected as data.

        Only a refusal of the rows themselves (SQLSTATE class 22 or 23) sets rows aside: the
        batch is halved until the bad rows stand alone, and they come back in ``rejected``.
        A missing table is re-created by re-running the migrations, then the write repeats.
        Every other refusal is an outage (``DatabaseUnavailable``) and writes nothing: the
        caller keeps the candles and retries.
        """
        if not candles:
            return WriteResult()
        try:
            return self._write_or_split(candles)
        except SchemaMissing as exc:
            logger.warning(
                "{why}: re-running the migrations to re-create it, then writing again", why=exc
            )
            self.migrate(reapply=True)
            return self._write_or_split(candles)

    def _write_or_split(self, candles: Sequence[Candle]) -> WriteResult:
        try:
            with self._session("writing candles") as conn:
                return self._write_batch(conn, candles)
        except RejectedAsData as exc:
            if len(candles) == 1:
                return WriteResult(rejected=(Rejected(candles[0], exc.sqlstate, str(exc)),))
        half = len(candles) // 2
        return self._write_or_split(candles[:half]).merge(self._write_or_split(candles[half:]))

    def _write_batch(
        self, conn: psycopg.Connection[tuple[object, ...]], candles: Sequence[Candle]
    ) -> WriteResult:
        if not self._staging:
            # A temporary table lives as long as the connection; it is created on first use
            # because the migrations that create ``candles`` run on this same connection.
            conn.execute(_CREATE_STAGING)
            conn.commit()  # outside the batch's transaction: a failed batch must not undo it
            self._staging = True
        with conn.cursor() as cur:
            with cur.copy(_COPY_STAGING) as copy:
                copy.write(copy_text(candles))
            try:
                with conn.transaction():  # a savepoint: the staged rows stay
                    cur.execute(_INSERT_NEW_FROM_STAGING)
            except psycopg.errors.UniqueViolation:
                cur.execute(_INSERT_FROM_STAGING)
                row = cur.fetchone()
            else:
                row = None
        conn.commit()
        if row is None:
            return _all_new(candles)
        count, streams, newest, first = row
        return WriteResult(
            int(count),  # type: ignore[call-overload]
            int(streams),  # type: ignore[call-overload]
            None if newest is None else int(newest),  # type: ignore[call-overload]
            tuple(_parse_written(w) for w in first or ()),  # type: ignore[attr-defined]
        )

    def bounds(self, key: StreamKey) -> tuple[int, int] | None:
        """Open times of the oldest and newest stored candle of ``key`` (None when it has none)."""
        with self._session("reading the stored range") as conn:
            row = conn.execute(
                "SELECT min(time), max(time) FROM candles WHERE market = %s AND symbol = %s AND interval = %s",
                (key.market, key.symbol, key.interval),
            ).fetchone()
            conn.rollback()
        if row is None or row[0] is None:
            return None
        return datetime_to_ms(row[0]), datetime_to_ms(row[1])  # type: ignore[arg-type]

    def bounds_of(self, keys: Sequence[StreamKey]) -> dict[StreamKey, tuple[int, int] | None]:
        """``bounds`` of many series in one query (each an index lookup at both ends): what
        start-up sync of thousands of series needs, without a round trip per series."""
        if not keys:
            return {}
        with self._session("reading the stored ranges") as conn:
            rows = conn.execute(
                """
                SELECT k.ord, b.lo, b.hi
                  FROM unnest(%s::text[], %s::text[], %s::text[]) WITH ORDINALITY
                       AS k(market, symbol, interval, ord)
                 CROSS JOIN LATERAL (
                       SELECT min(c.time) AS lo, max(c.time) AS hi FROM candles c
                        WHERE c.market = k.market AND c.symbol = k.symbol
                          AND c.interval = k.interval) b
                """,
                (
                    [k.market for k in keys],
                    [k.symbol for k in keys],
                    [k.interval for k in keys],
                ),
            ).fetchall()
            conn.rollback()
        found: dict[StreamKey, tuple[int, int] | None] = {}
        for ordinal, lo, hi in rows:
            key = keys[int(ordinal) - 1]  # type: ignore[call-overload]
            found[key] = (
                None if lo is None else (datetime_to_ms(lo), datetime_to_ms(hi))  # type: ignore[arg-type]
            )
        return found

    def stored_runs(
        self, key: StreamKey, start_ms: int, end_ms: int, step_ms: int | None
    ) -> list[tuple[int, int]]:
        """Runs of consecutive stored candles in ``[start_ms, end_ms)`` as (first, last) open times.

        For fixed intervals PostgreSQL finds the runs itself (gaps and islands: within a run,
        ``time - row_number * step`` is constant), so a year of 1m candles costs a few rows, not
        half a million. Calendar months come back one by one; there are few of them.
        """
        params = (
            key.market,
            key.symbol,
            key.interval,
            ms_to_datetime(start_ms),
            ms_to_datetime(end_ms),
        )
        where = "market = %s AND symbol = %s AND interval = %s AND time >= %s AND time < %s"
        with self._session("finding stored runs") as conn:
            if step_ms is None:
                rows = conn.execute(
                    f"SELECT time, time FROM candles WHERE {where} ORDER BY time", params
                ).fetchall()
            else:
                rows = conn.execute(
                    f"""
                    SELECT min(time), max(time) FROM (
                        SELECT time, time - (row_number() OVER (ORDER BY time))
                                            * (%s * interval '1 millisecond') AS island
                          FROM candles WHERE {where}
                    ) runs GROUP BY island ORDER BY 1
                    """,
                    (step_ms, *params),
                ).fetchall()
            conn.rollback()
        return [(datetime_to_ms(a), datetime_to_ms(b)) for a, b in rows]  # type: ignore[arg-type]

    def holes(self, key: StreamKey, start_ms: int, end_ms: int) -> list[tuple[int, int]]:
        """Ranges confirmed empty by the exchange that overlap ``[start_ms, end_ms)``."""
        with self._session("reading known holes") as conn:
            rows = conn.execute(
                "SELECT start_time, end_time FROM candle_holes WHERE market = %s AND symbol = %s"
                " AND interval = %s AND end_time > %s AND start_time < %s ORDER BY start_time",
                (
                    key.market,
                    key.symbol,
                    key.interval,
                    ms_to_datetime(start_ms),
                    ms_to_datetime(end_ms),
                ),
            ).fetchall()
            conn.rollback()
        return [(datetime_to_ms(s), datetime_to_ms(e)) for s, e in rows]  # type: ignore[arg-type]

    def add_hole(self, key: StreamKey, start_ms: int, end_ms: int) -> None:
        """Remember that the exchange has no candles in ``[start_ms, end_ms)``."""
        with self._session("recording a hole") as conn:
            conn.execute(
                "INSERT INTO candle_holes (market, symbol, interval, start_time, end_time)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (market, symbol, interval, start_time)"
                " DO UPDATE SET end_time = GREATEST(candle_holes.end_time, EXCLUDED.end_time),"
                " checked_at = now()",
                (
                    key.market,
                    key.symbol,
                    key.interval,
                    ms_to_datetime(start_ms),
                    ms_to_datetime(end_ms),
                ),
            )
            conn.commit()

    def count(self, key: StreamKey | None = None) -> int:
        with self._session("counting candles") as conn:
            if key is None:
                row = conn.execute("SELECT count(*) FROM candles").fetchone()
            else:
                row = conn.execute(
                    "SELECT count(*) FROM candles WHERE market = %s AND symbol = %s AND interval = %s",
                    (key.market, key.symbol, key.interval),
                ).fetchone()
            conn.rollback()
        return int(row[0]) if row else 0  # type: ignore[call-overload]


__all__ = ["COLUMNS", "Database", "Rejected", "WriteResult", "copy_text"]
