"""Futures statistics: which symbols are polled and how each series is asked for."""

from __future__ import annotations

import msgspec

from klinetrio.binance.wire import open_interest_rows_decoder, ratio_rows_decoder
from klinetrio.futures_stats import Series, pollable


def test_usdm_symbols_and_coinm_perpetuals_are_polled() -> None:
    assert pollable("usdm", "BTCUSDT")
    assert pollable("coinm", "BTCUSD_PERP")
    assert not pollable("coinm", "BTCUSD_211231")  # delivery contracts have no pair statistics
    assert not pollable("spot", "BTCUSDT")


def test_each_kind_has_its_endpoint_and_parameters() -> None:
    assert Series("usdm", "BTCUSDT", "top_position").endpoint == "topLongShortPositionRatio"
    assert Series("usdm", "BTCUSDT", "top_account").endpoint == "topLongShortAccountRatio"
    assert Series("usdm", "BTCUSDT", "global_account").endpoint == "globalLongShortAccountRatio"
    assert Series("usdm", "BTCUSDT", "open_interest").endpoint == "openInterestHist"
    assert Series("usdm", "BTCUSDT", "top_account").params("5m") == {
        "symbol": "BTCUSDT",
        "period": "5m",
    }
    # COIN-M asks by pair; open interest also by contract type.
    assert Series("coinm", "BTCUSD_PERP", "global_account").params("1h") == {
        "pair": "BTCUSD",
        "period": "1h",
    }
    assert Series("coinm", "BTCUSD_PERP", "open_interest").params("1h") == {
        "pair": "BTCUSD",
        "contractType": "PERPETUAL",
        "period": "1h",
    }


def test_documented_answers_decode_exactly() -> None:
    # The shapes of Binance's documentation (USD-M and COIN-M).
    usdm = ratio_rows_decoder.decode(
        b'[{"symbol":"BTCUSDT","longShortRatio":"1.8105","longAccount":"0.6442",'
        b'"shortAccount":"0.3558","timestamp":1583139600000}]'
    )
    assert (usdm[0].long_share, usdm[0].short_share, usdm[0].timestamp) == (
        "0.6442",
        "0.3558",
        1583139600000,
    )
    coinm = ratio_rows_decoder.decode(
        b'[{"pair":"BTCUSD","longShortRatio":"0.7869","longPosition":"0.4404",'
        b'"shortPosition":"0.5596","timestamp":"1583139600000"}]'
    )
    assert (coinm[0].pair, coinm[0].long_share, coinm[0].timestamp) == (
        "BTCUSD",
        "0.4404",
        1583139600000,
    )
    interest = open_interest_rows_decoder.decode(
        b'[{"symbol":"BTCUSDT","sumOpenInterest":"20403.63700000",'
        b'"sumOpenInterestValue":"150570784.07809979","timestamp":1583127900000}]'
    )
    assert interest[0].sumOpenInterest == "20403.63700000"  # the exchange's scale, kept
    assert msgspec.json.encode(interest[0].sumOpenInterestValue) == b'"150570784.07809979"'
