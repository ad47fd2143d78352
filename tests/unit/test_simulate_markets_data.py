"""The futures side of the simulator's pure parts: candle strings per market, listing windows,
exchangeInfo contract types and the statistics' arithmetic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from klinetrio.core.models import parse_utc_ms
from klinetrio.errors import SettingsError
from klinetrio.simulate.exchange_info import contract_types, delivery_ms, split_symbol
from klinetrio.simulate.futures_data import ratio_fields
from klinetrio.simulate.listings import (
    ListingChange,
    ScheduledMarket,
    Window,
    parse_listing,
    windows_of,
)
from klinetrio.simulate.market import SyntheticMarket, format_decimals, partial_bar

T0 = parse_utc_ms("2024-01-01", "t")
MINUTE = 60_000


def _places(text: str) -> int:
    return len(text.partition(".")[2])


def test_futures_candles_are_written_at_the_symbols_precision() -> None:
    spot = SyntheticMarket(["BTCUSDT"], 7).bar("BTCUSDT", "1m", T0)
    usdm = SyntheticMarket(["BTCUSDT"], 7, style="usdm").bar("BTCUSDT", "1m", T0)
    coinm = SyntheticMarket(["BTCUSD_PERP"], 7, style="coinm").bar("BTCUSD_PERP", "1m", T0)
    assert spot is not None
    assert usdm is not None
    assert coinm is not None
    assert {_places(x) for x in spot.rest_row()[1:6]} == {8}
    assert (usdm.open, usdm.close) == (spot.open[:-6], spot.close[:-6])  # same path, 2 decimals
    assert _places(usdm.volume) == 3
    assert coinm.volume.isdigit()  # whole contracts
    assert _places(coinm.quote_volume) == 8  # the base coin
    # 100 USD a contract: the base volume is about contracts x 100 / price.
    assert float(coinm.quote_volume) == pytest.approx(
        int(coinm.volume) * 100 / float(coinm.close), rel=0.01
    )
    for bar in (spot, usdm, coinm):
        partial = partial_bar(bar, T0 + 30_000)
        for final, now in zip(bar.rest_row(), partial.rest_row(), strict=True):
            if isinstance(final, str):
                assert _places(final) == _places(now)


def test_format_decimals_cuts_toward_zero() -> None:
    assert format_decimals(9_354_880_123_456, 2) == "93548.80"
    assert format_decimals(189_399_999_999, 0) == "1893"
    assert format_decimals(12_345_678, 8) == "0.12345678"


@pytest.mark.shared_data
def test_futures_kline_payloads_have_binances_fields_in_order(shared_data: Path) -> None:
    bar = SyntheticMarket(["BTCUSD_PERP"], 7, style="coinm").bar("BTCUSD_PERP", "1m", T0)
    assert bar is not None
    ours = list(json.loads(bar.kline_json(True)))
    for path in (
        shared_data / "ws" / "usdm_combined_kline_frames.jsonl",
        shared_data / "ws" / "futures-cm" / "kline_1m_2021-07-21.jsonl",
    ):
        frame = json.loads(path.read_text().splitlines()[0])
        assert list(frame["data"]) == ["e", "E", "s", "k"]
        assert list(frame["data"]["k"]) == ours


def test_listing_windows_and_the_scheduled_market() -> None:
    changes = (
        ListingChange(market="usdm", symbol="SOLUSDT", after_s=90.0),
        ListingChange(market="usdm", symbol="SOLUSDT", listed=False, at_ms=T0 + 10 * MINUTE),
        ListingChange(market="spot", symbol="SOLUSDT", after_s=0.0),
    )
    windows = windows_of(changes, "usdm", T0)
    assert windows == {"SOLUSDT": Window(T0 + 90_000, T0 + 10 * MINUTE)}
    assert [windows["SOLUSDT"].state(t) for t in (T0, T0 + 90_000, T0 + 10 * MINUTE)] == [
        "pending",
        "trading",
        "delisted",
    ]
    market = ScheduledMarket(SyntheticMarket(["BTCUSDT", "SOLUSDT"], 1), windows)
    times = market.open_times("SOLUSDT", "1m", 0, T0 + 60 * MINUTE, 100, latest=False)
    assert times == [T0 + n * MINUTE for n in range(2, 10)]  # from 00:02, until 00:09
    assert market.bar("SOLUSDT", "1m", T0 + MINUTE) is None
    assert market.bar("SOLUSDT", "1m", T0 + 10 * MINUTE) is None
    assert market.bar("SOLUSDT", "5m", T0 + 5 * MINUTE) is not None  # closes 00:09:59.999
    assert market.bar("SOLUSDT", "3m", T0 + 9 * MINUTE) is None  # would close after 00:10
    assert market.bar("SOLUSDT", "1m", T0 + 9 * MINUTE) is not None
    assert market.open_times("SOLUSDT", "1h", 0, T0 + 60 * MINUTE, 10, latest=True) == []
    assert len(market.open_times("BTCUSDT", "1m", T0, T0 + 60 * MINUTE, 100, latest=False)) == 61


def test_parse_listing() -> None:
    assert parse_listing("usdm:solusdt@600", "--list", True) == ListingChange(
        market="usdm", symbol="SOLUSDT", after_s=600.0
    )
    assert parse_listing("ETHUSDT@2024-01-01T01:00Z", "--delist", False) == ListingChange(
        symbol="ETHUSDT", listed=False, at_ms=T0 + 60 * MINUTE
    )
    assert parse_listing("BTCUSDT@1704067200000", "--list", True).at_ms == T0
    for bad in ("SOLUSDT", "@60", "perp:SOLUSDT@60", "SOLUSDT@soon"):
        with pytest.raises(SettingsError):
            parse_listing(bad, "--list", True)


def test_contract_types_and_assets() -> None:
    types = contract_types(["BTCUSD_PERP", "BTCUSD_240628", "BTCUSD_240329", "ETHUSD_240329"])
    assert types == {
        "BTCUSD_PERP": "PERPETUAL",
        "BTCUSD_240329": "CURRENT_QUARTER",
        "BTCUSD_240628": "NEXT_QUARTER",
        "ETHUSD_240329": "CURRENT_QUARTER",
    }
    assert delivery_ms("BTCUSD_240329") == parse_utc_ms("2024-03-29T08:00", "t")
    assert delivery_ms("BTCUSD_PERP") is None
    assert split_symbol("BTCUSD_PERP") == ("BTC", "USD")
    assert split_symbol("ETHUSDT_240329") == ("ETH", "USDT")


def test_ratio_fields_are_exact_and_consistent() -> None:
    assert ratio_fields(6442) == ("1.8106", "0.6442", "0.3558")
    assert ratio_fields(5000) == ("1.0000", "0.5000", "0.5000")
    assert ratio_fields(3000) == ("0.4286", "0.3000", "0.7000")
