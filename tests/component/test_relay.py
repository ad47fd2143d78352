"""The WebSocket relay on a real socket (hypercorn on 127.0.0.1:0), with a real client
(trio-websocket), fed by a fan-out into which the test plays frames as a stream connection would.

What a Binance client sees must be what Binance sends: raw payloads on ``/ws``, the combined
envelope on ``/stream``, Binance's replies and error replies, its limits, and a client that
falls behind closed with 1008 while the others lose nothing.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
import trio_websocket
from support import eventually

from klinetrio.api import build_app, serve_api
from klinetrio.binance import wire
from klinetrio.fanout import Fanout, Observed

STREAMS = ["btcusdt@kline_1m", "ethusdt@kline_1m"]
# A client whose socket stays full this long is cut by the kernel (TCP_USER_TIMEOUT).
STALLED_S = 1.0


def frame(stream: str, open_time: int, closed: bool = False, close: str = "1.5") -> str:
    """A kline frame exactly as Binance's combined stream sends it (key order, no spaces)."""
    symbol = stream.partition("@")[0].upper()
    k = (
        f'{{"t":{open_time},"T":{open_time + 59999},"s":"{symbol}","i":"1m","f":100,"L":200,'
        f'"o":"1.00000000","c":"{close}","h":"2.00000000","l":"0.50000000","v":"10.00000000",'
        f'"n":101,"x":{"true" if closed else "false"},"q":"15.00000000","V":"4.00000000",'
        f'"Q":"6.00000000","B":"0"}}'
    )
    data = f'{{"e":"kline","E":{open_time + 1000},"s":"{symbol}","k":{k}}}'
    return f'{{"stream":"{stream}","data":{data}}}'


def play(fanout: Fanout, text: str) -> None:
    """What a stream connection's hot loop does with a frame somebody observes."""
    envelope = wire.combined_decoder.decode(text)
    observed = Observed("spot", envelope.stream, text, envelope.data)
    for watcher in fanout.watching("spot").get(envelope.stream, ()):
        watcher.offer(observed)


def no_statistics() -> Any:
    raise AssertionError("the relay needs no statistics")


@asynccontextmanager
async def relay_server(queue: int | None = None) -> AsyncIterator[tuple[Fanout, str, Any]]:
    fanout = Fanout({"spot": STREAMS})
    app = build_app(no_statistics, fanout=fanout)
    if queue is not None:
        app.state.relay._queue = queue
    async with trio.open_nursery() as nursery:
        serving = functools.partial(serve_api, stalled_client_s=STALLED_S)
        port = await nursery.start(serving, app, "127.0.0.1", 0)
        yield fanout, f"ws://127.0.0.1:{port}", app.state.relay
        nursery.cancel_scope.cancel()


async def request(ws: trio_websocket.WebSocketConnection, body: dict[str, Any]) -> Any:
    await trio.sleep(0.25)  # Binance allows 5 messages a second (the test's clock jumps)
    await ws.send_message(json.dumps(body))
    return json.loads(await ws.get_message())


async def test_raw_streams_carry_the_payload_exactly_as_sent() -> None:
    with trio.fail_after(10):
        async with (
            relay_server() as (fanout, base, _),
            trio_websocket.open_websocket_url(f"{base}/ws/btcusdt@kline_1m") as ws,
        ):
            await eventually(lambda: len(fanout.watching("spot").get("btcusdt@kline_1m", ())) == 1)
            sent = [frame("btcusdt@kline_1m", 0), frame("btcusdt@kline_1m", 0, closed=True)]
            play(fanout, frame("ethusdt@kline_1m", 0))  # not subscribed: never arrives
            for text in sent:
                play(fanout, text)
            got = [await ws.get_message() for _ in sent]
    head = '{"stream":"btcusdt@kline_1m","data":'
    assert got == [text[len(head) : -1] for text in sent]


async def test_combined_streams_carry_the_envelope_exactly_as_sent() -> None:
    with trio.fail_after(10):
        async with (
            relay_server() as (fanout, base, _),
            trio_websocket.open_websocket_url(f"{base}/stream?streams={'/'.join(STREAMS)}") as ws,
        ):
            await eventually(lambda: all(fanout.watching("spot").get(s) for s in STREAMS))
            sent = [
                frame(STREAMS[0], 0),
                frame(STREAMS[1], 0, closed=True),
                frame(STREAMS[0], 60_000),
            ]
            for text in sent:
                play(fanout, text)
            got = [await ws.get_message() for _ in sent]
    assert got == sent


