"""The simulator's pure parts: candle synthesis, in-progress candles, archive parsing, limits."""

from __future__ import annotations

import argparse
import itertools
import zipfile
from pathlib import Path

import pytest

from klinetrio.core.intervals import INTERVALS, Interval
from klinetrio.errors import SettingsError
from klinetrio.simulate import (
    Bar,
    ExchangeClock,
    SyntheticMarket,
    WeightLimiter,
    add_arguments,
    config_from_args,
    load_replay,
    parse_kline_csv,
    parse_rest_errors,
    parse_start,
    partial_bar,
)
from klinetrio.simulate.market import parse_units

T0 = 1_704_067_200_000  # 2024-01-01T00:00Z
SPOT = Path(__file__).parents[2] / ".." / "shared" / "data" / "vision" / "spot"


def _check_candle(bar: Bar) -> None:
    o, h, lo, c = (parse_units(x) for x in (bar.open, bar.high, bar.low, bar.close))
    assert 0 < lo <= min(o, c) <= max(o, c) <= h
    assert parse_units(bar.taker_buy_volume) <= parse_units(bar.volume)
    assert parse_units(bar.taker_buy_quote_volume) <= parse_units(bar.quote_volume)
    for text in (bar.open, bar.high, bar.low, bar.close, bar.volume, bar.quote_volume):
        assert len(text.partition(".")[2]) == 8
    assert bar.trades >= 0


def test_synthetic_candles_are_a_pure_function_of_seed_symbol_interval_time() -> None:
    a = SyntheticMarket(["BTCUSDT", "ETHUSDT"], seed=1)
    b = SyntheticMarket(["ETHUSDT", "BTCUSDT"], seed=1)
    c = SyntheticMarket(["BTCUSDT"], seed=2)
    for interval in INTERVALS:
        t = Interval(interval).floor(T0)
        bar_a, bar_b = a.bar("BTCUSDT", interval, t), b.bar("BTCUSDT", interval, t)
        assert bar_a is not None
        assert bar_b is not None
        assert bar_a == bar_b
        assert bar_a.kline_json(True) == bar_b.kline_json(True)
        assert bar_a != c.bar("BTCUSDT", interval, t)
        assert bar_a.close_time == Interval(interval).close_time(t)
        _check_candle(bar_a)


def test_synthetic_prices_look_like_binance() -> None:
    market = SyntheticMarket(["BTCUSDT", "ADAUSDT"], seed=0)
    bars = [market.bar("BTCUSDT", "1m", T0 + i * 60_000) for i in range(1000)]
    closes = []
    for prev, bar in itertools.pairwise(bars):
        assert prev is not None
        assert bar is not None
        assert prev.close == bar.open  # a random walk: each candle opens where the last closed
        assert bar.open.endswith("000000")  # a 0.01 tick, 8 decimals as Binance prints them
        _check_candle(bar)
        closes.append(float(bar.close))
    assert 3_000 < min(closes) < max(closes) < 300_000
    assert len(set(closes)) > 500
    assert market.bar("XRPUSDT", "1m", T0) is None
    ada = market.bar("ADAUSDT", "1h", T0)
    assert ada is not None
    _check_candle(ada)


def test_open_times_latest_and_first() -> None:
    market = SyntheticMarket(["BTCUSDT"], listing_ms=T0)
    assert market.open_times("BTCUSDT", "1m", 0, T0 + 5 * 60_000, 3, latest=False) == [
        T0,
        T0 + 60_000,
        T0 + 120_000,
    ]
    assert market.open_times("BTCUSDT", "1m", 0, T0 + 5 * 60_000 + 1, 2, latest=True) == [
        T0 + 4 * 60_000,
        T0 + 5 * 60_000,
    ]
    months = market.open_times("BTCUSDT", "1M", T0, T0 + 100 * 86_400_000, 10, latest=True)
    assert months == [T0, 1_706_745_600_000, 1_709_251_200_000, 1_711_929_600_000]


def test_partial_candle_grows_toward_the_final_one() -> None:
    market = SyntheticMarket(["BTCUSDT"], seed=3)
    final = market.bar("BTCUSDT", "1h", T0)
    assert final is not None
    previous = None
    for minute in range(0, 60, 5):
        now = T0 + minute * 60_000 + 123
        p = partial_bar(final, now)
        _check_candle(p)
        assert (p.open, p.open_time, p.close_time) == (
            final.open,
            final.open_time,
            final.close_time,
        )
        assert parse_units(final.low) <= parse_units(p.low)
        assert parse_units(p.high) <= parse_units(final.high)
        assert parse_units(p.volume) <= parse_units(final.volume)
        assert p.trades <= final.trades
        if previous is not None:
            assert parse_units(p.high) >= parse_units(previous.high)
            assert parse_units(p.low) <= parse_units(previous.low)
            assert parse_units(p.volume) >= parse_units(previous.volume)
        previous = p
    assert b'"x":false' in partial_bar(final, T0).kline_json(False)
    assert b'"x":true' in final.kline_json(True)


