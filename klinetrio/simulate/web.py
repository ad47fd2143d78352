"""A tiny HTTP/1.1 + WebSocket server for Trio, built on the sans-IO engines h11 and wsproto.

Why our own: the service needs three JSON endpoints and the simulator needs a WebSocket server
that can push ~12,000 frames a second from one core. A framework would bring an event loop of its
own or a per-message hand-off we cannot afford; h11 and wsproto do the parsing, and this module is
the thin Trio shell around them (the shape trio-websocket has, minus its per-message queue on the
sending side).

Shape of a connection::

    serve_http(handler, host, port, websocket_handler=...)   runs until cancelled
    └── one task per TCP connection (trio.serve_listeners owns their nursery)
        ├── plain request  → await handler(Request) → Response; keep-alive; next request
        └── Upgrade: websocket → websocket_handler(Request, WebSocket), and beside it a reader
            task that feeds wsproto, answers pings and queues text messages

The ``WebSocket`` itself (framing, the reader task, backpressure) lives in ``websocket``.

A client never takes the server down: malformed HTTP gets a 400 and a closed connection, an
exception in a handler becomes a 500 (or a dropped WebSocket) and a log line.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import h11
import msgspec
import trio
import wsproto
from loguru import logger
from wsproto.utilities import RemoteProtocolError as WsRemoteProtocolError

from klinetrio.simulate.websocket import WebSocket, WebSocketClosed

__all__ = [
    "HttpHandler",
    "Request",
    "Response",
    "WebSocket",
    "WebSocketClosed",
    "WebSocketHandler",
    "serve_http",
]

_READ_SIZE = 65_536
_MAX_BODY = 1_048_576
_SERVER_HEADER = (b"server", b"klinetrio")
_json_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class Request:
    """One parsed HTTP request. Header names are lower case; ``query`` keeps the last value."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes = b""
    client: str = ""
    target: str = ""


@dataclass(frozen=True, slots=True)
class Response:
    """An HTTP response; ``headers`` are extra headers beyond Content-Type and Content-Length."""

    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: Sequence[tuple[str, str]] = field(default_factory=tuple)

    @classmethod
    def json(cls, obj: Any, status: int = 200, headers: Sequence[tuple[str, str]] = ()) -> Response:
        """``obj`` encoded by msgspec (structs, dicts, lists; bytes pass through as-is)."""
        body = obj if isinstance(obj, bytes) else _json_encoder.encode(obj)
        return cls(status, body, "application/json;charset=UTF-8", tuple(headers))

    @classmethod
    def text(
        cls, text: str, status: int = 200, headers: Sequence[tuple[str, str]] = ()
    ) -> Response:
        return cls(status, text.encode(), "text/plain; charset=utf-8", tuple(headers))

    def with_headers(self, *headers: tuple[str, str]) -> Response:
        """A copy with more headers."""
        return Response(self.status, self.body, self.content_type, (*self.headers, *headers))


HttpHandler = Callable[[Request], Awaitable[Response]]
WebSocketHandler = Callable[[Request, "WebSocket"], Awaitable[None]]


