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

Backpressure: a ``WebSocket`` keeps at most ``_RECEIVE_QUEUE`` unread messages; past that its
reader stops reading the socket (TCP pushes back on the client) and, with it, stops answering
pings. Sends are serialized by a lock, so frames of concurrent senders never interleave.

A client never takes the server down: malformed HTTP gets a 400 and a closed connection, an
exception in a handler becomes a 500 (or a dropped WebSocket) and a log line.
"""

from __future__ import annotations

import contextlib
import math
import struct
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import h11
import msgspec
import trio
import wsproto
import wsproto.events as wse
from loguru import logger
from wsproto.connection import ConnectionState
from wsproto.utilities import RemoteProtocolError as WsRemoteProtocolError

from klinetrio.errors import KlinetrioError

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
_MAX_MESSAGE = 1_048_576
_RECEIVE_QUEUE = 64
# How long close() waits for the peer's close frame before dropping the connection anyway.
_CLOSE_GRACE_S = 2.0
_SERVER_HEADER = (b"server", b"klinetrio")
_json_encoder = msgspec.json.Encoder()


class WebSocketClosed(KlinetrioError):
    """The WebSocket is closed (by either side, or dropped); nothing more can be sent."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"websocket closed ({code} {reason})".strip())
        self.code = code
        self.reason = reason


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


def _frame_header(length: int, opcode: int = 0x1) -> bytes:
    """An unmasked, final frame header (server → client, no extensions negotiated)."""
    if length < 126:
        return bytes((0x80 | opcode, length))
    if length < 65_536:
        return struct.pack("!BBH", 0x80 | opcode, 126, length)
    return struct.pack("!BBQ", 0x80 | opcode, 127, length)


