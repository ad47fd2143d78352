"""The simulator's derived trades and books (pure): sums, ranges, ids, determinism."""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

import pytest

from klinetrio.errors import SettingsError
from klinetrio.simulate import SyntheticMarket, add_arguments, config_from_args
from klinetrio.simulate.books import BookModel
from klinetrio.simulate.config import SimulatorConfig
from klinetrio.simulate.market import Bar, format_units, parse_units
from klinetrio.simulate.replay import ReplayedTrades, load_replay
from klinetrio.simulate.trade_files import candles_from_trades, parse_agg_trades_csv, trades_csv
from klinetrio.simulate.trades import (
    DerivedTrades,
    VenueTrades,
    derive_trades,
    split_units,
)
from klinetrio.simulate.venues import make_venue

T0 = 1_704_067_200_000  # 2024-01-01T00:00Z
MINUTE = 60_000


def _derived(style: str = "spot", symbol: str = "BTCUSDT", rate: float = 1.0) -> DerivedTrades:
    market = SyntheticMarket([symbol], 7, style=style)
    return DerivedTrades(
        market, rate=rate, seed=7, listing_ms=market.listing_ms, spot=style == "spot"
    )


@pytest.mark.parametrize("parts", [1, 2, 3, 60, 997])
def test_split_units_is_exact_and_positive(parts: int) -> None:
    for total in (parts, parts + 1, 10 * parts + 7, 123_456_789):
        split = split_units(total, parts, key=total * 31 + parts)
        assert len(split) == parts
        assert sum(split) == total
        assert min(split) >= 1
    with pytest.raises(ValueError, match="positive parts"):
        split_units(parts - 1, parts, 0)


@pytest.mark.parametrize(
    ("style", "symbol", "rate"),
    [("spot", "BTCUSDT", 1.0), ("spot", "ETHUSDT", 25.0), ("usdm", "BTCUSDT", 3.0),
     ("coinm", "BTCUSD_PERP", 30.0)],
)  # fmt: skip
def test_each_candle_trades_sum_to_its_volume_inside_its_range(
    style: str, symbol: str, rate: float
) -> None:
    derived = _derived(style, symbol, rate)
    market = SyntheticMarket([symbol], 7, style=style)
    previous_last: int | None = None
    previous_raw: int | None = None
    for n in range(30):
        open_ms = T0 + n * MINUTE
        bar = market.bar(symbol, "1m", open_ms)
        assert bar is not None
        trades = derived.candle_trades(symbol, open_ms)
        assert len(trades) == round(rate * 60)
        assert sum(parse_units(t.quantity) for t in trades) == parse_units(bar.volume)
        low, high = parse_units(bar.low), parse_units(bar.high)
        assert all(low <= parse_units(t.price) <= high for t in trades)
        assert trades[0].price == bar.open
        assert trades[-1].price == bar.close
        assert {bar.high, bar.low} <= {t.price for t in trades}
        times = [t.time for t in trades]
        assert times == sorted(times)
        assert open_ms <= times[0]
        assert times[-1] <= bar.close_time
        for trade in trades:
            if previous_last is not None:
                assert trade.agg_id == previous_last + 1
                assert trade.first_id == previous_raw
            assert trade.last_id >= trade.first_id
            previous_last, previous_raw = trade.agg_id, trade.last_id + 1
        if style == "coinm":
            assert all("." not in t.quantity for t in trades)  # whole contracts


def test_derived_trades_are_a_pure_function_of_time() -> None:
    one, two = _derived(), _derived()
    late = two.between("BTCUSDT", T0 + 5 * MINUTE, T0 + 9 * MINUTE, 10_000)
    early = one.between("BTCUSDT", T0, T0 + 10 * MINUTE, 10_000)
    assert [t for t in early if T0 + 5 * MINUTE <= t.time <= T0 + 9 * MINUTE] == late
    first = late[0].agg_id
    assert (
        one.from_id("BTCUSDT", first, 1000, T0 + 9 * MINUTE)
        == [t for t in early if first <= t.agg_id and t.time <= T0 + 9 * MINUTE][:1000]
    )
    assert one.latest("BTCUSDT", late[-1].time, 3) == late[-3:]
    assert one.next_time("BTCUSDT", late[0].time) == late[0].time
    other_seed = SyntheticMarket(["BTCUSDT"], 8)
    other = DerivedTrades(other_seed, rate=1.0, seed=8, listing_ms=other_seed.listing_ms, spot=True)
    assert other.candle_trades("BTCUSDT", T0) != one.candle_trades("BTCUSDT", T0)


def test_a_replayed_candle_gets_at_most_its_trade_count_and_none_when_empty() -> None:
    bar = Bar("XUSDT", "1m", T0, T0 + MINUTE - 1, "1.00", "1.20", "0.90", "1.10", "0.00000005",
              "0.5", 3, "0.1", "0.1")  # fmt: skip
    trades = derive_trades(bar, 10, 100, key=5)
    assert len(trades) == 5  # only five 1e-8 units of volume to share
    assert sum(parse_units(t.quantity) for t in trades) == 5
    empty = Bar("XUSDT", "1m", T0, T0 + MINUTE - 1, "1", "1", "1", "1", "0", "0", 0, "0", "0")
    assert derive_trades(empty, 10, 100, key=5) == []


