"""The psycopg layer against a real PostgreSQL: migrations, idempotent writes, gap queries."""

from __future__ import annotations

from pathlib import Path

import msgspec
import psycopg
import pytest

from klinetrio.binance import wire
from klinetrio.core.gaps import missing_ranges
from klinetrio.core.intervals import Interval
from klinetrio.core.models import Candle, StreamKey
from klinetrio.errors import DatabaseUnavailable
from klinetrio.store.database import COLUMNS, Database

KEY = StreamKey("BTCUSDT", "1h")


def march_2023(shared_data: Path) -> list[Candle]:
    body = (shared_data / "rest" / "BTCUSDT_1h_2023-03-01.json").read_bytes()
    return [row.to_candle("BTCUSDT", "1h") for row in wire.rest_klines_decoder.decode(body)]


def test_migrations_create_the_contract_table_and_are_safe_to_rerun(database_url: str) -> None:
    db = Database(database_url)
    first = db.migrate()
    second = db.migrate()
    db.close()
    assert first.applied == (
        "0001_candles.sql",
        "0002_sync_holes.sql",
        "0003_candle_features.sql",
        "0004_symbols.sql",
        "0005_futures_statistics.sql",
        "0006_trades.sql",
        "0007_book_tickers.sql",
        "0008_tickers.sql",
        "0009_depth_snapshots.sql",
    )
    assert second.applied == ()
    with psycopg.connect(database_url) as conn:
        columns = [
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_name = 'candles' ORDER BY ordinal_position"
            )
        ]
        pk = conn.execute(
            "SELECT array_agg(a.attname ORDER BY k.ord) FROM pg_index i"
            " CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)"
            " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum"
            " WHERE i.indrelid = 'candles'::regclass AND i.indisprimary"
        ).fetchone()
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                "EXPLAIN SELECT * FROM candles WHERE symbol = 'X' AND interval = '1m'"
                " ORDER BY time DESC LIMIT 10"
            )
        )
    assert tuple(columns) == COLUMNS
    assert pk is not None
    assert pk[0] == ["market", "symbol", "interval", "time"]
    assert "candles_symbol_interval_time_idx" in plan


def test_writes_are_exact_and_idempotent(database_url: str, shared_data: Path) -> None:
    candles = march_2023(shared_data)
    db = Database(database_url)
    db.migrate()
    # A batch that is all new takes the plain INSERT; one that meets stored rows, or holds
    # the same candle twice, is inserted again with ON CONFLICT: only its new rows land.
    first_part = db.write(candles[:400])
    overlapping = db.write(candles[300:500] + candles[450:460])
    rest = db.write(candles[500:])
    again = db.write(candles)
    assert (first_part.count, overlapping.count, rest.count) == (400, 100, 243)
    assert first_part.count + overlapping.count + rest.count == 743
    assert overlapping.first[0][2] == candles[400].open_time
    assert rest.streams == 1
    assert rest.newest == 1680303600000
    assert again.count == 0
    assert db.count() == 743
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT open::text, high::text, low::text, close::text, volume::text,"
            " quote_volume::text, trades, taker_buy_volume::text, taker_buy_quote_volume::text,"
            " (extract(epoch FROM close_time) * 1000)::bigint, source"
            " FROM candles WHERE time = '2023-03-01 00:00+00'"
        ).fetchone()
    first = candles[0]
    assert row == (
        first.open,
        first.high,
        first.low,
        first.close,
        first.volume,
        first.quote_volume,
        first.trades,
        first.taker_buy_volume,
        first.taker_buy_quote_volume,
        first.close_time_us // 1000,
        "rest",
    )
    db.close()


def _candle(symbol: str, interval: str, open_ms: int, market: str = "spot") -> Candle:
    return Candle(
        symbol, interval, open_ms, open_ms * 1000 + 59_999_999, "1", "2", "0.5", "1.5",
        "10", "15", 3, "4", "6", "ws", market,
    )  # fmt: skip