async def test_subscribe_unsubscribe_and_list_answer_as_binance_does(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(10):
        async with (
            relay_server() as (fanout, base, _),
            trio_websocket.open_websocket_url(f"{base}/ws") as ws,
        ):
            assert await request(ws, {"method": "SUBSCRIBE", "params": STREAMS, "id": 1}) == {
                "result": None,
                "id": 1,
            }
            assert await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 3}) == {
                "result": STREAMS,
                "id": 3,
            }
            play(fanout, frame(STREAMS[1], 0))
            assert json.loads(await ws.get_message())["s"] == "ETHUSDT"
            assert await request(ws, {"method": "UNSUBSCRIBE", "params": STREAMS[1:], "id": 4}) == {
                "result": None,
                "id": 4,
            }
            listed = await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 5})
            assert listed["result"] == STREAMS[:1]
            # A stream klinetrio does not collect: Binance's own error reply, nothing subscribed.
            await trio.sleep(0.25)
            await ws.send_message(
                json.dumps({"method": "SUBSCRIBE", "params": ["dogeusdt@kline_1m"], "id": 6})
            )
            assert await ws.get_message() == (
                '{"error":{"code":2,"msg":"Invalid request: invalid stream"},"id":6}'
            )
            assert await request(
                ws, {"method": "GET_PROPERTY", "params": ["combined"], "id": 7}
            ) == {
                "result": False,
                "id": 7,
            }
            assert await request(
                ws, {"method": "SET_PROPERTY", "params": ["combined", True], "id": 8}
            ) == {"result": None, "id": 8}
            sent = frame(STREAMS[0], 0)
            play(fanout, sent)
            assert await ws.get_message() == sent  # combined from now on


@pytest.mark.parametrize(
    ("message", "reply"),
    [
        ("not json", {"code": 3}),
        ('["SUBSCRIBE"]', {"code": 3}),
        ('{"method": "SUBSCRIBE", "params": [], "id": "a"}', {"code": 2, "id": None}),
        ('{"method": "SUBSCRIBE", "params": [], "id": -1}', {"code": 2, "id": None}),
        ('{"method": "DANCE", "params": [], "id": 1}', {"code": 2, "id": 1}),
        ('{"method": "SUBSCRIBE", "params": "btcusdt@kline_1m", "id": 2}', {"code": 2, "id": 2}),
    ],
)
async def test_malformed_requests_get_error_replies(message: str, reply: dict[str, Any]) -> None:
    with trio.fail_after(10):
        async with (
            relay_server() as (_, base, _relay),
            trio_websocket.open_websocket_url(f"{base}/ws") as ws,
        ):
            await ws.send_message(message)
            answer = json.loads(await ws.get_message())
    assert answer["error"]["code"] == reply["code"]
    assert answer["error"]["msg"].startswith(("Invalid JSON", "Invalid request"))
    if "id" in reply:
        assert answer["id"] == reply["id"]


async def test_more_than_1024_streams_is_refused(autojump_clock: trio.testing.MockClock) -> None:
    names = [f"s{i}usdt@kline_1m" for i in range(1025)]
    fanout = Fanout({"spot": names})
    app = build_app(no_statistics, fanout=fanout)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_api, app, "127.0.0.1", 0)
            async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{port}/ws") as ws:
                ok = await request(ws, {"method": "SUBSCRIBE", "params": names[:1024], "id": 1})
                refused = await request(
                    ws, {"method": "SUBSCRIBE", "params": names[1024:], "id": 2}
                )
            nursery.cancel_scope.cancel()
    assert ok == {"result": None, "id": 1}
    assert refused["error"]["code"] == 2
    assert "too many streams" in refused["error"]["msg"]


async def test_more_than_five_messages_a_second_closes_the_connection() -> None:
    with trio.fail_after(10):
        async with relay_server() as (_, base, relay):
            async with trio_websocket.open_websocket_url(f"{base}/ws") as ws:
                for n in range(1, 10):
                    await ws.send_message(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": n}))

                async def read_until_closed() -> None:
                    while True:
                        await ws.get_message()

                with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    await read_until_closed()
            assert relay.statistics().closed_too_many_messages == 1
    assert closed.value.reason.code == 1008


async def test_a_client_that_never_reads_is_closed_and_nobody_else_loses_anything() -> None:
    queue = 50
    with trio.fail_after(30):
        async with relay_server(queue=queue) as (fanout, base, relay):
            async with (
                trio_websocket.open_websocket_url(f"{base}/ws/btcusdt@kline_1m") as reader,
                trio_websocket.open_websocket_url(
                    f"{base}/ws/btcusdt@kline_1m", message_queue_size=0
                ) as sleeper,
            ):
                await eventually(
                    lambda: len(fanout.watching("spot").get("btcusdt@kline_1m", ())) == 2
                )
                received: list[str] = []

                async def read_all() -> None:
                    while True:
                        received.append(await reader.get_message())

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read_all)
                    # Big frames, far more than the slow client's queue and socket buffers hold;
                    # played no faster than the reading client reads them.
                    sent = [
                        frame("btcusdt@kline_1m", i * 60_000, close="1." + "5" * 16_000)
                        for i in range(2_000)
                    ]
                    for i, text in enumerate(sent):
                        play(fanout, text)
                        if i % 10 == 0:
                            await eventually(
                                lambda i=i: len(received) >= i - queue // 2, poll=0.001
                            )
                    await eventually(lambda: len(received) == len(sent))
                    nursery.cancel_scope.cancel()
                await eventually(lambda: relay.statistics().closed_too_slow == 1)
                del sleeper
            stats = fanout.statistics()
    head = '{"stream":"btcusdt@kline_1m","data":'
    assert received == [text[len(head) : -1] for text in sent]
    assert stats.dropped_by_name["relay"] >= 1
    assert relay.statistics().clients == 0
