"""The stream kinds beside klines decode from the real frames in ``../shared/data``."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from klinetrio.binance import wire_kinds as wk


def _frames(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()]


def _quoted(shared_data: Path, needle: str) -> list[str]:
    raws = []
    for path in sorted((shared_data / "ws" / "quoted").glob("*.jsonl")):
        for line in _frames(path):
            raw = json.loads(line)["raw"]
            if needle in raw:
                raws.append(raw)
    return raws


def _data(frame: str, kind: wk.Kind, market: str) -> wk.Event:
    envelope = wk.envelope_decoder.decode(frame)
    assert "@" + wk.STREAM_SUFFIX[kind] in envelope.stream
    return wk.decode_data(kind, envelope.data, market)


def test_spot_agg_trades(shared_data: Path) -> None:
    frames = _frames(shared_data / "ws" / "spot" / "aggTrade_frames.jsonl")
    assert len(frames) == 54
    for frame in frames:
        trade = _data(frame, "aggTrade", "spot")
        assert isinstance(trade, wk.AggTrade)
        raw = json.loads(frame)["data"]
        row = trade.row("spot")
        assert row == (
            "spot", raw["s"], raw["T"], raw["a"], raw["p"], raw["q"], raw["f"], raw["l"],
            raw["m"], "ws",
        )  # fmt: skip


def test_futures_agg_trades_without_best_match(shared_data: Path) -> None:
    for name in ("futures-um/aggTrade_frames.jsonl", "futures-cm/aggTrade_2021-07-21.jsonl"):
        for frame in _frames(shared_data / "ws" / name):
            trade = _data(frame, "aggTrade", "usdm")
            assert isinstance(trade, wk.AggTrade)
            assert trade.price == json.loads(frame)["data"]["p"]


def test_spot_book_tickers_take_the_receive_time(shared_data: Path) -> None:
    frames = _frames(shared_data / "ws" / "spot" / "bookTicker_frames.jsonl")
    assert len(frames) == 1066
    for frame in frames:
        ticker = _data(frame, "bookTicker", "spot")
        assert isinstance(ticker, wk.BookTicker)
        raw = json.loads(frame)["data"]
        assert ticker.row("spot", 1234) == (
            "spot", raw["s"], 1234, raw["u"], raw["b"], raw["B"], raw["a"], raw["A"],
        )  # fmt: skip


def test_futures_book_tickers_take_their_transaction_time(shared_data: Path) -> None:
    for frame in _frames(shared_data / "ws" / "futures-um" / "bookTicker_2021-07-22.jsonl"):
        ticker = _data(frame, "bookTicker", "usdm")
        assert isinstance(ticker, wk.BookTicker)
        assert ticker.row("usdm", 1)[2] == json.loads(frame)["data"]["T"]


def test_quoted_24hr_tickers(shared_data: Path) -> None:
    raws = [r for r in _quoted(shared_data, '"24hrTicker"') if "@ticker" in r and "!" not in r]
    assert raws
    for raw in raws:
        ticker = _data(raw, "ticker", "spot")
        assert isinstance(ticker, wk.Ticker)
        data = json.loads(raw)["data"]
        row = ticker.row("spot")
        assert row[2:] == (
            data["E"], data["o"], data["h"], data["l"], data["c"], data["v"], data["q"],
            data["P"], data["w"], data["n"],
        )  # fmt: skip


def test_quoted_spot_depth20_keeps_the_exact_strings(shared_data: Path) -> None:
    raws = [r for r in _quoted(shared_data, "lastUpdateId") if '"stream"' in r]
    assert len(raws) >= 2
    for raw in raws:
        depth = _data(raw, "depth", "spot")
        assert isinstance(depth, wk.PartialDepth)
        data = json.loads(raw)["data"]
        _, _symbol, time, last, bids, asks = depth.row("spot", "FLMUSDT", 99)
        assert (time, last) == (99, data["lastUpdateId"])
        assert json.loads(bids) == data["bids"]
        assert json.loads(asks) == data["asks"]


def test_quoted_futures_depth20(shared_data: Path) -> None:
    raws = [r for r in _quoted(shared_data, "@depth20") if '"depthUpdate"' in r]
    assert raws
    for raw in raws:
        depth = _data(raw, "depth", "usdm")
        assert isinstance(depth, wk.FuturesPartialDepth)
        assert depth.row("usdm", depth.symbol, 0)[3] == json.loads(raw)["data"]["u"]


def test_rest_responses(shared_data: Path) -> None:
    rest = shared_data / "rest" / "spot"
    trades = wk.rest_agg_trades_decoder.decode(
        (rest / "aggTrades_BTCUSDT_2021-10-22.json").read_bytes()
    )
    assert [t.agg_id for t in trades] == list(range(966492862, 966492872))
    depth = wk.rest_depth_decoder.decode(
        (rest / "depth_BTCUSDT_limit10_2021-10-22.json").read_bytes()
    )
    assert depth.last_update_id == 14527958487
    assert len(depth.bids) == len(depth.asks) == 10
    ticker = wk.rest_ticker_decoder.decode(
        (rest / "ticker24hr_BTCUSDT_2021-10-22.json").read_bytes()
    )
    assert ticker.count == 1580643


def test_a_kline_frame_is_not_a_trade() -> None:
    frame = '{"stream":"btcusdt@aggTrade","data":{"e":"kline","E":1}}'
    envelope = wk.envelope_decoder.decode(frame)
    with pytest.raises(msgspec.DecodeError):
        wk.decode_data("aggTrade", envelope.data, "spot")


def test_stream_names() -> None:
    assert wk.stream_name("BTCUSDT", "depth") == "btcusdt@depth20"
    assert wk.stream_name("BTCUSDT", "aggTrade") == "btcusdt@aggTrade"