def test_books_sit_around_the_last_trade_and_ids_grow() -> None:
    market = SyntheticMarket(["BTCUSDT"], 7)
    derived = DerivedTrades(market, rate=2.0, seed=7, listing_ms=market.listing_ms, spot=True)
    trades = VenueTrades(derived)
    books = BookModel(market, trades, seed=7, listing_ms=market.listing_ms)
    ids = []
    for t in range(T0, T0 + 5 * MINUTE, 7_919):
        book = books.book("BTCUSDT", t, 20)
        assert book is not None
        bid, ask = parse_units(book.bids[0][0]), parse_units(book.asks[0][0])
        assert 0 < bid < ask
        last = trades.last_at("BTCUSDT", t)
        assert last is not None
        assert abs(parse_units(last.price) - bid) <= 2 * 1_000_000  # within a tick or two
        assert [parse_units(p) for p, _ in book.bids] == sorted(
            (parse_units(p) for p, _ in book.bids), reverse=True
        )
        assert len(book.bids) == len(book.asks) == 20
        ids.append(book.update_id)
    assert ids == sorted(set(ids))
    ticker = books.ticker("BTCUSDT", T0 + 5 * MINUTE)
    assert ticker is not None
    assert ticker.count == ticker.last_id - ticker.first_id + 1
    assert parse_units(ticker.low) <= parse_units(ticker.last) <= parse_units(ticker.high)


def test_archive_csv_round_trips_in_both_shapes(shared_data: Path) -> None:
    spot_zip = shared_data / "vision" / "spot-aggTrades" / "PEPEUSDT-aggTrades-2024-10-27.zip"
    with zipfile.ZipFile(spot_zip) as archive:
        text = archive.read(archive.namelist()[0]).decode()
    trades = parse_agg_trades_csv(text)
    assert len(trades) == 57_229
    assert trades_csv(trades, spot=True, micros=False) == text.replace("\r\n", "\n")
    um_zip = shared_data / "vision" / "futures-um-daily" / "APEUSDT-aggTrades-2024-10-18.zip"
    with zipfile.ZipFile(um_zip) as archive:
        futures = archive.read(archive.namelist()[0]).decode()
    rows = parse_agg_trades_csv(futures)
    assert len(rows) == 45_342
    assert trades_csv(rows, spot=False, micros=False) == futures.replace("\r\n", "\n")


def test_a_replay_of_trades_alone_makes_exact_candles(shared_data: Path) -> None:
    replay = load_replay(shared_data / "vision" / "spot-aggTrades")
    assert replay.symbols == ("PEPEUSDT",)
    trades = replay.trades["PEPEUSDT"]
    bars = candles_from_trades("PEPEUSDT", "1h", trades)
    assert len(bars) == 24
    assert sum(parse_units(b.volume) for b in bars) == sum(parse_units(t.quantity) for t in trades)
    assert sum(b.trades for b in bars) == trades[-1].last_id - trades[0].first_id + 1
    replayed = ReplayedTrades(replay.trades)
    assert replayed.from_id("PEPEUSDT", trades[100].agg_id, 5, 2**62) == trades[100:105]


def test_rate_flags_and_help() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = config_from_args(
        parser.parse_args(["--trade-rate", "25", "--book-rate", "50", "--depth-rate", "2"])
    )
    assert (config.trade_rate, config.book_rate, config.depth_rate) == (25.0, 50.0, 2.0)
    defaults = config_from_args(parser.parse_args([]))
    assert (defaults.trade_rate, defaults.book_rate, defaults.depth_rate) == (1.0, 5.0, 1.0)
    for flag in ("--trade-rate", "--book-rate", "--depth-rate"):
        with pytest.raises(SettingsError, match=flag):
            config_from_args(parser.parse_args([flag, "0"]))
    text = parser.format_help()
    for flag in ("--trade-rate", "--book-rate", "--depth-rate"):
        assert flag in text


def test_a_replay_of_minute_candles_alone_has_trades_and_a_ticker(
    shared_data: Path, tmp_path: Path
) -> None:
    (tmp_path / "BTCUSDT-1m-2020-01-01.zip").write_bytes(
        (shared_data / "vision" / "spot" / "BTCUSDT-1m-2020-01-01.zip").read_bytes()
    )
    replay = load_replay(tmp_path)
    venue = make_venue("spot", SimulatorConfig(), replay, {})
    day = 1_577_836_800_000  # 2020-01-01
    bars = [replay.bar("BTCUSDT", "1m", day + i * MINUTE) for i in range(1440)]
    trades = venue.trades.between("BTCUSDT", day, day + 86_400_000 - 1, 10**9)
    assert len(trades) == sum(min(60, b.trades) for b in bars if b is not None)
    assert sum(parse_units(t.quantity) for t in trades) == sum(
        parse_units(b.volume) for b in bars if b is not None
    )
    ticker = venue.books.ticker("BTCUSDT", day + 86_400_000)  # the day has closed
    assert ticker is not None
    assert ticker.volume == format_units(sum(parse_units(b.volume) for b in bars if b is not None))
    assert ticker.high == max((b.high for b in bars if b is not None), key=parse_units)
