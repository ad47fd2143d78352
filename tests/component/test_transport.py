"""The WebSocket client transport against klinetrio's own server on 127.0.0.1 (and a raw one).

Server handlers record what they saw in a ``Seen``; the test body asserts on it, since the
server logs and swallows a handler's exceptions. Every test runs under a ``fail_after``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial

import pytest
import trio
import wsproto
import wsproto.events as wse

from klinetrio.binance.stream import open_transport
from klinetrio.errors import StreamError
from klinetrio.net.websocket import (
    CLOSE_TIMEOUT_S,
    ConnectionClosed,
    WebSocketClient,
    open_websocket,
)
from klinetrio.simulate.web import Request, Response, WebSocket, serve_http

Handler = Callable[[Request, WebSocket], Awaitable[None]]


@dataclass
class Seen:
    """What the server side saw, for the test body to check."""

    targets: list[str] = field(default_factory=list)
    received: list[str] = field(default_factory=list)
    pong: bool = False
    close_code: int | None = None
    closed: trio.Event = field(default_factory=trio.Event)


async def _not_found(request: Request) -> Response:
    return Response.text("404 Not Found\n", 404)


@asynccontextmanager
async def serving(handler: Handler, seen: Seen) -> AsyncIterator[str]:
    """``serve_http`` on 127.0.0.1:0; after ``handler`` returns, records how the socket closed."""

    async def websocket_handler(request: Request, ws: WebSocket) -> None:
        seen.targets.append(request.target)
        try:
            await handler(request, ws)
        finally:
            with trio.move_on_after(3):
                await ws.wait_closed()
            seen.close_code = ws.close_code
            seen.closed.set()

    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            lambda task_status: serve_http(
                _not_found,
                "127.0.0.1",
                0,
                websocket_handler=websocket_handler,
                task_status=task_status,
            )
        )
        yield f"ws://127.0.0.1:{port}"
        nursery.cancel_scope.cancel()


async def read_into(ws: WebSocketClient, into: list[str | bytes]) -> None:
    while True:
        into.append(await ws.get_message())


# --- messages ------------------------------------------------------------------------------------


async def test_handshake_then_messages_in_order_both_ways() -> None:
    seen = Seen()

    async def handler(request: Request, ws: WebSocket) -> None:
        await ws.accept()
        for text in ("one", "two", "três"):
            await ws.send_text(text)
        message = await ws.receive()
        assert message is not None
        seen.received.append(message)
        await ws.wait_closed()

    with trio.fail_after(5):
        async with serving(handler, seen) as url:
            async with open_websocket(f"{url}/stream?streams=a/b") as ws:
                assert [await ws.get_message() for _ in range(3)] == [
                    m.encode() for m in ("one", "two", "três")
                ]
                await ws.send_message('{"method": "SUBSCRIBE"}')
                with trio.fail_after(2):
                    while not seen.received:  # noqa: ASYNC110
                        await trio.sleep(0.01)
            await seen.closed.wait()
    assert seen.targets == ["/stream?streams=a/b"]
    assert seen.received == ['{"method": "SUBSCRIBE"}']
    assert seen.close_code == 1000


async def test_a_burst_of_small_messages_costs_one_socket_read() -> None:
    seen = Seen()
    burst = [f'{{"n":{i}}}' for i in range(100)]

    async def handler(request: Request, ws: WebSocket) -> None:
        await ws.accept()
        assert await ws.receive() == "go"
        await ws.send_many(burst)  # one send_all
        await ws.wait_closed()

    with trio.fail_after(5):
        async with serving(handler, seen) as url, open_websocket(url) as ws:
            await ws.send_message("go")
            assert [await ws.get_message() for _ in burst] == [m.encode() for m in burst]
            stats = ws.statistics()
            assert (stats.reads, stats.messages) == (1, 100)


async def test_fragmented_messages_are_assembled_around_a_ping() -> None:
    seen = Seen()

    async def handler(request: Request, ws: WebSocket) -> None:
        await ws.accept()
        # Control frames may come between the fragments of a message (RFC 6455, 5.4).
        await ws._send_event(wse.TextMessage(data="frag", message_finished=False))
        await ws.ping(b"between")
        await ws._send_event(wse.TextMessage(data="ment", message_finished=False))
        await ws._send_event(wse.TextMessage(data="ed ✓", message_finished=True))
        await ws._send_event(wse.BytesMessage(data=b"\x00\x01", message_finished=False))
        await ws._send_event(wse.BytesMessage(data=b"\x02", message_finished=True))
        with trio.fail_after(2):
            await ws.wait_pong()
        seen.pong = True
        await ws.send_text("after")
        await ws.wait_closed()

    with trio.fail_after(5):
        async with serving(handler, seen) as url, open_websocket(url) as ws:
            assert await ws.get_message() == "fragmented ✓".encode()
            assert await ws.get_message() == b"\x00\x01\x02"
            assert await ws.get_message() == b"after"
    assert seen.pong


async def test_a_message_over_the_limit_fails_the_connection_with_1009() -> None:
    seen = Seen()

    async def handler(request: Request, ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("small")
        await ws.send_text("x" * 2000)
        await ws.wait_closed()

    with trio.fail_after(5):
        async with serving(handler, seen) as url:
            async with open_websocket(url, max_message_size=1000) as ws:
                assert await ws.get_message() == b"small"
                with pytest.raises(StreamError, match="over 1000 bytes") as caught:
                    await ws.get_message()
                assert not isinstance(caught.value, ConnectionClosed)
            await seen.closed.wait()
    assert seen.close_code == 1009


async def test_a_fragmented_message_over_the_limit_fails_too() -> None:
    seen = Seen()

    async def handler(request: Request, ws: WebSocket) -> None:
        await ws.accept()
        for _ in range(3):
            await ws._send_event(wse.TextMessage(data="y" * 400, message_finished=False))
        await ws.wait_closed()

    with trio.fail_after(5):
        async with serving(handler, seen) as url, open_websocket(url, max_message_size=1000) as ws:
            with pytest.raises(StreamError, match="over 1000 bytes"):
                await ws.get_message()


# --- pings ---------------------------------------------------------------------------------------


async def test_server_pings_are_answered_while_the_client_only_reads() -> None:
    seen = Seen()

    async def handler(request: Request, ws: WebSocket) -> None:
        await ws.accept()
        for n in range(3):
            await ws.ping(b"server-%d" % n)
            with trio.fail_after(2):
                await ws.wait_pong()
        seen.pong = True
        await ws.send_text("all pongs seen")
        await ws.wait_closed()

    with trio.fail_after(5):
        async with serving(handler, seen) as url, open_websocket(url) as ws:
            assert await ws.get_message() == b"all pongs seen"
            assert ws.statistics().pongs_sent == 3
    assert seen.pong


async def test_ping_returns_when_the_reader_sees_the_pong() -> None:
    seen = Seen()

    async def handler(request: Request, ws: WebSocket) -> None:
        await ws.accept()
        assert await ws.receive() == "more"
        await ws.send_text("still reading")
        await ws.wait_closed()

    received: list[str | bytes] = []
    with trio.fail_after(5):
        async with (
            serving(handler, seen) as url,
            open_websocket(url) as ws,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(read_into, ws, received)
            with trio.fail_after(2):
                await ws.ping(b"klinetrio-1")
                await ws.ping()  # a random payload
                await ws.ping(b"klinetrio-1")  # the first one's entry is gone
            await ws.send_message("more")
            with trio.fail_after(2):
                while not received:  # noqa: ASYNC110
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert received == [b"still reading"]


async def test_ping_does_not_return_without_a_pong() -> None:
    seen = Seen()

    async def handler(request: Request, ws: WebSocket) -> None:
        ws.answer_pings = False
        await ws.accept()
        await ws.wait_closed()

    with trio.fail_after(5):
        async with (
            serving(handler, seen) as url,
            open_websocket(url) as ws,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(read_into, ws, [])
            with trio.move_on_after(0.3) as waiting:
                await ws.ping(b"klinetrio-1")
            assert waiting.cancelled_caught
            # The abandoned ping is forgotten: the same payload may be sent again.
            with trio.move_on_after(0.1):
                await ws.ping(b"klinetrio-1")
            nursery.cancel_scope.cancel()


async def test_a_waiting_ping_raises_when_the_connection_ends() -> None:
    seen = Seen()

    async def handler(request: Request, ws: WebSocket) -> None:
        ws.answer_pings = False
        await ws.accept()
        assert await ws.receive() == "close now"
        await ws.close(1001, "going away")

    with trio.fail_after(5):
        async with serving(handler, seen) as url, open_websocket(url) as ws:
            errors: list[StreamError] = []

            async def read() -> None:
                with pytest.raises(ConnectionClosed):
                    await read_into(ws, [])

            async def ping() -> None:
                try:
                    await ws.ping(b"never answered")
                except StreamError as exc:
                    errors.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                nursery.start_soon(ping)
                await trio.sleep(0.05)
                await ws.send_message("close now")
    assert len(errors) == 1
    assert isinstance(errors[0], ConnectionClosed)
    assert errors[0].code == 1001


# --- the end of a connection ----------------------------------------------------------------------


async def test_server_close_is_connection_closed_with_code_after_earlier_messages() -> None:
    seen = Seen()

    async def handler(request: Request, ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_many(["last words", "really"])
        await ws.close(1001, "server shutdown")

    with trio.fail_after(5):
        async with serving(handler, seen) as url:
            async with open_websocket(url) as ws:
                assert await ws.get_message() == b"last words"
                assert await ws.get_message() == b"really"
                with pytest.raises(ConnectionClosed) as caught:
                    await ws.get_message()
                # Again: the connection stays ended.
                with pytest.raises(ConnectionClosed):
                    await ws.get_message()
                with pytest.raises(StreamError):
                    await ws.send_message("too late")
            await seen.closed.wait()
    assert (caught.value.code, caught.value.reason) == (1001, "server shutdown")
    assert str(caught.value) == "closed by server: 1001 GOING_AWAY (server shutdown)"
    # The server got our answer to its close frame, so its close() ended cleanly.
    assert seen.close_code == 1001


async def test_an_abrupt_tcp_drop_is_a_1006_close() -> None:
    seen = Seen()

    async def handler(request: Request, ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("bye")
        await ws.abort()

    with trio.fail_after(5):
        async with serving(handler, seen) as url, open_websocket(url) as ws:
            assert await ws.get_message() == b"bye"
            with pytest.raises(StreamError) as caught:
                await ws.get_message()
    assert isinstance(caught.value, ConnectionClosed)
    assert caught.value.code == 1006
    assert str(caught.value).startswith("closed by server: 1006 ABNORMAL_CLOSURE")


async def test_a_rejected_handshake_is_a_stream_error() -> None:
    seen = Seen()

    async def handler(request: Request, ws: WebSocket) -> None:
        await ws.reject(404, b"no such stream\n")

    with trio.fail_after(5):
        async with serving(handler, seen) as url:
            with pytest.raises(StreamError, match=r"handshake .* failed: HTTP 404"):
                async with open_transport(f"{url}/stream"):
                    pytest.fail("the handshake was rejected")


async def test_an_unreachable_server_is_a_stream_error() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()
    with trio.fail_after(5), pytest.raises(StreamError, match="cannot reach"):
        async with open_transport(f"ws://127.0.0.1:{port}"):
            pytest.fail("nothing listens there")


async def test_exit_closes_cleanly_even_when_cancelled() -> None:
    seen = Seen()

    async def handler(request: Request, ws: WebSocket) -> None:
        await ws.accept()
        await ws.wait_closed()

    with trio.fail_after(5):
        async with serving(handler, seen) as url:
            with trio.move_on_after(0.2) as scope:
                async with open_websocket(url) as ws:
                    await ws.get_message()  # nothing comes; the deadline cancels it
            assert scope.cancelled_caught
            await seen.closed.wait()
    assert seen.close_code == 1000


@asynccontextmanager
async def silent_server() -> AsyncIterator[str]:
    """Completes the upgrade, then never reads nor writes again (a peer that died)."""

    async def handle(stream: trio.SocketStream) -> None:
        conn = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
        while not any(isinstance(e, wse.Request) for e in conn.events()):
            conn.receive_data(bytes(await stream.receive_some(65536)))
        await stream.send_all(conn.send(wse.AcceptConnection()))
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        yield f"ws://127.0.0.1:{port}"
        nursery.cancel_scope.cancel()


async def test_exit_does_not_hang_when_the_peer_never_answers_our_close() -> None:
    with trio.fail_after(2 * CLOSE_TIMEOUT_S + 3):
        async with silent_server() as url:
            async with open_websocket(url) as ws:
                await ws.send_message("anyone?")
                started = trio.current_time()
            assert trio.current_time() - started <= CLOSE_TIMEOUT_S + 0.5
            # Leaving on a cancellation: the close is shielded, and bounded all the same.
            with trio.CancelScope() as scope:
                async with open_websocket(url):
                    scope.cancel()
                    started = trio.current_time()
                    await trio.sleep(1)
            assert scope.cancelled_caught
            assert trio.current_time() - started <= CLOSE_TIMEOUT_S + 0.5
