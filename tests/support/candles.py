"""Real candles for tests: the 1m archives and REST files of ``../shared/data``, and the
aggregation a derived interval must equal, computed in Python with exact decimals."""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterable, Sequence
from decimal import Decimal
from pathlib import Path

import psycopg

from klinetrio.binance import wire
from klinetrio.core.models import Candle

# Every column of the table, in an order that makes equal tables compare equal.
TABLE_CHECKSUM = (
    "SELECT count(*), md5(string_agg(concat_ws('|', market, symbol, interval, time, close_time,"
    " open, high, low, close, volume, quote_volume, trades, taker_buy_volume,"
    " taker_buy_quote_volume, source), E'\\n' ORDER BY market, symbol, interval, time))"
    " FROM candles"
)


def archive_candles(path: Path, symbol: str = "BTCUSDT", interval: str = "1m") -> list[Candle]:
    """The rows of a data.binance.vision kline zip (ms times, no header) as Candles."""
    with zipfile.ZipFile(path) as archive:
        text = archive.read(archive.namelist()[0]).decode()
    candles = []
    for row in csv.reader(io.StringIO(text)):
        t, o, h, lo, c, v, close, qv, n, tbv, tbqv, _ = row
        candles.append(
            Candle(
                symbol,
                interval,
                int(t),
                int(close) * 1000,
                o,
                h,
                lo,
                c,
                v,
                qv,
                int(n),
                tbv,
                tbqv,
                "archive",
            )
        )
    return candles


def january_2020(shared_data: Path) -> list[Candle]:
    """BTCUSDT 1m of 2020-01-01..03: 4,320 candles from the three original daily archives."""
    folder = shared_data / "vision" / "spot"
    return [
        c for day in (1, 2, 3) for c in archive_candles(folder / f"BTCUSDT-1m-2020-01-0{day}.zip")
    ]


def rest_candles(path: Path, symbol: str, interval: str) -> list[Candle]:
    return [
        row.to_candle(symbol, interval)
        for row in wire.rest_klines_decoder.decode(path.read_bytes())
    ]


def aggregate(
    candles: Sequence[Candle], interval: str, bucket_ms: int, origin_ms: int = 0
) -> list[tuple[object, ...]]:
    """Whole buckets of ``candles`` as (open ms, close µs, o, h, l, c, v, qv, n, tbv, tbqv)."""
    step = candles[1].open_time - candles[0].open_time
    groups: dict[int, list[Candle]] = {}
    for c in candles:
        groups.setdefault(c.open_time - (c.open_time - origin_ms) % bucket_ms, []).append(c)
    rows = []
    for start, group in sorted(groups.items()):
        if len(group) != bucket_ms // step:
            continue
        group.sort(key=lambda c: c.open_time)
        rows.append(
            (
                start,
                group[-1].close_time_us,
                Decimal(group[0].open),
                max(Decimal(c.high) for c in group),
                min(Decimal(c.low) for c in group),
                Decimal(group[-1].close),
                sum(Decimal(c.volume) for c in group),
                sum(Decimal(c.quote_volume) for c in group),
                sum(c.trades for c in group),
                sum(Decimal(c.taker_buy_volume) for c in group),
                sum(Decimal(c.taker_buy_quote_volume) for c in group),
            )
        )
    return rows


def as_rows(candles: Iterable[Candle]) -> list[tuple[object, ...]]:
    """Candles in ``aggregate``'s shape, for comparison."""
    return [
        (
            c.open_time,
            c.close_time_us,
            Decimal(c.open),
            Decimal(c.high),
            Decimal(c.low),
            Decimal(c.close),
            Decimal(c.volume),
            Decimal(c.quote_volume),
            c.trades,
            Decimal(c.taker_buy_volume),
            Decimal(c.taker_buy_quote_volume),
        )
        for c in candles
    ]


def checksum(url: str) -> tuple[int, str]:
    """Row count and an ordered checksum of every column of ``candles``."""
    with psycopg.connect(url) as conn:
        row = conn.execute(TABLE_CHECKSUM).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])