CSV_MS = "1638057600000,0.00002820,0.00002821,0.00002817,0.00002818,85342.70000000,1638057659999,2.40584425,96,36241.70000000,1.02183287,0\n"
CSV_US = "1735689600000000,93576.00000000,94509.42000000,93489.03000000,94401.14000000,755.99010000,1735693199999999,71068810.55946380,93525,421.08319000,39596777.77992590,0\n"
HEADER = "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,taker_buy_quote_volume,ignore\n"


def test_parse_kline_csv_ms_us_and_header() -> None:
    (ms,) = parse_kline_csv(CSV_MS, "ADABTC", "1m")
    assert (ms.open_time, ms.close_time, ms.open, ms.trades) == (
        1_638_057_600_000,
        1_638_057_659_999,
        "0.00002820",
        96,
    )
    (us,) = parse_kline_csv(HEADER + CSV_US, "BTCUSDT", "1h")
    assert (us.open_time, us.close_time) == (1_735_689_600_000, 1_735_693_199_999)
    assert us.rest_row()[1:6] == (
        "93576.00000000",
        "94509.42000000",
        "93489.03000000",
        "94401.14000000",
        "755.99010000",
    )
    assert parse_kline_csv("", "X", "1m") == []


def test_load_replay_reads_csv_and_zip(tmp_path: Path) -> None:
    (tmp_path / "ADABTC-1m-2021-11-28.csv").write_text(CSV_MS)
    with zipfile.ZipFile(tmp_path / "BTCUSDT-1h-2025-01.zip", "w") as archive:
        archive.writestr("BTCUSDT-1h-2025-01.csv", CSV_US)
    (tmp_path / "README.txt").write_text("not data")
    market = load_replay(tmp_path)
    assert market.symbols == ("ADABTC", "BTCUSDT")
    assert market.series == [("ADABTC", "1m"), ("BTCUSDT", "1h")]
    assert market.first_open_ms == 1_638_057_600_000
    assert market.bar("BTCUSDT", "1h", 1_735_689_600_000) is not None
    assert market.bar("BTCUSDT", "1h", 1_735_693_200_000) is None
    assert market.open_times("BTCUSDT", "1h", 0, 2 * 10**12, 10, latest=True) == [1_735_689_600_000]
    with pytest.raises(SettingsError):
        load_replay(tmp_path / "README.txt")


@pytest.mark.shared_data
@pytest.mark.skipif(not SPOT.is_dir(), reason="../shared/data is absent")
def test_load_replay_of_the_shared_archives_keeps_the_halt_hole() -> None:
    market = load_replay(SPOT)
    day = 1_679_616_000_000  # 2023-03-24
    hours = market.open_times("BTCUSDT", "1h", day, day + 86_399_999, 100, latest=False)
    assert len(hours) == 23
    assert day + 13 * 3_600_000 not in hours


def test_weight_limiter_429_then_418_then_new_window() -> None:
    limiter = WeightLimiter(limit=4, window=60)
    assert [limiter.admit("a", 2, 1.0).status for _ in range(2)] == [200, 200]
    over = limiter.admit("a", 2, 2.0)
    assert (over.status, over.retry_after) == (429, 58.0)
    assert limiter.admit("b", 2, 2.0).status == 200  # per client
    assert [limiter.admit("a", 1, 3.0).status for _ in range(3)] == [429, 429, 418]
    banned = limiter.admit("a", 1, 70.0)
    assert banned.status == 418
    assert banned.until == 123.0
    assert limiter.admit("a", 1, 130.0).status == 200


def test_exchange_clock() -> None:
    clock = ExchangeClock(start_ms=T0, speed=60, origin=100.0)
    assert clock.now_ms(100.0) == T0
    assert clock.now_ms(101.0) == T0 + 60_000
    for t in (T0 + 1, T0 + 59_999, T0 + 123_457):
        assert clock.now_ms(clock.real_at(t)) == t


def test_flags_to_config() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = config_from_args(
        parser.parse_args(
            [
                "--port",
                "0",
                "--speed",
                "60",
                "--symbols",
                "btcusdt,solusdt",
                "--start",
                "2024-01-01",
                "--seed",
                "5",
                "--drop-after",
                "10",
                "--close-after",
                "2.5",
                "--garbage",
                "0.1",
                "--duplicates",
                "0.2",
                "--no-pong",
                "--rest-errors",
                "429:0.05,500:0.05,418:0",
            ]
        )
    )
    assert config.symbols == ("BTCUSDT", "SOLUSDT")
    assert (config.port, config.speed, config.start_ms, config.seed) == (0, 60.0, T0, 5)
    assert (config.drop_after, config.close_after, config.no_pong) == (10, 2.5, True)
    assert config.rest_errors == ((429, 0.05), (500, 0.05))
    assert config_from_args(parser.parse_args([])).port == 9650
    with pytest.raises(SettingsError):
        config_from_args(parser.parse_args(["--garbage", "2"]))


def test_parse_start_and_rest_errors() -> None:
    assert parse_start("2024-01-01T00:00:00Z") == T0
    assert parse_start("2024-01-01 00:01") == T0 + 60_000
    assert parse_start(str(T0)) == T0
    with pytest.raises(SettingsError):
        parse_start("yesterday")
    with pytest.raises(SettingsError):
        parse_rest_errors("429")
    with pytest.raises(SettingsError):
        parse_rest_errors("500:0.7,503:0.7")
