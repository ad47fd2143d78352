"""The live write path's cost per batch: ``Database.write`` (COPY into staging, then the plain
INSERT under a savepoint without RETURNING, ON CONFLICT only when the batch meets a stored row)
against the previous form (the same COPY, then always ``INSERT ... ON CONFLICT DO NOTHING ...
RETURNING`` and its summary), interleaved batch by batch on two connections to one fresh
database, so both see the same machine.

Batches are the live sizes: a second's closed candles of a quiet load (50), of the full load
(1,500) and the writer's largest (5,000, a minute boundary's burst). Every batch is new rows
(the live case); ``--overlap`` makes a share of batches meet stored rows (a rotation, a
restart), to see what the fallback costs. Figures: the median wall time of a write, in ms.

    .venv/bin/python bench/live_write.py [--rounds 40] [--overlap 0.0]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from common import bench_database, log

from klinetrio.core.models import Candle
from klinetrio.store import database as dbmod
from klinetrio.store.database import Database, copy_text


def candles(symbol_base: int, count: int, open_ms: int) -> list[Candle]:
    out = []
    for i in range(count):
        price = f"{20000 + (i * 7919) % 5000}.{i % 100:02d}000000"
        out.append(
            Candle(
                f"S{symbol_base + i:05d}USDT",
                "1m",
                open_ms,
                open_ms * 1000 + 59_999_999,
                price,
                price,
                price,
                price,
                "12.34500000",
                "246912.00000000",
                17,
                "6.17200000",
                "123456.00000000",
            )
        )
    return out


def old_write(db: Database, batch: list[Candle]) -> int:
    """The write before the savepoint: COPY, then always ON CONFLICT DO NOTHING."""
    conn = db.connection()
    if not getattr(db, "_staging", False):
        conn.execute(dbmod._CREATE_STAGING)
        conn.commit()
        db._staging = True  # type: ignore[attr-defined]
    with conn.cursor() as cur:
        with cur.copy(dbmod._COPY_STAGING) as copy:
            copy.write(copy_text(batch))
        cur.execute(dbmod._INSERT_FROM_STAGING)
        row = cur.fetchone()
    conn.commit()
    assert row is not None
    return int(row[0])  # type: ignore[call-overload]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument(
        "--overlap", type=float, default=0.0, help="share of batches that meet stored rows"
    )
    args = parser.parse_args()
    rng = random.Random(7)
    with bench_database("live_write") as url:
        new, old = Database(url), Database(url)
        new.migrate()
        open_ms = 1_700_000_000_000
        for size in (50, 1_500, 5_000):
            times: dict[str, list[float]] = {"savepoint": [], "on conflict": []}
            for _ in range(args.rounds):
                # Each form gets its own symbols (no cross-talk); the same sizes and times.
                order = [("savepoint", new, 0), ("on conflict", old, 50_000)]
                rng.shuffle(order)
                for name, db, base in order:
                    batch = candles(base, size, open_ms)
                    if args.overlap and rng.random() < args.overlap:
                        previous = candles(base, size, open_ms - 60_000)
                        batch = previous[: size // 10] + batch  # a tenth already stored
                    started = time.perf_counter()
                    if db is new:
                        db.write(batch)
                    else:
                        old_write(db, batch)
                    times[name].append((time.perf_counter() - started) * 1000)
                open_ms += 60_000
            med = {k: statistics.median(v) for k, v in times.items()}
            log(
                f"batch {size:>5,}: savepoint + plain INSERT {med['savepoint']:7.2f} ms,"
                f" ON CONFLICT {med['on conflict']:7.2f} ms"
                f" (ratio {med['savepoint'] / med['on conflict']:.3f}; median of {args.rounds})"
            )
        new.close()
        old.close()


if __name__ == "__main__":
    main()
