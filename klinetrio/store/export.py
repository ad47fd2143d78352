"""``klinetrio export``: one series' candles to CSV or Parquet, streamed.

Rows come through a server-side cursor a batch at a time, so memory holds one batch, never the
table. Any interval can be exported, collected or derived (``derived.select_candles``).

- CSV has data.binance.vision's 12 columns in its order, with the header row of its futures
  files (``open_time,open,...,ignore``), times in milliseconds, numbers exactly as stored.
- Parquet (``pip install 'klinetrio[parquet]'``, which brings pyarrow) has the table's columns:
  text for market, symbol, interval and source, UTC timestamps for ``time`` (ms) and
  ``close_time`` (µs, which the 2025+ spot archives carry), exact decimals for prices and
  volumes (each column's scale and precision measured first, so no digit is lost or invented),
  and int64 trades.

The file is written beside its name and renamed when complete: a failed export leaves nothing.
Blocking: run from the CLI or a worker thread.
"""

from __future__ import annotations

import contextlib
import csv
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg import sql

from klinetrio.core.models import StreamKey
from klinetrio.errors import BackupError
from klinetrio.store.connect import connect, translate_errors
from klinetrio.store.derived import select_candles

BATCH = 50_000
CSV_HEADER = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "count",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "ignore",
)
# Positions in a row of select_candles.
_DECIMALS = {
    "open": 5,
    "high": 6,
    "low": 7,
    "close": 8,
    "volume": 9,
    "quote_volume": 10,
    "taker_buy_volume": 12,
    "taker_buy_quote_volume": 13,
}
FORMATS = ("csv", "parquet")
Conn = psycopg.Connection[tuple[object, ...]]


def _batches(
    conn: Conn, key: StreamKey, start_ms: int | None, end_ms: int | None
) -> Iterator[Sequence[tuple[Any, ...]]]:
    query, params = select_candles(conn, key, start_ms, end_ms)
    with conn.cursor(name="klinetrio_export") as cursor:
        cursor.itersize = BATCH
        cursor.execute(query, params)
        while rows := cursor.fetchmany(BATCH):
            yield rows


def _write_csv(batches: Iterator[Sequence[tuple[Any, ...]]], out: IO[str]) -> int:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    count = 0
    for rows in batches:
        writer.writerows(
            (r[3], r[5], r[6], r[7], r[8], r[9], r[4] // 1000, r[10], r[11], r[12], r[13], 0)
            for r in rows
        )
        count += len(rows)
    return count


def _decimal_shapes(
    conn: Conn, key: StreamKey, start_ms: int | None, end_ms: int | None
) -> dict[str, tuple[int, int]]:
    """(integer digits, scale) of each decimal column over the rows to export."""
    query, params = select_candles(conn, key, start_ms, end_ms)
    names = [f"c{i}" for i in range(15)]
    measures = sql.SQL(", ").join(
        sql.SQL(
            "max(scale({c}::numeric)), max(length(split_part(ltrim({c}, '-'), '.', 1)))"
        ).format(c=sql.Identifier(names[pos]))
        for pos in _DECIMALS.values()
    )
    aliases = sql.SQL(", ").join(sql.Identifier(n) for n in names)
    row = conn.execute(
        sql.SQL("SELECT {} FROM ({}) AS q({})").format(measures, query, aliases), params
    ).fetchone()
    assert row is not None
    shapes = {}
    for i, column in enumerate(_DECIMALS):
        scale, digits = row[2 * i], row[2 * i + 1]
        shapes[column] = (int(digits or 1), int(scale or 0))  # type: ignore[call-overload]
    return shapes


def _write_parquet(
    batches: Iterator[Sequence[tuple[Any, ...]]], path: Path, shapes: dict[str, tuple[int, int]]
) -> int:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise BackupError(
            "Parquet export needs pyarrow: pip install 'klinetrio[parquet]' (or export --format csv)"
        ) from None

    def decimal(column: str) -> Any:
        digits, scale = shapes[column]
        precision = max(digits + scale, 1)
        if precision <= 38:
            return pa.decimal128(precision, scale)
        return pa.decimal256(min(precision, 76), scale)

    text = pa.string()
    fields = [
        ("market", text),
        ("symbol", text),
        ("interval", text),
        ("time", pa.timestamp("ms", tz="UTC")),
        ("close_time", pa.timestamp("us", tz="UTC")),
        *((c, decimal(c)) for c in ("open", "high", "low", "close", "volume", "quote_volume")),
        ("trades", pa.int64()),
        ("taker_buy_volume", decimal("taker_buy_volume")),
        ("taker_buy_quote_volume", decimal("taker_buy_quote_volume")),
        ("source", text),
    ]
    schema = pa.schema(fields)
    count = 0
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for rows in batches:
            columns = list(zip(*rows, strict=True))
            arrays = []
            for (name, kind), values in zip(fields, columns, strict=True):
                if name in ("time", "close_time"):
                    arrays.append(pa.array(values, pa.int64()).cast(kind))
                elif pa.types.is_decimal(kind):
                    arrays.append(pa.array(values, text).cast(kind))
                else:
                    arrays.append(pa.array(values, kind))
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
            count += len(rows)
    return count


def export(
    url: str,
    key: StreamKey,
    start_ms: int | None,
    end_ms: int | None,
    *,
    fmt: str,
    out: str,
) -> int:
    """Write the candles of ``key`` in ``[start_ms, end_ms)`` to ``out`` (``-``: stdout, CSV
    only) as ``fmt``; the number of candles written."""
    if fmt not in FORMATS:
        raise BackupError(f"unknown export format {fmt!r}; expected csv or parquet")
    if fmt == "parquet" and out == "-":
        raise BackupError("Parquet cannot go to stdout; give --out a file name")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise BackupError(
                "Parquet export needs pyarrow: pip install 'klinetrio[parquet]' (or --format csv)"
            ) from None
    conn = connect(url)
    try:
        with translate_errors("exporting candles"), conn.transaction():
            if out == "-":
                return _write_csv(_batches(conn, key, start_ms, end_ms), sys.stdout)
            path = Path(out)
            partial = path.with_name(path.name + ".partial")
            try:
                if fmt == "csv":
                    with open(partial, "w", encoding="utf-8", newline="") as file:
                        count = _write_csv(_batches(conn, key, start_ms, end_ms), file)
                else:
                    shapes = _decimal_shapes(conn, key, start_ms, end_ms)
                    count = _write_parquet(_batches(conn, key, start_ms, end_ms), partial, shapes)
                partial.replace(path)
            except OSError as exc:
                raise BackupError(f"cannot write {out}: {exc.strerror or exc}") from None
            finally:
                with contextlib.suppress(OSError):
                    partial.unlink(missing_ok=True)
            return count
    finally:
        conn.close()
