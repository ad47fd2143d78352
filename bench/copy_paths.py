"""Ways into ``candles`` for the ``archive`` benchmark, measured in the bench process itself.

- ``raw_copy``: the ceiling. The rows, already in the table's own text form (built before the
  clock starts), streamed by ``COPY candles FROM STDIN`` on one or more connections at once: no
  staging table, no conflict handling, no Python work while it runs.
- ``staged``: klinetrio's bulk path as ``klinetrio.store.bulk`` runs it (CSV rows through COPY
  into the staging table, then one INSERT), in ``text`` form (the file's CSV bytes as they
  are) or ``binary`` form (``COPY ... (FORMAT binary)``: Python cuts every row into fields and
  frames them, numbers go in as text and are cast by the INSERT). Used to decide which one
  ``bulk.py`` keeps.
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import psycopg

from klinetrio.store import bulk

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_COLUMNS = (
    "market, symbol, interval, time, close_time, open, high, low, close, volume, quote_volume,"
    " trades, taker_buy_volume, taker_buy_quote_volume, source"
)


def table_text(csv_chunks: Sequence[bytes], symbol: str, interval: str) -> list[bytes]:
    """Archive CSV rows (ms or µs) in ``candles``' own COPY text form, one block per chunk."""
    blocks = []
    for csv in csv_chunks:
        out = []
        for line in csv.decode().splitlines():
            c = line.split(",")
            open_us = int(c[0]) if int(c[0]) >= 10**14 else int(c[0]) * 1000
            close_us = int(c[6]) if int(c[6]) >= 10**14 else int(c[6]) * 1000
            opened = (_EPOCH + timedelta(microseconds=open_us)).isoformat(" ")
            closed = (_EPOCH + timedelta(microseconds=close_us)).isoformat(" ")
            out.append(
                f"spot\t{symbol}\t{interval}\t{opened}\t{closed}\t{c[1]}\t{c[2]}\t{c[3]}\t{c[4]}"
                f"\t{c[5]}\t{c[7]}\t{c[8]}\t{c[9]}\t{c[10]}\tarchive\n"
            )
        blocks.append("".join(out).encode())
    return blocks


def raw_copy(url: str, blocks: Sequence[bytes], streams: int) -> float:
    """Seconds to COPY every block straight into ``candles`` over ``streams`` connections."""
    shares = [list(blocks[i::streams]) for i in range(streams)]
    conns = [psycopg.connect(url) for _ in range(streams)]
    errors: list[BaseException] = []

    def run(conn: psycopg.Connection[tuple[object, ...]], share: list[bytes]) -> None:
        try:
            with conn.cursor() as cur, cur.copy(f"COPY candles ({_COLUMNS}) FROM STDIN") as copy:
                for block in share:
                    copy.write(block)
            conn.commit()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=pair) for pair in zip(conns, shares, strict=True)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    for conn in conns:
        conn.close()
    if errors:
        raise errors[0]
    return elapsed


_BINARY_STAGING = """
CREATE TEMP TABLE candles_bulk_bin (
    open_time bigint, open text, high text, low text, close text, volume text, close_time bigint,
    quote_volume text, trades bigint, taker_buy_volume text, taker_buy_quote_volume text,
    ignore text
) ON COMMIT DELETE ROWS
"""
_BINARY_INSERT = (
    bulk._INSERT_NEW.replace("FROM candles_bulk)", "FROM candles_bulk_bin)")
    .replace("open, high, low, close, volume, quote_volume, trades,", "open::numeric, high::numeric, low::numeric, close::numeric, volume::numeric, quote_volume::numeric, trades,")
    .replace("taker_buy_volume, taker_buy_quote_volume, %(source)s", "taker_buy_volume::numeric, taker_buy_quote_volume::numeric, %(source)s")
)  # fmt: skip
_INT8 = struct.Struct("!iq").pack


def copy_binary(csv: bytes) -> bytes:
    """CSV kline rows as a ``COPY ... (FORMAT binary)`` stream (int8 times and trades, text rest)."""
    out = bytearray(b"PGCOPY\n\xff\r\n\x00" + bytes(8))
    for line in csv.split(b"\n")[:-1]:
        f = line.split(b",")
        out += b"\x00\x0c" + _INT8(8, int(f[0]))
        for value in f[1:6]:
            out += len(value).to_bytes(4, "big") + value
        out += _INT8(8, int(f[6])) + len(f[7]).to_bytes(4, "big") + f[7] + _INT8(8, int(f[8]))
        for value in f[9:12]:
            out += len(value).to_bytes(4, "big") + value
    out += b"\xff\xff"
    return bytes(out)


def staged(url: str, csv_chunks: Sequence[bytes], symbol: str, interval: str, form: str) -> float:
    """Seconds for the bulk path over one connection, ``form`` ``text`` or ``binary`` (all the
    Python work of that form included)."""
    params = {"market": "spot", "symbol": symbol, "interval": interval, "source": "archive",
              "start": 0, "end": 2**62}  # fmt: skip
    with psycopg.connect(url) as conn:
        conn.execute(bulk._CREATE_STAGING if form == "text" else _BINARY_STAGING)
        conn.commit()
        started = time.perf_counter()
        for csv in csv_chunks:
            with conn.cursor() as cur:
                if form == "text":
                    with cur.copy(bulk._COPY) as copy:
                        copy.write(csv)
                    cur.execute(bulk._INSERT_NEW, params)
                else:
                    with cur.copy("COPY candles_bulk_bin FROM STDIN (FORMAT binary)") as copy:
                        copy.write(copy_binary(csv))
                    cur.execute(_BINARY_INSERT, params)
            conn.commit()
        return time.perf_counter() - started
