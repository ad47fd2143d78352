"""The ``store`` scenario of bench/run.py: compressed size and backup/restore time per million
1m candles.

The candles are real: the three BTCUSDT 1m archive days of ../shared/data (4,320 rows) repeated
232 times, each copy three days later than the last, so one series of 1,002,240 candles (1.9
years) with Binance's own price and volume statistics. They are loaded with one server-side
INSERT ... SELECT, then:

- on TimescaleDB (``BENCH_TIMESCALE_URL``, else ``KLINETRIO_TEST_TIMESCALE_URL``): every chunk
  is compressed with klinetrio's settings (segmentby market, symbol, interval; orderby time DESC)
  and the hypertable's size is read before and after (``hypertable_size``);
- on the plain server (``BENCH_PG``): the plain table's size;
- on each: ``klinetrio backup`` and ``klinetrio restore`` into a fresh database, run as the user
  runs them (the CLI as a subprocess), timed from the outside, and the dump's size.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "vision" / "spot"
COPIES = 232
THREE_DAYS = "3 days"
KLINETRIO = [sys.executable, "-m", "klinetrio"]


@dataclass
class StoreResult:
    server: str
    candles: int
    table_bytes: int
    compressed_bytes: int | None = None
    compress_s: float | None = None
    dump_bytes: int = 0
    backup_s: float = 0.0
    restore_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def per_million(self, value: float | None) -> float | None:
        return None if value is None else round(value * 1_000_000 / self.candles, 2)


@contextlib.contextmanager
def _database(admin_url: str, name: str) -> Iterator[str]:
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield urlsplit(admin_url)._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _real_rows() -> str:
    """The three archive days as COPY text of the staging table's columns."""
    out = io.StringIO()
    for day in (1, 2, 3):
        with zipfile.ZipFile(DATA / f"BTCUSDT-1m-2020-01-0{day}.zip") as archive:
            text = archive.read(archive.namelist()[0]).decode()
        for t, o, h, lo, c, v, close, qv, n, tbv, tbqv, _ in csv.reader(io.StringIO(text)):
            out.write("\t".join((t, close, o, h, lo, c, v, qv, n, tbv, tbqv)) + "\n")
    return out.getvalue()


def _load(url: str) -> int:
    from klinetrio.store.database import Database
    from klinetrio.store.policies import StoreOptions

    db = Database(url)
    # Compression settings without a policy: the bench compresses by hand, nothing races it.
    db.migrate(StoreOptions(compress_after_ms=None))
    db.close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TEMP TABLE real (t bigint, close_ms bigint, open numeric, high numeric,"
            " low numeric, close numeric, volume numeric, quote_volume numeric, trades bigint,"
            " tbv numeric, tbqv numeric)"
        )
        with conn.cursor() as cur, cur.copy("COPY real FROM STDIN") as copy:
            copy.write(_real_rows())
        conn.execute(
            f"""
            INSERT INTO candles
            SELECT 'spot', 'BTCUSDT', '1m',
                   timestamptz 'epoch' + t * interval '1 ms' + k * interval '{THREE_DAYS}',
                   timestamptz 'epoch' + close_ms * interval '1 ms' + k * interval '{THREE_DAYS}',
                   open, high, low, close, volume, quote_volume, trades, tbv, tbqv, 'archive'
              FROM real, generate_series(0, {COPIES - 1}) AS k
             ORDER BY 4
            """
        )
        conn.execute("VACUUM ANALYZE candles")
        row = conn.execute("SELECT count(*) FROM candles").fetchone()
    assert row is not None
    return int(row[0])


def _size(url: str, timescale: bool) -> int:
    with psycopg.connect(url) as conn:
        query = (
            "SELECT hypertable_size('candles')"
            if timescale
            else "SELECT pg_total_relation_size('candles')"
        )
        row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def _cli(*args: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLINETRIO_")}
    started = time.monotonic()
    done = subprocess.run([*KLINETRIO, *args], capture_output=True, text=True, env=env, check=False)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"klinetrio {args[0]} failed: {done.stderr.strip().splitlines()[-1:]}")
    return elapsed


def run_store(admin_url: str, timescale: bool, log: object) -> StoreResult:
    say = log if callable(log) else print
    tag = "ts" if timescale else "pg"
    name = f"bench_{os.getpid()}_store_{tag}"
    with _database(admin_url, name) as url:
        started = time.monotonic()
        candles = _load(url)
        say(f"  loaded {candles:,} 1m candles in {time.monotonic() - started:.1f}s")
        result = StoreResult(
            "TimescaleDB" if timescale else "PostgreSQL", candles, _size(url, timescale)
        )
        if timescale:
            started = time.monotonic()
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("SELECT count(compress_chunk(c)) FROM show_chunks('candles') c")
            result.compress_s = round(time.monotonic() - started, 2)
            result.compressed_bytes = _size(url, timescale)
        with tempfile.TemporaryDirectory(prefix="klinetrio-bench-store-") as tmp:
            result.backup_s = round(_cli("backup", "--database-url", url, "--dir", tmp), 2)
            (dump,) = Path(tmp).glob("klinetrio-*.dump")
            result.dump_bytes = dump.stat().st_size
            with _database(admin_url, f"{name}_restored") as target:
                result.restore_s = round(_cli("restore", str(dump), "--database-url", target), 2)
                with psycopg.connect(target) as conn:
                    row = conn.execute("SELECT count(*) FROM candles").fetchone()
                if row is None or int(row[0]) != candles:
                    result.notes.append(f"restored {row} rows, expected {candles}")
    return result


def line(r: StoreResult) -> str:
    mb = 1_000_000 / r.candles / 2**20
    parts = [f"{r.server}: {r.candles:,} candles; table {r.table_bytes * mb:.1f} MiB per million"]
    if r.compressed_bytes is not None:
        parts.append(
            f"compressed {r.compressed_bytes * mb:.2f} MiB per million "
            f"({r.table_bytes / r.compressed_bytes:.1f}x, compress_chunk {r.per_million(r.compress_s)} s per million)"
        )
    parts.append(
        f"backup {r.per_million(r.backup_s)} s, restore {r.per_million(r.restore_s)} s per million "
        f"(dump {r.dump_bytes * mb:.1f} MiB per million)"
    )
    return "; ".join(parts + r.notes)
