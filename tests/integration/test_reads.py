"""The read queries against a real PostgreSQL: Binance's bytes back out of the table, metadata,
and coverage of real archives with their one confirmed hole."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from support.vision import HALT, compact, vision_csv

from klinetrio.binance import wire
from klinetrio.core.coverage import MissingRange, coverage
from klinetrio.core.intervals import HOUR_MS, Interval
from klinetrio.core.models import Candle, StreamKey
from klinetrio.store import reads
from klinetrio.store.database import Database

KEY = StreamKey("BTCUSDT", "1h")


@pytest.fixture
def db(database_url: str) -> Database:
    database = Database(database_url)
    database.migrate()
    yield database  # type: ignore[misc]
    database.close()


def five_months(db: Database, shared_data: Path) -> int:
    folder = shared_data / "vision" / "spot"
    candles = [c for m in range(1, 6) for c in vision_csv(folder / f"BTCUSDT-1h-2023-0{m}.csv")]
    db.write(candles)
    db.add_hole(KEY, HALT, HALT + HOUR_MS)
    return len(candles)


def test_klines_rows_are_binance_bytes_also_from_microsecond_archives(
    db: Database, shared_data: Path
) -> None:
    db.write(vision_csv(shared_data / "vision" / "spot" / "BTCUSDT-1h-2025-01.csv"))
    rest = shared_data / "rest" / "BTCUSDT_1h_2025-01-01.json"
    expected = compact(rest)
    rows = db.call("reading", reads.candle_rows, "spot", "BTCUSDT", "1h", None, None, 1000)
    assert rows == expected
    first_ms = json.loads(expected[0])[0]
    page = db.call("reading", reads.candle_rows, "spot", "BTCUSDT", "1h", first_ms + 1, None, 3)
    assert page == expected[1:4]
    newest = db.call(
        "reading",
        reads.candle_rows,
        "spot",
        "BTCUSDT",
        "1h",
        None,
        first_ms + 10 * HOUR_MS,
        2,
        newest=True,
    )
    assert newest == expected[9:11]


def test_object_and_csv_rows_carry_the_stored_decimals(db: Database, shared_data: Path) -> None:
    db.write(vision_csv(shared_data / "vision" / "spot" / "BTCUSDT-1h-2025-01.csv"))
    (obj,) = db.call(
        "reading", reads.candle_rows, "spot", "BTCUSDT", "1h", None, None, 1, shape="object"
    )
    (line,) = db.call(
        "reading", reads.candle_rows, "spot", "BTCUSDT", "1h", None, None, 1, shape="csv"
    )
    assert json.loads(obj) == {
        "time": 1735689600000,
        "close_time": 1735693199999,
        "open": "93576.00000000",
        "high": "94509.42000000",
        "low": "93489.03000000",
        "close": "94401.14000000",
        "volume": "755.99010000",
        "quote_volume": "71068810.55946380",
        "trades": 93525,
        "taker_buy_volume": "421.08319000",
        "taker_buy_quote_volume": "39596777.77992590",
    }
    assert line == ",".join(str(v) for v in json.loads(obj).values())
    assert reads.CSV_HEADER.split(",") == list(json.loads(obj))


def test_metadata_and_known_symbols(db: Database, shared_data: Path) -> None:
    count = five_months(db, shared_data)
    (info,) = db.call("reading", reads.series_metadata)
    assert info == reads.SeriesInfo("spot", "BTCUSDT", "1h", 1672531200000, 1685574000000, count)
    assert db.call("reading", reads.series_metadata, symbols=["ETHUSDT"]) == []
    assert db.call("reading", reads.known_symbol, "spot", "BTCUSDT")
    assert not db.call("reading", reads.known_symbol, "spot", "NOSUCHCOIN")
    assert not db.call("reading", reads.known_symbol, "usdm", "BTCUSDT")


def test_coverage_of_five_real_months_then_five_rows_deleted(
    db: Database, shared_data: Path, database_url: str
) -> None:
    count = five_months(db, shared_data)
    (cov,) = db.call("coverage", reads.coverage_report)
    assert (cov.expected, cov.present, cov.holes, cov.missing) == (count + 1, count, 1, 0)
    assert cov.complete_pct == 100.0
    gone = [1673000000000 // HOUR_MS * HOUR_MS + i * HOUR_MS for i in (0, 1, 2)]
    gone += [1680000000000 // HOUR_MS * HOUR_MS, 1684000000000 // HOUR_MS * HOUR_MS]
    with psycopg.connect(database_url) as conn:
        for t in gone:
            conn.execute("DELETE FROM candles WHERE time = to_timestamp(%s / 1000.0)", (t,))
    (cov,) = db.call("coverage", reads.coverage_report)
    assert (cov.present, cov.holes, cov.missing) == (count - 5, 1, 5)
    assert cov.missing_ranges == (
        MissingRange(gone[0], gone[2] + HOUR_MS, 3),
        MissingRange(gone[3], gone[3] + HOUR_MS, 1),
        MissingRange(gone[4], gone[4] + HOUR_MS, 1),
    )
    # An explicit range that starts before the first candle counts those hours as missing.
    (early,) = db.call("coverage", reads.coverage_report, start_ms=1672531200000 - 2 * HOUR_MS)
    assert early.missing == 7


def test_a_delisted_symbol_ends_with_its_newest_candle(
    db: Database, shared_data: Path, database_url: str
) -> None:
    five_months(db, shared_data)
    end = 1688169600000  # 2023-07-01: a month after the newest candle
    (open_ended,) = db.call("coverage", reads.coverage_report, end_ms=end)
    assert open_ended.missing == 30 * 24
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO symbols (market, symbol, status, first_seen, last_seen)"
            " VALUES ('spot', 'BTCUSDT', 'BREAK', now(), now())"
        )
    (closed,) = db.call("coverage", reads.coverage_report, end_ms=end)
    assert closed.missing == 0
    assert closed.end == 1685574000000 + HOUR_MS


@pytest.mark.parametrize(
    ("interval", "name"),
    [
        ("1M", "BTCUSDT_1M_2010-01-01.json"),
        ("1w", "BTCUSDT_1w_2020-01-01.json"),
        ("3d", "BTCUSDT_3d_2020-01-01.json"),
        ("1d", "BTCUSDT_1d_2018-01-01.json"),
    ],
)
@pytest.mark.parametrize("ranged", [False, True])
def test_sql_coverage_equals_the_pure_count_on_real_calendars(
    db: Database, shared_data: Path, database_url: str, interval: str, name: str, ranged: bool
) -> None:
    rows = json.loads((shared_data / "rest" / name).read_text())
    db.write([wire_candle(r, interval) for r in rows])
    opens = [int(r[0]) for r in rows]
    gone = {opens[3], opens[4], opens[10], opens[-2]}
    with psycopg.connect(database_url) as conn:
        for t in gone:
            conn.execute("DELETE FROM candles WHERE time = to_timestamp(%s / 1000.0)", (t,))
    iv = Interval.parse(interval)
    start, end = (opens[1], opens[-1]) if ranged else (opens[0], iv.next_open(opens[-1]))
    kept = sorted(set(opens) - gone)
    expected = coverage("spot", "BTCUSDT", iv, start, end, [(t, t) for t in kept], [])
    bounds = {"start_ms": start, "end_ms": end} if ranged else {}
    (measured,) = db.call("coverage", reads.coverage_report, **bounds)
    assert measured == expected
    assert measured.missing == 4
    assert [r.start for r in measured.missing_ranges] == [opens[3], opens[10], opens[-2]]


def wire_candle(row: list[object], interval: str) -> Candle:
    return wire.rest_klines_decoder.decode(json.dumps([row]).encode())[0].to_candle(
        "BTCUSDT", interval
    )
