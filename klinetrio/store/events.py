"""The tables of the stream kinds beside candles (trades, book_tickers, tickers, depth_snapshots):
how a batch of rows gets in, and the queries the trade syncer asks of ``trades``.

The write path is the candles' one (see ``store.database``): ``COPY`` into a per-connection
temporary staging table, then a plain ``INSERT ... SELECT`` under a savepoint, and only when it
meets a stored row ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` from the same staged rows, so
a row written twice (a REST page overlapping the stream, a retried batch) is stored once and a
batch that is all new (nearly every live one) skips the speculative insertion. Times travel
as integer milliseconds and become timestamps in PostgreSQL. Every function here is blocking:
call it through ``Database.call`` in the writer's (or syncer's) worker thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg

from klinetrio.binance.wire_kinds import Row
from klinetrio.errors import RejectedAsData, SchemaMissing
from klinetrio.store.database import Database

Connection = psycopg.Connection[tuple[object, ...]]


@dataclass(frozen=True, slots=True)
class EventTable:
    """One table: its name and its columns after ``market, symbol, time`` with their types
    (``time`` travels as ``time_ms bigint``)."""

    name: str
    columns: tuple[tuple[str, str], ...]

    @property
    def staging(self) -> str:
        return f"{self.name}_staging"

    @property
    def create_staging(self) -> str:
        rest = ", ".join(f"{c} {t}" for c, t in self.columns)
        return (
            f"CREATE TEMP TABLE IF NOT EXISTS {self.staging} "
            f"(market text, symbol text, time_ms bigint, {rest}) ON COMMIT DELETE ROWS"
        )

    @property
    def copy(self) -> str:
        return f"COPY {self.staging} FROM STDIN"

    @property
    def insert_new(self) -> str:
        """Every staged row, or an error (UniqueViolation) if one is stored already."""
        names = ", ".join(c for c, _ in self.columns)
        return (
            f"INSERT INTO {self.name} (market, symbol, time, {names}) "
            f"SELECT market, symbol, timestamptz 'epoch' + time_ms * interval '1 millisecond', "
            f"{names} FROM {self.staging}"
        )

    @property
    def insert(self) -> str:
        """The staged rows not stored yet, and how many they were."""
        return (
            f"WITH new AS ({self.insert_new} ON CONFLICT DO NOTHING RETURNING 1) "
            "SELECT count(*) FROM new"
        )

    @property
    def width(self) -> int:
        return 3 + len(self.columns)


TRADES = EventTable(
    "trades",
    (
        ("agg_id", "bigint"),
        ("price", "numeric"),
        ("quantity", "numeric"),
        ("first_trade_id", "bigint"),
        ("last_trade_id", "bigint"),
        ("buyer_is_maker", "boolean"),
        ("source", "text"),
    ),
)
BOOK_TICKERS = EventTable(
    "book_tickers",
    (
        ("update_id", "bigint"),
        ("bid_price", "numeric"),
        ("bid_qty", "numeric"),
        ("ask_price", "numeric"),
        ("ask_qty", "numeric"),
    ),
)
TICKERS = EventTable(
    "tickers",
    (
        ("open", "numeric"),
        ("high", "numeric"),
        ("low", "numeric"),
        ("last", "numeric"),
        ("volume", "numeric"),
        ("quote_volume", "numeric"),
        ("price_change_percent", "numeric"),
        ("weighted_avg_price", "numeric"),
        ("trades", "bigint"),
    ),
)
DEPTH_SNAPSHOTS = EventTable(
    "depth_snapshots",
    (("last_update_id", "bigint"), ("bids", "jsonb"), ("asks", "jsonb")),
)
EVENT_TABLES = {t.name: t for t in (TRADES, BOOK_TICKERS, TICKERS, DEPTH_SNAPSHOTS)}

# Characters that would break COPY's text format; Binance's strings never hold them.
_COPY_SPECIAL = str.maketrans("", "", "\\\t\n\r")


def copy_text(rows: Sequence[Row], width: int) -> bytes:
    """The rows in COPY's text format (booleans as ``True``/``False``, which PostgreSQL reads)."""
    text = "".join("\t".join(map(str, row)) + "\n" for row in rows)
    if text.count("\t") != (width - 1) * len(rows) or "\\" in text or "\r" in text:
        # Only a malformed string could do this: strip the specials so the row fails alone.
        text = "".join(
            "\t".join(str(v).translate(_COPY_SPECIAL) for v in row) + "\n" for row in rows
        )
    return text.encode()