async def serve_http(
    handler: HttpHandler,
    host: str,
    port: int,
    *,
    websocket_handler: WebSocketHandler | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve HTTP (and WebSocket upgrades) on ``host:port`` until cancelled.

    ``port`` 0 picks a free port; ``task_status.started()`` receives the bound port once the
    socket listens. Each connection runs in a nursery that ``trio.serve_listeners`` opens.
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    if port == 0 and len(listeners) > 1:
        # Several addresses (IPv4 + IPv6) would each get a different free port; keep one.
        for extra in listeners[1:]:
            await extra.aclose()
        listeners = listeners[:1]
    bound = listeners[0].socket.getsockname()[1]
    serve = partial(_serve_connection, handler, websocket_handler)
    task_status.started(bound)
    await trio.serve_listeners(serve, listeners)


async def _serve_connection(
    handler: HttpHandler,
    websocket_handler: WebSocketHandler | None,
    stream: trio.SocketStream,
) -> None:
    try:
        peer = stream.socket.getpeername()
        client = str(peer[0]) if isinstance(peer, tuple) else str(peer)
    except OSError:
        client = ""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=65_536)
    try:
        while True:
            event = await _next_event(conn, stream)
            if isinstance(event, h11.ConnectionClosed):
                return
            if not isinstance(event, h11.Request):
                raise h11.RemoteProtocolError("expected a request", error_status_hint=400)
            request = await _read_request(conn, stream, event, client)
            if request.headers.get("upgrade", "").lower() == "websocket":
                await _serve_websocket(conn, stream, event, request, websocket_handler)
                return
            response = await _call_handler(handler, request)
            await _send_response(conn, stream, response, head=request.method == "HEAD")
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
    except h11.RemoteProtocolError as exc:
        if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            status = exc.error_status_hint
            with trio.move_on_after(1):
                with contextlib.suppress(h11.LocalProtocolError, trio.BrokenResourceError, OSError):
                    await _send_response(
                        conn, stream, Response.text(f"{status} Bad Request\n", status)
                    )
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    finally:
        with (
            trio.CancelScope(shield=True),
            contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError),
        ):
            await stream.aclose()


async def _next_event(conn: h11.Connection, stream: trio.abc.Stream) -> Any:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(_READ_SIZE)))
            continue
        return event


async def _read_request(
    conn: h11.Connection, stream: trio.abc.Stream, event: h11.Request, client: str
) -> Request:
    body = bytearray()
    while True:
        part = await _next_event(conn, stream)
        if isinstance(part, h11.Data):
            body += part.data
            if len(body) > _MAX_BODY:
                raise h11.RemoteProtocolError("body too large", error_status_hint=413)
        elif isinstance(part, h11.EndOfMessage) or part is h11.PAUSED:
            break
        else:
            raise h11.RemoteProtocolError("unexpected event in request", error_status_hint=400)
    target = event.target.decode("ascii", "replace")
    split = urlsplit(target)
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in event.headers}
    return Request(
        method=event.method.decode("ascii", "replace"),
        path=split.path or "/",
        query=dict(parse_qsl(split.query, keep_blank_values=True)),
        headers=headers,
        body=bytes(body),
        client=client,
        target=target,
    )


async def _call_handler(handler: HttpHandler, request: Request) -> Response:
    try:
        return await handler(request)
    except Exception:
        logger.exception(
            "http handler failed for {method} {path}", method=request.method, path=request.path
        )
        return Response.text("500 Internal Server Error\n", 500)


async def _send_response(
    conn: h11.Connection, stream: trio.abc.Stream, response: Response, head: bool = False
) -> None:
    headers: list[tuple[bytes, bytes]] = [
        _SERVER_HEADER,
        (b"content-type", response.content_type.encode("latin-1")),
        (b"content-length", str(len(response.body)).encode()),
    ]
    headers.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers)
    data = conn.send(h11.Response(status_code=response.status, headers=headers)) or b""
    if response.body and not head:
        data += conn.send(h11.Data(data=response.body)) or b""
    data += conn.send(h11.EndOfMessage()) or b""
    await stream.send_all(data)


async def _serve_websocket(
    conn: h11.Connection,
    stream: trio.abc.Stream,
    event: h11.Request,
    request: Request,
    websocket_handler: WebSocketHandler | None,
) -> None:
    if websocket_handler is None:
        await _send_response(conn, stream, Response.text("404 Not Found\n", 404))
        return
    ws_conn = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
    try:
        ws_conn.initiate_upgrade_connection(list(event.headers), event.target)
        for _ in ws_conn.events():
            pass
    except WsRemoteProtocolError as exc:
        await _send_response(conn, stream, Response.text(f"400 Bad Request: {exc}\n", 400))
        return
    trailing, _ = conn.trailing_data
    ws = WebSocket(stream, ws_conn)
    await ws.serve(partial(websocket_handler, request, ws), trailing, request.path)
