"""Decoding Binance's wire formats: real WebSocket frames and REST bodies, and malformed ones."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest

from klinetrio.binance import wire
from klinetrio.binance.wire import (
    KlineEvent,
    RestKline,
    StreamEnvelope,
    Subscribe,
    api_error_decoder,
    combined_decoder,
    command_error_decoder,
    command_result_decoder,
    exchange_info_decoder,
    raw_event_decoder,
    rest_klines_decoder,
    server_time_decoder,
    shutdown_decoder,
)
from klinetrio.core.intervals import Interval
from klinetrio.core.models import Candle
from klinetrio.core.weights import request_weight_limit

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"

# Our field name → Binance's key in the "k" object.
KLINE_KEYS = {
    "open_time": "t",
    "close_time": "T",
    "symbol": "s",
    "interval": "i",
    "open": "o",
    "close": "c",
    "high": "h",
    "low": "l",
    "volume": "v",
    "trades": "n",
    "closed": "x",
    "quote_volume": "q",
    "taker_buy_volume": "V",
    "taker_buy_quote_volume": "Q",
}
REST_FIELDS = list(RestKline.__struct_fields__)
PRICE_FIELDS = ("open", "high", "low", "close", "volume", "quote_volume")


def data_file(*parts: str) -> Path:
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path}")
    return path


def lines(path: Path) -> list[bytes]:
    return [line for line in path.read_bytes().splitlines() if line.strip()]


def rest_json_params() -> list[object]:
    files = sorted(p for p in DATA.glob("rest/*.json") if not p.name.startswith("exchangeInfo"))
    if not files:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"needs {DATA}/rest"))]
    return [pytest.param(p, id=p.name, marks=pytest.mark.shared_data) for p in files]


def assert_kline_matches(kline: wire.Kline, raw: dict[str, Any]) -> None:
    for field, key in KLINE_KEYS.items():
        assert getattr(kline, field) == raw[key], field
        assert type(getattr(kline, field)) is type(raw[key]), field


def assert_candle_of_kline(candle: Candle, kline: wire.Kline, source: str) -> None:
    assert candle.close_time_us == kline.close_time * 1000
    assert candle.open_time == kline.open_time
    assert (candle.symbol, candle.interval, candle.source) == (kline.symbol, kline.interval, source)
    for field in (*PRICE_FIELDS, "trades", "taker_buy_volume", "taker_buy_quote_volume"):
        assert getattr(candle, field) == getattr(kline, field)


def kline_frame(**changes: Any) -> dict[str, Any]:
    k = {
        "t": 1672531200000,
        "T": 1672531259999,
        "s": "BTCUSDT",
        "i": "1m",
        "f": 1,
        "L": 2,
        "o": "16541.77000000",
        "c": "16529.67000000",
        "h": "16545.70000000",
        "l": "16508.39000000",
        "v": "4.36483570",
        "n": 2,
        "x": True,
        "q": "72146.29358672",
        "V": "2.17994772",
        "Q": "36032.35287035",
        "B": "0",
    }
    k.update(changes)
    return {"e": "kline", "E": 1672531260001, "s": "BTCUSDT", "k": k}


# --- WebSocket frames ------------------------------------------------------------------------


def test_every_spot_combined_frame_decodes_and_exactly_two_are_closed() -> None:
    frames = lines(data_file("ws", "spot_combined_kline_frames.jsonl"))
    assert len(frames) == 39
    events = [combined_decoder.decode(frame) for frame in frames]
    assert all(isinstance(e, StreamEnvelope) for e in events)
    assert sum(e.data.kline.closed for e in events) == 2
    for frame, envelope in zip(frames, events, strict=True):
        raw = json.loads(frame)
        assert envelope.stream == raw["stream"]
        event = envelope.data
        assert event.event_time == raw["data"]["E"]
        assert event.symbol == raw["data"]["s"] == event.kline.symbol
        assert envelope.stream == f"{event.symbol.lower()}@kline_{event.kline.interval}"
        assert_kline_matches(event.kline, raw["data"]["k"])


def test_closed_spot_frames_become_candles_with_microsecond_close_times() -> None:
    frames = lines(data_file("ws", "spot_combined_kline_frames.jsonl"))
    closed = [e.data.kline for e in map(combined_decoder.decode, frames) if e.data.kline.closed]
    assert {k.symbol for k in closed} == {"FTMUSDT", "SXPBTC"}
    for kline in closed:
        candle = kline.to_candle()
        assert_candle_of_kline(candle, kline, "ws")
        assert (
            candle.close_time_us
            == Interval.parse(kline.interval).close_time(kline.open_time) * 1000
        )
        assert candle.market == "spot"


def test_tiny_prices_stay_the_exact_strings_binance_sent() -> None:
    frames = lines(data_file("ws", "spot_combined_kline_frames.jsonl"))
    klines = [combined_decoder.decode(frame).data.kline for frame in frames]
    prices = {getattr(k, f) for k in klines for f in ("open", "high", "low", "close")}
    assert "0.00007489" in prices
    candles = [k.to_candle() for k in klines]
    assert any(c.low == "0.00007489" or c.open == "0.00007489" for c in candles)
    assert all(isinstance(getattr(c, f), str) for c in candles for f in PRICE_FIELDS)


def test_every_usdm_combined_frame_decodes_and_four_are_closed() -> None:
    frames = lines(data_file("ws", "usdm_combined_kline_frames.jsonl"))
    assert len(frames) == 67
    events = [combined_decoder.decode(frame) for frame in frames]
    assert sum(e.data.kline.closed for e in events) == 4
    for frame, envelope in zip(frames, events, strict=True):
        assert_kline_matches(envelope.data.kline, json.loads(frame)["data"]["k"])


def test_raw_5m_frames_are_one_candle_up_to_its_close_then_the_next() -> None:
    frames = lines(data_file("ws", "spot_raw_btcusdt_kline_5m.jsonl"))
    assert len(frames) == 33
    events = [raw_event_decoder.decode(frame) for frame in frames]
    assert all(isinstance(e, KlineEvent) for e in events)
    klines = [e.kline for e in events]
    closed_at = [i for i, k in enumerate(klines) if k.closed]
    assert len(closed_at) == 1
    (last,) = closed_at
    first_open = klines[0].open_time
    five_minutes = Interval.parse("5m")
    assert all(k.open_time == first_open for k in klines[: last + 1])
    assert all(k.open_time == five_minutes.next_open(first_open) for k in klines[last + 1 :])
    assert last + 1 < len(klines)
    assert [e.event_time for e in events] == sorted(e.event_time for e in events)
    for frame, event in zip(frames, events, strict=True):
        assert (event.symbol, event.kline.symbol, event.kline.interval) == ("BTCUSDT",) * 2 + (
            "5m",
        )
        assert event.kline.close_time == five_minutes.close_time(event.kline.open_time)
        assert_kline_matches(event.kline, json.loads(frame)["k"])
    candle = klines[last].to_candle()
    assert candle.close_time_us == klines[last].close_time * 1000
    assert candle.open_time == first_open


def _misc_frames() -> list[dict[str, Any]]:
    return [
        json.loads(line)["frame"] for line in lines(data_file("ws", "misc_quoted_frames.jsonl"))
    ]


def _decode_any(frame: dict[str, Any]) -> KlineEvent:
    body = json.dumps(frame).encode()
    if "stream" in frame:
        return combined_decoder.decode(body).data
    return raw_event_decoder.decode(body)


def test_every_misc_quoted_frame_decodes_combined_or_raw() -> None:
    frames = _misc_frames()
    assert len(frames) == 7
    assert sum("stream" in frame for frame in frames) == 1
    for frame in frames:
        event = _decode_any(frame)
        raw = frame["data"] if "stream" in frame else frame
        assert event.event_time == raw["E"]
        assert_kline_matches(event.kline, raw["k"])
        assert_candle_of_kline(event.kline.to_candle("ws"), event.kline, "ws")


def test_one_second_candle_without_trades_decodes() -> None:
    frames = [f for f in _misc_frames() if f.get("k", {}).get("f") == -1]
    assert len(frames) == 1
    (frame,) = frames
    assert frame["k"]["L"] == -1
    kline = raw_event_decoder.decode(json.dumps(frame).encode()).kline
    assert (kline.interval, kline.trades, kline.closed) == ("1s", 0, True)
    assert kline.close_time == kline.open_time + 999
    assert kline.open == kline.close == kline.high == kline.low == "1870.76000000"
    candle = kline.to_candle()
    assert candle.volume == "0.00000000"
    assert candle.trades == 0
    assert candle.close_time_us == 1682244927999000


def test_event_fields_the_struct_does_not_name_are_ignored() -> None:
    frame = kline_frame(B="123", extra={"nested": [1, 2]})
    frame["unexpected"] = True
    kline = raw_event_decoder.decode(json.dumps(frame).encode()).kline
    assert kline.open == "16541.77000000"


def test_kline_to_candle_takes_the_source() -> None:
    kline = raw_event_decoder.decode(json.dumps(kline_frame()).encode()).kline
    assert kline.to_candle().source == "ws"
    assert kline.to_candle("archive").source == "archive"
    assert kline.to_candle().close_time_us == 1672531259999000


# --- malformed frames ------------------------------------------------------------------------


def test_validation_error_is_a_decode_error() -> None:
    assert issubclass(msgspec.ValidationError, msgspec.DecodeError)


def _without_k() -> dict[str, Any]:
    frame = kline_frame()
    del frame["k"]
    return frame


def _without_kline_key(key: str) -> dict[str, Any]:
    frame = kline_frame()
    del frame["k"][key]
    return frame


MALFORMED_RAW = {
    "missing-k": json.dumps(_without_k()).encode(),
    "missing-close-time": json.dumps(_without_kline_key("T")).encode(),
    "missing-closed-flag": json.dumps(_without_kline_key("x")).encode(),
    "open-time-not-int": json.dumps(kline_frame(t="abc")).encode(),
    "open-time-float": json.dumps(kline_frame(t=1.5)).encode(),
    "price-as-float": json.dumps(kline_frame(o=16541.77)).encode(),
    "trades-as-string": json.dumps(kline_frame(n="5")).encode(),
    "closed-as-string": json.dumps(kline_frame(x="true")).encode(),
    "k-not-object": json.dumps({**kline_frame(), "k": [1, 2]}).encode(),
    "unknown-event-type": json.dumps({**kline_frame(), "e": "trade"}).encode(),
    "event-time-null": json.dumps({**kline_frame(), "E": None}).encode(),
    "array": b"[]",
    "null": b"null",
}


@pytest.mark.parametrize("frame", MALFORMED_RAW.values(), ids=MALFORMED_RAW.keys())
def test_malformed_raw_frames_raise_validation_error(frame: bytes) -> None:
    with pytest.raises(msgspec.ValidationError):
        raw_event_decoder.decode(frame)


@pytest.mark.parametrize(
    "frame",
    [b"", b"{", b'{"e":"kline",', b"not json", b'{"e":"kline"}}', b"\xff\xfe"],
    ids=["empty", "open-brace", "truncated", "text", "trailing", "binary"],
)
@pytest.mark.parametrize("decoder", [raw_event_decoder, combined_decoder], ids=["raw", "combined"])
def test_invalid_json_raises_decode_error(decoder: msgspec.json.Decoder[Any], frame: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        decoder.decode(frame)


@pytest.mark.parametrize(
    "frame",
    [
        {"stream": "btcusdt@kline_1m"},
        {"data": kline_frame()},
        {"stream": 1, "data": kline_frame()},
        {"stream": "btcusdt@trade", "data": {**kline_frame(), "e": "trade"}},
        {"stream": "btcusdt@kline_1m", "data": kline_frame(t="abc")},
        {"result": None, "id": 1},
        kline_frame(),  # a raw frame is not an envelope
    ],
    ids=["no-data", "no-stream", "stream-not-str", "trade-event", "bad-kline", "command", "raw"],
)
def test_malformed_combined_frames_raise_validation_error(frame: dict[str, Any]) -> None:
    with pytest.raises(msgspec.ValidationError):
        combined_decoder.decode(json.dumps(frame).encode())


# --- other WebSocket messages ----------------------------------------------------------------


def test_command_result_and_error_decode() -> None:
    assert command_result_decoder.decode(b'{"result":null,"id":1}').id == 1
    assert command_result_decoder.decode(b'{"result":["btcusdt@kline_1m"],"id":"a"}').result == [
        "btcusdt@kline_1m"
    ]
    error = command_error_decoder.decode(b'{"error":{"code":2,"msg":"Invalid request"},"id":7}')
    assert (error.error.code, error.error.msg, error.id) == (2, "Invalid request", 7)
    with pytest.raises(msgspec.ValidationError):
        command_error_decoder.decode(b'{"result":null,"id":1}')


def test_server_shutdown_notice_decodes_and_kline_frames_are_not_one() -> None:
    notice = shutdown_decoder.decode(b'{"stream":"x","data":{"e":"serverShutdown","E":17}}')
    assert notice.data.event_time == 17
    with pytest.raises(msgspec.ValidationError):
        shutdown_decoder.decode(
            json.dumps({"stream": "btcusdt@kline_1m", "data": kline_frame()}).encode()
        )


def test_subscribe_request_encodes_as_binance_expects() -> None:
    request = Subscribe(method="SUBSCRIBE", params=["btcusdt@kline_1m", "ethusdt@kline_1h"], id=3)
    assert json.loads(wire.encoder.encode(request)) == {
        "method": "SUBSCRIBE",
        "params": ["btcusdt@kline_1m", "ethusdt@kline_1h"],
        "id": 3,
    }


def test_server_time_decodes() -> None:
    assert server_time_decoder.decode(b'{"serverTime":1633998511098}').serverTime == 1633998511098


# --- REST ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", rest_json_params())
def test_every_real_rest_klines_body_decodes_row_for_row(path: Path | None) -> None:
    if path is None:
        pytest.skip("needs ../shared/data")
    body = path.read_bytes()
    rows = rest_klines_decoder.decode(body)
    raw = json.loads(body)
    assert len(rows) == len(raw) > 0
    for row, values in zip(rows, raw, strict=True):
        assert isinstance(row, RestKline)
        assert [getattr(row, f) for f in REST_FIELDS] == values
        assert all(isinstance(getattr(row, f), str) for f in PRICE_FIELDS)
        candle = row.to_candle("BTCUSDT", path.name.split("_")[1])
        assert candle.close_time_us == row.close_time * 1000
        assert candle.open_time == row.open_time
        assert candle.source == "rest"
        assert (candle.open, candle.high, candle.low, candle.close) == tuple(values[1:5])
        assert candle.trades == values[8]


def test_rest_row_with_an_in_progress_candle_keeps_its_nominal_close_time() -> None:
    path = data_file("rest", "BTCUSDT_1m_2021-10-22_with-open-candle.json")
    rows = rest_klines_decoder.decode(path.read_bytes())
    assert len(rows) == 10
    minute = Interval.parse("1m")
    assert [r.open_time for r in rows] == list(
        minute.open_times(rows[0].open_time, rows[-1].open_time + 1)
    )
    last = rows[-1]
    # Binance reports the close time the candle will have, not the time of the response:
    # only a comparison with the exchange's now tells that it is unfinished.
    assert last.close_time == minute.close_time(last.open_time) == 1634944379999
    assert (last.open, last.high, last.low, last.close) == ("60739.85000000",) * 4
    assert (last.volume, last.trades) == ("0.04734000", 7)
    assert last.to_candle("BTCUSDT", "1m").close_time_us == 1634944379999000


def test_rest_row_without_the_ignore_column_decodes() -> None:
    row = [1, "1.0", "2.0", "0.5", "1.5", "10", 59999, "15", 3, "4", "6"]
    (decoded,) = rest_klines_decoder.decode(json.dumps([row]).encode())
    assert decoded.ignore == "0"
    assert decoded.taker_buy_quote_volume == "6"


def test_empty_rest_body_is_no_rows() -> None:
    assert rest_klines_decoder.decode(b"[]") == []


@pytest.mark.parametrize(
    "row",
    [
        ["1", "1.0", "2.0", "0.5", "1.5", "10", 59999, "15", 3, "4", "6", "0"],
        [1, 1.0, "2.0", "0.5", "1.5", "10", 59999, "15", 3, "4", "6", "0"],
        [1, "1.0", "2.0", "0.5", "1.5", "10", 59999, "15", "3", "4", "6", "0"],
        [1, "1.0", "2.0", "0.5", "1.5", "10", 59999, "15", 3],
        {"open_time": 1},
    ],
    ids=["open-time-str", "price-float", "trades-str", "too-short", "object"],
)
def test_ill_typed_rest_rows_raise_validation_error(row: object) -> None:
    with pytest.raises(msgspec.ValidationError):
        rest_klines_decoder.decode(json.dumps([row]).encode())


def test_rest_error_body_is_not_a_kline_list() -> None:
    with pytest.raises(msgspec.ValidationError):
        rest_klines_decoder.decode(b'{"code":-1121,"msg":"Invalid symbol."}')


def test_exchange_info_decodes_every_symbol_and_the_rate_limits() -> None:
    info = exchange_info_decoder.decode(
        data_file("rest", "exchangeInfo_2021-10-11.json").read_bytes()
    )
    assert info.timezone == "UTC"
    assert info.serverTime == 1633998511098
    assert len(info.symbols) == 1695
    assert sum(s.status == "BREAK" for s in info.symbols) == 433
    btc = next(s for s in info.symbols if s.symbol == "BTCUSDT")
    assert (btc.status, btc.baseAsset, btc.quoteAsset) == ("TRADING", "BTC", "USDT")
    weight = [r for r in info.rateLimits if r.rateLimitType == "REQUEST_WEIGHT"]
    assert [(r.interval, r.intervalNum, r.limit) for r in weight] == [("MINUTE", 1, 1200)]
    assert {r.rateLimitType for r in info.rateLimits} == {
        "REQUEST_WEIGHT",
        "ORDERS",
        "RAW_REQUESTS",
    }


def test_exchange_info_without_optional_fields_takes_defaults() -> None:
    info = exchange_info_decoder.decode(b'{"symbols":[{"symbol":"BTCUSDT"}]}')
    assert info.rateLimits == []
    assert info.symbols[0].state == "TRADING"


@pytest.mark.parametrize(
    ("path", "symbols", "states"),
    [
        (
            ("rest", "futures-um", "fapi_exchangeInfo_2021-07-21.json"),
            122,
            {"TRADING": 121, "PENDING_TRADING": 1},
        ),
        (("rest", "futures-cm", "dapi_exchangeInfo_2021-07-21.json"), 36, {"TRADING": 36}),
    ],
)
def test_real_futures_exchange_info_decodes_with_each_markets_status_field(
    path: tuple[str, ...], symbols: int, states: dict[str, int]
) -> None:
    info = exchange_info_decoder.decode(data_file(*path).read_bytes())
    assert len(info.symbols) == symbols
    assert Counter(s.state for s in info.symbols) == states
    assert request_weight_limit(info.rateLimits) == (2400, 60.0)


def test_real_api_error_bodies_decode() -> None:
    text = data_file("rest", "error_bodies.txt").read_text()
    bodies = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    errors = [api_error_decoder.decode(body) for body in bodies]
    assert [e.code for e in errors] == [-1121, -1003, -1003, -1003]
    assert errors[0].msg == "Invalid symbol."
    assert "IP banned until 1660090423228" in errors[2].msg
    assert "IP banned until 1659761931230" in errors[3].msg


@pytest.mark.parametrize(
    "body",
    [b"<html>502 Bad Gateway</html>", b'{"code":"x","msg":"m"}', b'{"msg":"no code"}', b"[]"],
    ids=["html", "code-str", "no-code", "array"],
)
def test_api_error_decoder_rejects_what_is_not_an_error_body(body: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        api_error_decoder.decode(body)