class WebSocket:
    """The server side of one WebSocket connection.

    The handler first calls ``accept()`` (or ``reject()``). Text messages arrive through
    ``receive()``; pings are answered by the reader task even while nobody calls ``receive()``
    (unless ``answer_pings`` is False), and pongs that echo our latest ``ping()`` payload update
    ``last_pong_at`` (unsolicited pongs are ignored, as Binance ignores them).

    Data frames are framed here rather than by wsproto: server frames are unmasked and we
    negotiate no extension, so a frame is a 2-10 byte header and the payload, and ``send_many``
    joins a whole batch into one ``send_all``.
    """

    def __init__(self, stream: trio.abc.Stream, conn: wsproto.WSConnection) -> None:
        self._stream = stream
        self._conn = conn
        self._send_lock = trio.Lock()
        self._accepted = trio.Event()
        self._closed = trio.Event()
        self._close_code = 1006
        self._close_reason = ""
        self._last_ping_payload: bytes | None = None
        self._pong = trio.Event()
        self._send_messages, self._receive_messages = trio.open_memory_channel[str](_RECEIVE_QUEUE)
        self.answer_pings = True
        self.last_pong_at = -math.inf
        self.accepted_at = -math.inf
        self.frames_sent = 0
        self.bytes_sent = 0

    # --- handshake -------------------------------------------------------------------------

    async def accept(self) -> None:
        """Complete the upgrade (HTTP 101)."""
        if self._accepted.is_set():
            return
        data = self._conn.send(wse.AcceptConnection())
        await self._send_raw(data)
        self.accepted_at = trio.current_time()
        self.last_pong_at = self.accepted_at
        self._accepted.set()

    async def reject(self, status: int = 404, body: bytes = b"") -> None:
        """Refuse the upgrade with a plain HTTP response; the connection then closes."""
        if self._accepted.is_set() or self._closed.is_set():
            raise RuntimeError("reject() after accept() or close")
        headers = [(b"content-type", b"text/plain; charset=utf-8")]
        data = self._conn.send(
            wse.RejectConnection(status_code=status, headers=headers, has_body=True)
        )
        data += self._conn.send(wse.RejectData(data=body, body_finished=True))
        self._mark_closed(1006, "rejected")
        await self._send_raw(data)

    # --- state -----------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._accepted.is_set() and self._conn.state is ConnectionState.OPEN

    @property
    def close_code(self) -> int | None:
        """The close code once closed (1006 when dropped without a close frame), else None."""
        return self._close_code if self._closed.is_set() else None

    async def wait_closed(self) -> None:
        await self._closed.wait()

    # --- sending ---------------------------------------------------------------------------

    async def send_text(self, message: str | bytes) -> None:
        """Send one text message (``bytes`` must already be UTF-8)."""
        await self.send_many((message,))

    async def send_many(self, messages: Sequence[str | bytes]) -> None:
        """Send many text messages with one ``send_all`` (``bytes`` must already be UTF-8)."""
        if not messages:
            return
        parts: list[bytes] = []
        append = parts.append
        for message in messages:
            payload = message.encode() if isinstance(message, str) else message
            append(_frame_header(len(payload)))
            append(payload)
        data = b"".join(parts)
        self._check_open()
        async with self._send_lock:
            self._check_open()
            await self._send_all(data)
        self.frames_sent += len(messages)
        self.bytes_sent += len(data)

    async def ping(self, payload: bytes = b"") -> None:
        """Send a ping; a pong echoing ``payload`` will update ``last_pong_at``."""
        self._last_ping_payload = bytes(payload)
        self._pong = trio.Event()
        await self._send_event(wse.Ping(payload=payload))

    async def wait_pong(self) -> None:
        """Wait for the pong that answers the latest ``ping()`` (put a deadline around it)."""
        await self._pong.wait()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close cleanly: send a close frame, wait (briefly) for the peer's, drop the TCP."""
        if self._closed.is_set():
            return
        if not self._accepted.is_set():
            await self.reject(403)
            return
        try:
            async with self._send_lock:
                if self._conn.state is ConnectionState.OPEN:
                    await self._send_all(self._conn.send(wse.CloseConnection(code, reason)))
            with trio.move_on_after(_CLOSE_GRACE_S):
                await self._closed.wait()
        except WebSocketClosed:
            pass
        finally:
            self._mark_closed(code, reason)
            await self._aclose_stream()

    async def abort(self) -> None:
        """Drop the TCP connection without a close frame (the peer sees code 1006)."""
        self._mark_closed(1006, "aborted")
        await self._aclose_stream()

    # --- receiving -------------------------------------------------------------------------

    async def receive(self) -> str | None:
        """The next text message, or None once the connection is closed."""
        try:
            return await self._receive_messages.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return None

    # --- internals -------------------------------------------------------------------------

    def _check_open(self) -> None:
        if not self._accepted.is_set():
            raise RuntimeError("call accept() before sending")
        if self._closed.is_set() or self._conn.state is not ConnectionState.OPEN:
            raise WebSocketClosed(self._close_code, self._close_reason)

    def _mark_closed(self, code: int, reason: str) -> None:
        if not self._closed.is_set():
            self._close_code, self._close_reason = code, reason
            self._closed.set()
        self._send_messages.close()

    async def _aclose_stream(self) -> None:
        with (
            trio.CancelScope(shield=True),
            contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError),
        ):
            await self._stream.aclose()

    async def _send_event(self, event: wse.Event) -> None:
        self._check_open()
        async with self._send_lock:
            self._check_open()
            await self._send_all(self._conn.send(event))

    async def _send_raw(self, data: bytes) -> None:
        async with self._send_lock:
            await self._send_all(data)

    async def _send_all(self, data: bytes) -> None:
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._mark_closed(1006, "connection lost")
            raise WebSocketClosed(1006, "connection lost") from exc

    async def _run_reader(self, trailing: bytes) -> None:
        """Feed wsproto until the connection ends; never raises for the peer's faults."""
        await self._accepted.wait()
        text: list[str] = []
        size = 0
        try:
            self._conn.receive_data(trailing)
            with self._send_messages:
                while not self._closed.is_set():
                    for event in self._conn.events():
                        if isinstance(event, wse.TextMessage):
                            text.append(event.data)
                            size += len(event.data)
                            if size > _MAX_MESSAGE:
                                await self.close(1009, "message too big")
                                return
                            if event.message_finished:
                                message, text, size = "".join(text), [], 0
                                await self._send_messages.send(message)
                        elif isinstance(event, wse.BytesMessage):
                            await self.close(1003, "text frames only")
                            return
                        elif isinstance(event, wse.Ping):
                            if self.answer_pings and self._conn.state is ConnectionState.OPEN:
                                async with self._send_lock:
                                    await self._send_all(self._conn.send(event.response()))
                        elif isinstance(event, wse.Pong):
                            if event.payload == self._last_ping_payload:
                                self.last_pong_at = trio.current_time()
                                self._pong.set()
                        elif isinstance(event, wse.CloseConnection):
                            if self._conn.state is ConnectionState.REMOTE_CLOSING:
                                async with self._send_lock:
                                    await self._send_all(self._conn.send(event.response()))
                            self._mark_closed(event.code, event.reason or "")
                            return
                    data = await self._stream.receive_some(_READ_SIZE)
                    self._conn.receive_data(bytes(data) or None)
        except (WebSocketClosed, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self._mark_closed(1006, "connection lost")
        except wsproto.utilities.LocalProtocolError:
            self._mark_closed(1006, "connection lost")


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
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ws._run_reader, trailing)
        try:
            await websocket_handler(request, ws)
        except WebSocketClosed:
            pass
        except Exception:
            logger.exception("websocket handler failed for {path}", path=request.path)
        finally:
            if not ws._accepted.is_set() and not ws._closed.is_set():
                await _quietly(ws.reject(404, b"404 Not Found\n"))
            elif not ws._closed.is_set():
                with trio.move_on_after(_CLOSE_GRACE_S) as scope:
                    scope.shield = True
                    await _quietly(ws.close(1000, ""))
            ws._mark_closed(ws._close_code, ws._close_reason)
            nursery.cancel_scope.cancel()


async def _quietly(awaitable: Awaitable[None]) -> None:
    with contextlib.suppress(
        WebSocketClosed, trio.BrokenResourceError, trio.ClosedResourceError, OSError
    ):
        await awaitable