class EventStore:
    """Writes one event table on one ``Database`` (one connection, one thread)."""

    def __init__(self, database: Database, table: EventTable) -> None:
        self.database = database
        self.table = table
        self._staged_on: object = None

    def write(self, rows: Sequence[Row]) -> tuple[int, list[Row]]:
        """Insert ``rows`` idempotently: how many were new, and the rows rejected as data
        (SQLSTATE class 22/23; the batch is halved until they stand alone). A missing table
        re-runs the migrations once. Outages raise ``DatabaseUnavailable``."""
        if not rows:
            return 0, []
        try:
            return self._write_or_split(rows)
        except SchemaMissing:
            self.database.migrate(reapply=True)
            return self._write_or_split(rows)

    def _write_or_split(self, rows: Sequence[Row]) -> tuple[int, list[Row]]:
        try:
            return self.database.call(f"writing {self.table.name}", self._batch, rows), []
        except RejectedAsData:
            if len(rows) == 1:
                return 0, [rows[0]]
        half = len(rows) // 2
        a, bad_a = self._write_or_split(rows[:half])
        b, bad_b = self._write_or_split(rows[half:])
        return a + b, bad_a + bad_b

    def _batch(self, conn: Connection, rows: Sequence[Row]) -> int:
        table = self.table
        if self._staged_on is not conn:
            # A temporary table lives as long as its connection (a reconnect needs a new one).
            conn.execute(table.create_staging)
            conn.commit()
            self._staged_on = conn
        with conn.cursor() as cur:
            with cur.copy(table.copy) as copy:
                copy.write(copy_text(rows, table.width))
            try:
                with conn.transaction():  # a savepoint: the staged rows stay
                    cur.execute(table.insert_new)
                count = cur.rowcount
            except psycopg.errors.UniqueViolation:
                cur.execute(table.insert)
                row = cur.fetchone()
                assert row is not None
                value = row[0]
                assert isinstance(value, int)
                count = value
        conn.commit()
        return count


# --- what the trade syncer asks of ``trades`` ----------------------------------------------


def last_agg_ids(conn: Connection, market: str, symbols: Sequence[str]) -> dict[str, int]:
    """The newest stored agg id of each symbol that has any."""
    rows = conn.execute(
        "SELECT symbol, max(agg_id) FROM trades WHERE market = %s AND symbol = ANY(%s)"
        " GROUP BY symbol",
        (market, list(symbols)),
    ).fetchall()
    conn.rollback()
    return {str(s): int(m) for s, m in rows}  # type: ignore[call-overload]


def missing_agg_ids(
    conn: Connection, market: str, symbol: str, since_ms: int
) -> list[tuple[int, int]]:
    """The ranges ``[first, last]`` of agg ids missing between stored trades since ``since_ms``
    (the database is the source of truth for what is missing)."""
    rows = conn.execute(
        """
        SELECT agg_id + 1, next_id - 1 FROM (
            SELECT agg_id, lead(agg_id) OVER (ORDER BY agg_id) AS next_id
              FROM trades
             WHERE market = %s AND symbol = %s
               AND time >= timestamptz 'epoch' + %s * interval '1 millisecond'
        ) AS t
         WHERE next_id > agg_id + 1
         ORDER BY agg_id
        """,
        (market, symbol, since_ms),
    ).fetchall()
    conn.rollback()
    return [(int(a), int(b)) for a, b in rows]  # type: ignore[call-overload]


__all__ = [
    "BOOK_TICKERS",
    "DEPTH_SNAPSHOTS",
    "EVENT_TABLES",
    "TICKERS",
    "TRADES",
    "EventStore",
    "EventTable",
    "copy_text",
    "last_agg_ids",
    "missing_agg_ids",
]
