"""binance.markets: what differs per market (paths, pages, weights, pace, names)."""

from __future__ import annotations

import pytest

from klinetrio.binance.markets import MARKETS, market_named
from klinetrio.errors import SettingsError


@pytest.mark.parametrize(
    ("market", "klines", "page", "limit", "pace"),
    [
        ("spot", "/api/v3/klines", 1000, 6000, 5),
        ("usdm", "/fapi/v1/klines", 1500, 2400, 10),
        ("coinm", "/dapi/v1/klines", 1500, 2400, 10),
    ],
)
def test_each_market_has_its_paths_page_limits_and_pace(
    market: str, klines: str, page: int, limit: int, pace: int
) -> None:
    m = MARKETS[market]
    assert m.klines_path == klines
    assert m.kline_page == page
    assert m.default_weight_limit == limit
    assert m.messages_per_second == pace
    assert m.streams_per_connection == 1024
    # Requests on a connection are paced below the market's incoming message limit.
    assert m.subscribe_pace_s >= 1 / pace


@pytest.mark.parametrize(
    ("limit", "weight"),
    [(1, 1), (99, 1), (100, 2), (499, 2), (500, 5), (1000, 5), (1001, 10), (1500, 10)],
)
def test_futures_klines_weights_follow_the_limit(limit: int, weight: int) -> None:
    assert MARKETS["usdm"].klines_weight(limit) == weight
    assert MARKETS["coinm"].klines_weight(limit) == weight


def test_spot_klines_weight_is_two_per_request() -> None:
    assert {MARKETS["spot"].klines_weight(n) for n in (1, 500, 1000)} == {2}


@pytest.mark.parametrize(
    ("market", "good", "bad"),
    [
        ("spot", ["BTCUSDT", "1000SATSUSDT"], ["BTC_USDT", "B"]),
        ("usdm", ["BTCUSDT", "BTCUSDT_211231"], ["BTCUSD_PERP_X"]),
        ("coinm", ["BTCUSD_PERP", "ETHUSD_211231"], ["BTCUSD", "BTCUSDT"]),
    ],
)
def test_symbol_naming_per_market(market: str, good: list[str], bad: list[str]) -> None:
    m = MARKETS[market]
    assert all(m.valid_symbol(name) for name in good)
    assert not any(m.valid_symbol(name) for name in bad)


def test_futures_have_no_one_second_candles_and_archives_their_folders() -> None:
    assert "1s" not in MARKETS["spot"].intervals_unsupported
    assert MARKETS["usdm"].intervals_unsupported == ("1s",)
    assert [MARKETS[m].archive_path for m in MARKETS] == ["spot", "futures/um", "futures/cm"]
    assert MARKETS["coinm"].status_field == "contractStatus"


def test_an_unknown_market_is_a_settings_error() -> None:
    assert market_named(" USDM ") is MARKETS["usdm"]
    with pytest.raises(SettingsError, match="spot, usdm or coinm"):
        market_named("margin")
