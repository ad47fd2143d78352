"""RESP encoding and reply parsing (pure), and the Redis names and payloads of DESIGN.md."""

from __future__ import annotations

import json

import msgspec
import pytest

from klinetrio.binance import wire
from klinetrio.errors import SettingsError
from klinetrio.fanout import Observed
from klinetrio.outputs.redis import RequestBuilder, request_for, symbols_commands
from klinetrio.outputs.resp import RespError, _Parser, encode, parse_redis_url


def test_commands_are_arrays_of_bulk_strings() -> None:
    assert encode([[b"SET", b"k", b"v"], [b"PING"]]) == (
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*1\r\n$4\r\nPING\r\n"
    )


def test_replies_of_every_kind_in_order_even_split_across_reads() -> None:
    stream = b"+OK\r\n:42\r\n$5\r\nhello\r\n$-1\r\n*2\r\n:1\r\n$2\r\nab\r\n-ERR wrong type\r\n"
    expected = [b"OK", 42, b"hello", None, [1, b"ab"], RespError("ERR wrong type")]
    for cut in range(len(stream) + 1):
        parser = _Parser()
        got = []
        for chunk in (stream[:cut], stream[cut:]):
            parser.feed(chunk)
            while True:
                done, reply = parser.next()
                if not done:
                    break
                got.append(reply)
        assert got == expected, cut


@pytest.mark.parametrize(
    ("url", "parts"),
    [
        ("redis://127.0.0.1:6379/0", ("127.0.0.1", 6379, 0, None, None)),
        ("redis://cache", ("cache", 6379, 0, None, None)),
        ("redis://:s%40cret@host:7000/3", ("host", 7000, 3, None, "s@cret")),
        ("redis://me:pw@host/1", ("host", 6379, 1, "me", "pw")),
    ],
)
def test_redis_urls(url: str, parts: tuple[object, ...]) -> None:
    a = parse_redis_url(url)
    assert (a.host, a.port, a.db, a.username, a.password) == parts


@pytest.mark.parametrize("url", ["http://host", "redis://", "redis://host/x", "redis://h:99x"])
def test_bad_redis_urls(url: str) -> None:
    with pytest.raises(SettingsError, match="KLINETRIO_REDIS_URL"):
        parse_redis_url(url)


def observed(market: str, closed: bool, open_time: int = 1_700_000_000_000) -> Observed:
    k = {
        "t": open_time, "T": open_time + 3_599_999, "s": "BTCUSDT", "i": "1h", "f": 1, "L": 2,
        "o": "1.10", "c": "1.20", "h": "1.30", "l": "1.00", "v": "5.5", "n": 7, "x": closed,
        "q": "6.6", "V": "2.2", "Q": "3.3", "B": "0",
    }  # fmt: skip
    text = msgspec.json.encode(
        {
            "stream": "btcusdt@kline_1h",
            "data": {"e": "kline", "E": open_time + 5, "s": "BTCUSDT", "k": k},
        }
    )
    envelope = wire.combined_decoder.decode(text)
    return Observed(market, envelope.stream, text.decode(), envelope.data)


def parse_request(request: bytes) -> list[list[bytes]]:
    """A RESP request read back as Redis would (arrays of bulk strings)."""
    parser = _Parser()
    parser.feed(request)
    commands = []
    while True:
        done, command = parser.next()
        if not done:
            return commands
        assert isinstance(command, list)
        commands.append(command)


def test_every_event_is_published_and_only_the_newest_is_kept() -> None:
    events = [observed("spot", False), observed("spot", True), observed("usdm", True)]
    request, count = request_for(events)
    commands = parse_request(request)
    assert count == len(commands) == 5
    assert [c[:2] for c in commands] == [
        [b"PUBLISH", b"binance:kline:BTCUSDT:1h"],
        [b"PUBLISH", b"binance:kline:BTCUSDT:1h"],
        [b"PUBLISH", b"binance:usdm:kline:BTCUSDT:1h"],
        [b"SET", b"binance:latest:kline:BTCUSDT:1h"],
        [b"SET", b"binance:latest:usdm:kline:BTCUSDT:1h"],
    ]
    assert commands[3][2] == commands[1][2]  # the newest (closed) one
    assert commands[3][3:] == [b"EX", b"60"]
    payload = json.loads(commands[1][2])  # type: ignore[arg-type]
    assert payload == {
        "type": "kline", "market": "spot", "symbol": "BTCUSDT", "interval": "1h",
        "time": 1_700_000_000_000, "close_time": 1_700_003_599_999, "open": "1.10",
        "high": "1.30", "low": "1.00", "close": "1.20", "volume": "5.5", "quote_volume": "6.6",
        "trades": 7, "taker_buy_volume": "2.2", "taker_buy_quote_volume": "3.3", "closed": True,
        "event_time": 1_700_000_000_005,
    }  # fmt: skip
    assert json.loads(commands[0][2])["closed"] is False  # type: ignore[arg-type]
    # The names are built once per series and kept.
    cache: dict[tuple[str, str, str], tuple[bytes, bytes]] = {}
    assert request_for(events, cache) == (request, count)
    assert sorted(cache) == [("spot", "BTCUSDT", "1h"), ("usdm", "BTCUSDT", "1h")]


def test_a_candle_in_progress_is_decoded_from_its_frame_and_a_bad_one_is_skipped() -> None:
    decoded = observed("spot", False)
    as_frame = Observed("spot", decoded.stream, decoded.frame, None)  # what the hot loop hands on
    broken = Observed("spot", decoded.stream, str(decoded.frame).replace('"1.20"', "1.20"), None)
    builder = RequestBuilder()
    builder.add([as_frame, broken])
    assert builder.finish() == request_for([decoded])
    assert builder.undecodable == 1


def test_the_collected_symbols_are_a_set_per_market() -> None:
    assert symbols_commands("spot", ["ethusdt", "BTCUSDT"]) == [
        [b"DEL", b"binance:symbols:active"],
        [b"SADD", b"binance:symbols:active", b"BTCUSDT", b"ETHUSDT"],
    ]
    assert symbols_commands("coinm", [])[0] == [b"DEL", b"binance:coinm:symbols:active"]