def test_both_insert_forms_report_what_they_wrote_alike(database_url: str) -> None:
    # An all-new batch takes the plain INSERT and its summary is computed in Python; a batch
    # that meets a stored row takes ON CONFLICT and the server's RETURNING: they must agree.
    db = Database(database_url)
    db.migrate()
    t = 1_735_689_600_000
    batch = [
        _candle("BTCUSDT", "1m", t + 120_000),
        _candle("ETHUSDT", "1m", t, "usdm"),
        _candle("BTCUSDT", "1m", t + 60_000),
        _candle("BTCUSDT", "1h", t + 180_000),
    ]
    plain = db.write(batch)
    stored = _candle("XRPUSDT", "1m", t - 60_000)
    db.write([stored])
    again = [_candle(c.symbol, c.interval, c.open_time + 3_600_000, c.market) for c in batch]
    conflict = db.write([stored, *again])
    expected_first = (
        ("usdm:ETHUSDT", "1m", t),
        ("BTCUSDT", "1m", t + 60_000),
        ("BTCUSDT", "1m", t + 120_000),
    )
    assert (plain.count, plain.streams, plain.newest) == (4, 3, t + 180_000)
    assert plain.first == expected_first
    assert (conflict.count, conflict.streams, conflict.newest) == (4, 3, t + 3_780_000)
    assert conflict.first == tuple((s, i, o + 3_600_000) for s, i, o in expected_first)
    db.close()


def test_microsecond_close_times_are_kept(database_url: str) -> None:
    db = Database(database_url)
    db.migrate()
    candle = Candle(
        "BTCUSDT",
        "1h",
        1735689600000,
        1735693199999999,
        "1",
        "2",
        "0.5",
        "1.5",
        "10",
        "15",
        3,
        "4",
        "6",
        "archive",
    )
    db.write([candle])
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT to_char(close_time AT TIME ZONE 'UTC', 'HH24:MI:SS.US') FROM candles"
        ).fetchone()
    assert row == ("00:59:59.999999",)
    db.close()


def test_copy_text_cannot_be_shifted_by_a_malformed_string(database_url: str) -> None:
    db = Database(database_url)
    db.migrate()
    good = Candle("ETHUSDT", "1m", 60_000, 119_999_000, "1", "1", "1", "1", "0", "0", 0, "0", "0")
    evil = msgspec.structs.replace(good, open_time=0, open="1\t2", high="3\n4\\")
    result = db.write([evil, good])
    db.close()
    assert result.first == (("ETHUSDT", "1m", 60_000),) or result.count == 2
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT open::text, high::text FROM candles ORDER BY time").fetchall()
    # Either the malformed row is dropped alone, or its specials are stripped: never a shifted row.
    assert ("1", "1") in rows
    assert all(r in (("1", "1"), ("12", "34")) for r in rows)


def test_one_bad_row_costs_only_itself(database_url: str) -> None:
    db = Database(database_url)
    db.migrate()
    good = Candle("ETHUSDT", "1m", 60_000, 119_999_000, "1", "1", "1", "1", "0", "0", 0, "0", "0")
    bad = msgspec.structs.replace(good, open_time=0, open="1.2.3")
    written = db.write([bad, good])
    assert written.count == 1
    assert written.first == (("ETHUSDT", "1m", 60_000),)
    db.close()


def test_stored_runs_and_gaps_come_from_the_table(database_url: str, shared_data: Path) -> None:
    candles = march_2023(shared_data)
    db = Database(database_url)
    db.migrate()
    # Leave out two days in the middle on top of the real halt at 2023-03-24 13:00.
    kept = [c for c in candles if not (1678233600000 <= c.open_time < 1678406400000)]
    db.write(kept)
    start, end = 1677628800000, 1680307200000
    interval = Interval.parse("1h")
    runs = db.stored_runs(KEY, start, end, interval.fixed_ms)
    assert len(runs) == 3
    gaps = missing_ranges(interval, start, end, runs)
    assert gaps == [(1678233600000, 1678406400000), (1679662800000, 1679666400000)]
    db.add_hole(KEY, 1679662800000, 1679666400000)
    holes = db.holes(KEY, start, end)
    assert missing_ranges(interval, start, end, runs, holes) == [(1678233600000, 1678406400000)]
    assert db.bounds(KEY) == (1677628800000, 1680303600000)
    assert db.bounds(StreamKey("ETHUSDT", "1h")) is None
    db.close()


def test_unreachable_server_is_unavailable_not_a_crash() -> None:
    db = Database("postgresql://postgres@127.0.0.1:1/nothing?connect_timeout=1")
    with pytest.raises(DatabaseUnavailable, match="cannot connect"):
        db.ping()
