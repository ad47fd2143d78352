"""The tiny HTTP/WebSocket server: requests, keep-alive, bad clients, and the WebSocket object."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from klinetrio.simulate.web import Request, Response, WebSocket, WebSocketHandler, serve_http


async def _handler(request: Request) -> Response:
    if request.path == "/boom":
        raise RuntimeError("handler bug")
    if request.path == "/text":
        return Response.text("hello", headers=[("X-Extra", "1")])
    return Response.json(
        {"method": request.method, "path": request.path, "query": dict(request.query)}
    )


@asynccontextmanager
async def _server(websocket_handler: WebSocketHandler | None = None) -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            lambda task_status: serve_http(
                _handler,
                "127.0.0.1",
                0,
                websocket_handler=websocket_handler,
                task_status=task_status,
            )
        )
        yield port
        nursery.cancel_scope.cancel()


async def test_json_text_and_query() -> None:
    with trio.fail_after(5):
        async with _server() as port, httpx.AsyncClient() as client:
            base = f"http://127.0.0.1:{port}"
            r = await client.get(f"{base}/a/b", params={"x": "1", "y": ""})
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("application/json")
            assert r.json() == {"method": "GET", "path": "/a/b", "query": {"x": "1", "y": ""}}
            r = await client.get(f"{base}/text")
            assert (r.text, r.headers["x-extra"]) == ("hello", "1")


async def test_keep_alive_serves_many_requests_on_one_connection() -> None:
    with trio.fail_after(5):
        async with _server() as port:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            request = b"GET /text HTTP/1.1\r\nHost: x\r\n\r\n"
            await stream.send_all(request * 3)
            data = b""
            while data.count(b"hello") < 3:
                data += await stream.receive_some(65536)
            assert data.count(b"HTTP/1.1 200") == 3
            await stream.aclose()


async def test_handler_error_is_500_and_server_survives() -> None:
    with trio.fail_after(5):
        async with _server() as port, httpx.AsyncClient() as client:
            r = await client.get(f"http://127.0.0.1:{port}/boom")
            assert r.status_code == 500
            r = await client.get(f"http://127.0.0.1:{port}/ok")
            assert r.status_code == 200


async def test_malformed_http_gets_400_and_close() -> None:
    with trio.fail_after(5):
        async with _server() as port:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"THIS IS NOT HTTP\r\n\r\n")
            data = b""
            while chunk := await stream.receive_some(65536):
                data += chunk
            assert data.startswith(b"HTTP/1.1 400")
            async with httpx.AsyncClient() as client:
                assert (await client.get(f"http://127.0.0.1:{port}/")).status_code == 200


async def test_upgrade_without_websocket_handler_is_404() -> None:
    with trio.fail_after(5):
        async with _server() as port:
            with pytest.raises(HandshakeError):
                async with open_websocket_url(f"ws://127.0.0.1:{port}/ws"):
                    pass


async def _echo(request: Request, ws: WebSocket) -> None:
    if request.path == "/reject":
        await ws.reject(403, b"no")
        return
    await ws.accept()
    while (message := await ws.receive()) is not None:
        if message == "many":
            await ws.send_many([f"m{i}" for i in range(100)] + [b"bytes too"])
        elif message == "ping":
            await ws.ping(b"p1")
            await ws.wait_pong()  # the test's fail_after bounds this
            assert ws.last_pong_at > ws.accepted_at
            await ws.send_text("pong seen")
        elif message == "mute":
            ws.answer_pings = False
            await ws.send_text("muted")
        elif message == "close":
            await ws.close(4000, "bye")
        elif message == "abort":
            await ws.abort()
        else:
            await ws.send_text(f"echo {message}")


async def test_websocket_echo_and_send_many() -> None:
    with trio.fail_after(5):
        async with (
            _server(_echo) as port,
            open_websocket_url(f"ws://127.0.0.1:{port}/ws?x=1") as ws,
        ):
            await ws.send_message("hi")
            assert await ws.get_message() == "echo hi"
            await ws.send_message("many")
            got = [await ws.get_message() for _ in range(101)]
            assert got == [f"m{i}" for i in range(100)] + ["bytes too"]


async def test_websocket_pings_both_ways() -> None:
    with trio.fail_after(5):
        async with _server(_echo) as port, open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
            await ws.ping(b"client")  # answered automatically
            await ws.send_message("ping")
            assert await ws.get_message() == "pong seen"
            await ws.send_message("mute")
            assert await ws.get_message() == "muted"
            with trio.move_on_after(0.3) as scope:
                await ws.ping(b"unanswered")
            assert scope.cancelled_caught


async def test_websocket_clean_close_and_abort() -> None:
    with trio.fail_after(5):
        async with _server(_echo) as port:
            async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
                await ws.send_message("close")
                with pytest.raises(ConnectionClosed):
                    await ws.get_message()
                assert ws.closed is not None
                assert (ws.closed.code, ws.closed.reason) == (4000, "bye")
            async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
                await ws.send_message("abort")
                with pytest.raises(ConnectionClosed):
                    await ws.get_message()
                assert ws.closed is not None
                assert ws.closed.code == 1006


async def test_websocket_reject() -> None:
    with trio.fail_after(5):
        async with _server(_echo) as port:
            with pytest.raises(HandshakeError):
                async with open_websocket_url(f"ws://127.0.0.1:{port}/reject"):
                    pass
