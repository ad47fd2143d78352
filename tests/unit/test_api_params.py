"""The read API's parameter parsing: Binance's checks in Binance's order, klinetrio's own
parameters, and, for any text at all, a query or a 400 — never another exception."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klinetrio.api.params import (
    MAX_CANDLES,
    BadRequest,
    BinanceError,
    KlinesQuery,
    parse_candles,
    parse_klines,
    parse_series_filter,
)
from klinetrio.api.query import etag_matches
from klinetrio.binance.markets import COINM, SPOT, USDM


def test_klines_defaults_and_selection() -> None:
    q = parse_klines({"symbol": "BTCUSDT", "interval": "1h"}, SPOT)
    assert q == KlinesQuery("spot", "BTCUSDT", "1h", None, None, 500)
    assert q.newest
    q = parse_klines(
        {"symbol": "BTCUSDT", "interval": "1M", "startTime": "5", "limit": "1000"}, SPOT
    )
    assert (q.start_ms, q.limit, q.newest) == (5, 1000, False)
    assert (
        parse_klines({"symbol": "BTCUSDT", "interval": "1h", "limit": "1500"}, USDM).limit == 1500
    )
    assert parse_klines({"symbol": "BTCUSD_PERP", "interval": "1d"}, COINM).market == "coinm"


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({}, -1102),
        ({"symbol": "BTCUSDT"}, -1102),
        ({"interval": "1h"}, -1102),
        ({"symbol": "", "interval": "1h"}, -1102),
        ({"symbol": "btcusdt", "interval": "1h"}, -1100),
        ({"symbol": "BTCUSDT", "interval": "1H"}, -1120),
        ({"symbol": "BTCUSDT", "interval": "1h", "limit": "0"}, -1130),
        ({"symbol": "BTCUSDT", "interval": "1h", "limit": "1001"}, -1130),
        ({"symbol": "BTCUSDT", "interval": "1h", "limit": "-5"}, -1100),
        ({"symbol": "BTCUSDT", "interval": "1h", "endTime": "1e9"}, -1100),
        ({"symbol": "BTCUSDT", "interval": "1h", "startTime": "9", "endTime": "8"}, -1023),
    ],
)
def test_klines_errors(query: dict[str, str], code: int) -> None:
    with pytest.raises(BinanceError) as caught:
        parse_klines(query, SPOT)
    assert caught.value.code == code
    assert caught.value.status == 400


def test_futures_refuse_one_second_candles() -> None:
    with pytest.raises(BinanceError, match="Invalid interval"):
        parse_klines({"symbol": "BTCUSDT", "interval": "1s"}, USDM)


def test_candles_parameters() -> None:
    q = parse_candles(
        {"symbol": " ethusdt ", "interval": "4h", "start": "2024-01", "end": "1706745600000"}
    )
    assert (q.symbol, q.interval.name, q.start_ms, q.end_ms) == (
        "ETHUSDT",
        "4h",
        1704067200000,
        1706745600000,
    )
    assert (q.limit, q.format, q.market) == (1000, "json", "spot")
    q = parse_candles(
        {
            "symbol": "X1",
            "interval": "1m",
            "limit": str(MAX_CANDLES),
            "format": "CSV",
            "market": "USDM",
        }
    )
    assert (q.limit, q.format, q.market) == (MAX_CANDLES, "csv", "usdm")


def test_series_filter_lists() -> None:
    f = parse_series_filter({"symbol": "btcusdt,ETHUSDT,", "interval": "1h,1d"})
    assert f == parse_series_filter({"symbol": "BTCUSDT,ETHUSDT", "interval": "1h,1d"})
    assert f.symbols == ("BTCUSDT", "ETHUSDT")
    assert f.market is None
    with pytest.raises(BadRequest):
        parse_series_filter({"interval": "1h,2w"})


def test_etag_matching() -> None:
    assert etag_matches('"a", "b"', '"b"')
    assert etag_matches('W/"b"', '"b"')
    assert etag_matches("*", '"b"')
    assert not etag_matches('"ab"', '"b"')
    assert not etag_matches(None, '"b"')


KEYS = st.sampled_from(
    ["symbol", "interval", "startTime", "endTime", "limit", "start", "end", "format", "market", "x"]
)
VALUES = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        ["BTCUSDT", "1h", "1M", "2024-01-01T00:00Z", "2024-02-30", "9" * 25, "0", "10000"]
    ),
    st.integers(-(10**30), 10**30).map(str),
)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(KEYS, VALUES, max_size=6))
def test_any_query_is_a_query_or_a_clean_error(query: dict[str, str]) -> None:
    for market in (SPOT, USDM, COINM):
        code = 0
        try:
            q = parse_klines(query, market)
        except BinanceError as exc:
            code = exc.code
        else:
            assert 1 <= q.limit <= market.kline_page
        assert code in (0, -1100, -1102, -1120, -1130, -1023)
    for parse in (parse_candles, parse_series_filter):
        message = None
        try:
            parse(query)
        except BadRequest as exc:
            message = str(exc)
        assert message is None or message
