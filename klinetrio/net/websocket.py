"""A thin WebSocket client for Trio on wsproto, in which the reading task does all the reading.

Why not trio-websocket: it runs a reader task per connection that parses every frame and hands
each message to the caller through a memory channel. That hop costs ~16 µs, wsproto's parser
~14 µs more, so at ~13,500 frames/s the transport alone took most of a core, and after each
burst of closed candles the backlog sat in its queue while the one Trio thread caught up.

Here the task that calls ``get_message`` reads the socket itself: one ``receive_some`` is cut
into frames by ``frames.FrameSplitter`` (the fast path: a final, unmasked text frame is a slice
of the buffer, about a microsecond), every other frame goes whole to wsproto, every complete
message of that read goes into a local deque, and the following calls return from the deque
without touching the socket. A burst of 100 frames costs one syscall and no channel hop.
Messages are bytes (a text message's UTF-8, unchecked: its reader decodes it anyway). What
this design implies:

- Control frames are acted on only while someone reads. A server ping is answered the moment
  the reader sees it, so a caller that stops calling ``get_message`` stops answering pings and
  Binance drops it (klinetrio's stream reader never stops). Likewise ``ping()``, called from
  another task, returns when the *reader* sees the pong.
- ``get_message`` returns without a checkpoint while the deque holds messages: a cancellation
  lands at the next socket read, at most one read (64 KiB, a few hundred frames) later.
- Sends (``send_message``, ``ping``, our pongs, the close frame) may come from any task; they
  take turns through one ``StrictFIFOLock``, as a Trio stream forbids concurrent ``send_all``.
- No extensions (no permessage-deflate), subprotocols or proxies: Binance needs none.

Errors are klinetrio's ``StreamError``. The connection's end, by the server's close frame or by
the TCP connection dropping without one (code 1006), is its subclass ``ConnectionClosed``, with
the code and reason; messages that arrived before it are returned first.
"""

from __future__ import annotations

import os
import ssl
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from urllib.parse import urlsplit

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from klinetrio.errors import StreamError
from klinetrio.net.frames import FrameSplitter

__all__ = ["ConnectionClosed", "TransportStatistics", "WebSocketClient", "open_websocket"]

READ_SIZE = 65_536
MAX_MESSAGE_SIZE = 4 * 1024 * 1024
# TCP connect, TLS and the HTTP upgrade together.
CONNECT_TIMEOUT_S = 10.0
# Closing: how long to wait for the peer's close frame before dropping the TCP connection. Short,
# because we mostly close a connection that is dead or being replaced.
CLOSE_TIMEOUT_S = 2.0
MAX_HANDSHAKE_BYTES = 65_536

_LOST = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class ConnectionClosed(StreamError):
    """The server closed the connection (code 1006: the TCP connection ended without a close
    frame). The message reads ``closed by server: 1001 GOING_AWAY (reason)``."""

    def __init__(self, code: int, reason: str = "") -> None:
        try:
            name = CloseReason(code).name
        except ValueError:
            name = "UNKNOWN"
        text = f"{code} {name} ({reason})" if reason else f"{code} {name}"
        super().__init__(f"closed by server: {text}")
        self.code = code
        self.reason = reason


@dataclass(slots=True)
class TransportStatistics:
    """Counters of one connection: socket reads, messages returned by them, pongs we sent."""

    reads: int = 0
    messages: int = 0
    pongs_sent: int = 0


class WebSocketClient:
    """One open client connection (see the module docstring for who may call what).

    ``get_message`` must be called by one task at a time, and keep being called; ``send_message``
    and ``ping`` may be called from any task meanwhile.
    """

    def __init__(self, stream: trio.abc.Stream, conn: WSConnection, max_message_size: int) -> None:
        self._stream = stream
        self._conn = conn
        self._max_message_size = max_message_size
        self._send_lock = trio.StrictFIFOLock()
        self._messages: deque[bytes] = deque()
        self._splitter = FrameSplitter(max_message_size)
        self._parts: list[bytes] = []
        self._parts_size = 0
        self._pings: dict[bytes, trio.Event] = {}
        self._error: StreamError | None = None
        self._close_code = 1000
        self._stats = TransportStatistics()

    def statistics(self) -> TransportStatistics:
        return self._stats

    # --- the reading task ----------------------------------------------------------------------

    async def get_message(self) -> bytes:
        """The next message; ``ConnectionClosed`` (or another ``StreamError``) once it ended."""
        messages = self._messages
        while not messages:
            if self._error is not None:
                raise self._error
            await self._receive()
        return messages.popleft()

    async def get_messages(self) -> list[bytes]:
        """Every message received and not yet returned, at least one (one socket read when none
        is waiting): a reader takes a read's frames at once. Ends as ``get_message`` does."""
        messages = self._messages
        while not messages:
            if self._error is not None:
                raise self._error
            await self._receive()
        taken = list(messages)
        messages.clear()
        return taken

    async def _receive(self) -> None:
        """One socket read, and everything wsproto makes of it."""
        try:
            data = await self._stream.receive_some(READ_SIZE)
        except _LOST as exc:
            raise self._fail(ConnectionClosed(1006, f"connection lost: {exc}")) from exc
        self._stats.reads += 1
        if not data:  # the end of the stream: wsproto then reports a 1006 close
            self._conn.receive_data(None)
            await self._handle_events()
            return
        await self._take(bytes(data))

    async def _take(self, data: bytes) -> None:
        """Cut ``data`` into frames: simple text frames straight to the deque, the others to
        wsproto, in the order they came."""
        split = self._splitter.feed(data)
        messages = self._messages
        texts = split.texts
        taken = 0
        for before, frame in split.others:
            messages.extend(texts[taken:before])
            taken = before
            self._conn.receive_data(frame)
            await self._handle_events()
            if self._error is not None:
                return
        messages.extend(texts[taken:])
        self._stats.messages += len(texts)
        if self._splitter.too_big:
            self._close_code = 1009
            self._fail(StreamError(f"a message over {self._max_message_size} bytes"))

    async def _handle_events(self) -> None:
        messages = self._messages
        before = len(messages)
        limit = self._max_message_size
        pings: list[Ping] = []
        closed: CloseConnection | None = None
        for event in self._conn.events():
            if isinstance(event, TextMessage):
                # Only fragments come this way: whole text frames take the fast path.
                data = event.data.encode()
                if event.message_finished and not self._parts and len(data) <= limit:
                    messages.append(data)
                elif not self._add_part(data, event.message_finished):
                    break
            elif isinstance(event, BytesMessage):
                if not self._add_part(bytes(event.data), event.message_finished):
                    break
            elif isinstance(event, Ping):
                pings.append(event)
            elif isinstance(event, Pong):
                self._pong(bytes(event.payload))
            elif isinstance(event, CloseConnection):
                closed = event
                break
        self._stats.messages += len(messages) - before
        if self._error is not None:  # a message over the limit
            return
        if self._conn.state is ConnectionState.OPEN:
            for ping in pings:
                await self._send(ping.response())
                self._stats.pongs_sent += 1
        if closed is None:
            return
        if self._conn.state is ConnectionState.OPEN:
            # wsproto reports a frame it cannot parse as a close event without changing state.
            self._close_code = closed.code
            self._fail(StreamError(f"bad frame from server: {closed.code} {closed.reason}"))
            return
        if self._conn.state is ConnectionState.REMOTE_CLOSING:
            with suppress(StreamError):
                await self._send(closed.response())
        self._fail(ConnectionClosed(closed.code, closed.reason or ""))

    def _add_part(self, data: bytes, finished: bool) -> bool:
        """Assemble a fragmented (or partly received) message; False if it grew too big."""
        parts = self._parts
        parts.append(data)
        self._parts_size += len(data)
        if self._parts_size > self._max_message_size:
            self._close_code = 1009
            self._fail(StreamError(f"a message over {self._max_message_size} bytes"))
            return False
        if finished:
            self._messages.append(b"".join(parts))
            self._parts = []
            self._parts_size = 0
        return True

    def _pong(self, payload: bytes) -> None:
        """A pong answers its ping and every earlier one (RFC 6455 lets a peer skip some)."""
        if payload not in self._pings:
            return
        for key in list(self._pings):
            self._pings.pop(key).set()
            if key == payload:
                break

    def _fail(self, error: StreamError) -> StreamError:
        """Record how the connection ended (the first reason wins); wake pings waiting for it."""
        if self._error is None:
            self._error = error
            for waiting in self._pings.values():
                waiting.set()
        return self._error

    # --- any task ------------------------------------------------------------------------------

    async def send_message(self, message: str | bytes) -> None:
        """Send one message: text for ``str``, binary for ``bytes``."""
        if isinstance(message, str):
            await self._send(TextMessage(data=message))
        else:
            await self._send(BytesMessage(data=message))

    async def ping(self, payload: bytes | None = None) -> None:
        """Send a ping and return when the reader sees its pong; callers put a deadline around
        it. Raises the connection's error if it ends first."""
        if payload is None:
            payload = os.urandom(8)
        if payload in self._pings:
            raise ValueError(f"a ping with payload {payload!r} is already waiting")
        answered = self._pings[payload] = trio.Event()
        try:
            await self._send(Ping(payload=payload))
            await answered.wait()
            # A pong removes its entry before waking us; the connection's end leaves it.
            if self._error is not None and self._pings.get(payload) is answered:
                raise self._error
        finally:
            if self._pings.get(payload) is answered:
                del self._pings[payload]

    async def _send(self, event: Event) -> None:
        async with self._send_lock:
            if self._error is not None and not isinstance(event, CloseConnection):
                raise self._error
            try:
                data = self._conn.send(event)
            except LocalProtocolError as exc:
                raise StreamError(f"cannot send in state {self._conn.state.name}") from exc
            try:
                await self._stream.send_all(data)
            except _LOST as exc:
                raise self._fail(ConnectionClosed(1006, f"connection lost: {exc}")) from exc

    async def _aclose(self) -> None:
        """Our close frame, then the peer's (or the end of the stream), then drop the TCP
        connection; bounded by ``CLOSE_TIMEOUT_S`` and deaf to the caller's cancellation."""
        conn = self._conn
        with trio.move_on_after(CLOSE_TIMEOUT_S, shield=True), suppress(StreamError, *_LOST):
            if conn.state is ConnectionState.OPEN:
                await self._send(CloseConnection(code=self._close_code))
            while conn.state is ConnectionState.LOCAL_CLOSING:
                data = await self._stream.receive_some(READ_SIZE)
                conn.receive_data(bytes(data) if data else None)
                for _ in conn.events():
                    pass  # the peer's close frame (or EOF) moves wsproto to CLOSED
        self._fail(StreamError("closed"))
        await trio.aclose_forcefully(self._stream)


@asynccontextmanager
async def open_websocket(
    url: str,
    *,
    max_message_size: int = MAX_MESSAGE_SIZE,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[WebSocketClient]:
    """Connect to a ``ws://`` or ``wss://`` URL; on exit close the connection (within a bound).

    ``wss://`` needs ``ssl_context`` (see ``net.tls.client_context``: building one blocks, so
    the caller builds it once, off the loop). Raises ``StreamError`` if the server cannot be
    reached, refuses the upgrade or does not complete it within ``CONNECT_TIMEOUT_S``.
    """
    client = await _connect(url, max_message_size, ssl_context)
    try:
        yield client
    finally:
        await client._aclose()


async def _connect(
    url: str, max_message_size: int, ssl_context: ssl.SSLContext | None
) -> WebSocketClient:
    split = urlsplit(url)
    try:
        port = split.port
    except ValueError as exc:
        raise StreamError(f"not a WebSocket URL: {url}") from exc
    host = split.hostname
    if split.scheme not in ("ws", "wss") or not host:
        raise StreamError(f"not a WebSocket URL: {url}")
    secure = split.scheme == "wss"
    if secure and ssl_context is None:
        raise StreamError(f"{url} needs TLS, and no TLS context was given")
    port = port or (443 if secure else 80)
    target = (split.path or "/") + (f"?{split.query}" if split.query else "")
    with trio.move_on_after(CONNECT_TIMEOUT_S):
        try:
            tcp = await trio.open_tcp_stream(host, port)
        except OSError as exc:
            raise StreamError(f"cannot reach {url}: {exc}") from exc
        stream: trio.abc.Stream = tcp
        if ssl_context is not None and secure:
            stream = trio.SSLStream(tcp, ssl_context, server_hostname=host, https_compatible=True)
        try:
            return await _handshake(
                stream, url, split.netloc.rpartition("@")[2], target, max_message_size
            )
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
    raise StreamError(f"no WebSocket handshake with {url} within {CONNECT_TIMEOUT_S:g}s")


async def _handshake(
    stream: trio.abc.Stream, url: str, host: str, target: str, max_message_size: int
) -> WebSocketClient:
    """The HTTP upgrade. wsproto reads the response up to the end of its headers and nothing
    more; frames that came in the same read go through the fast path like all later ones."""
    conn = WSConnection(ConnectionType.CLIENT)
    client = WebSocketClient(stream, conn, max_message_size)
    failed = f"WebSocket handshake with {url} failed"
    try:
        await stream.send_all(conn.send(Request(host=host, target=target)))
        received = b""
        while True:
            data = await stream.receive_some(READ_SIZE)
            if not data:
                raise StreamError(f"{failed}: connection closed")
            received += data
            end = received.find(b"\r\n\r\n")
            if end < 0:
                if len(received) > MAX_HANDSHAKE_BYTES:
                    raise StreamError(f"{failed}: no end of the HTTP response")
                continue
            conn.receive_data(received[: end + 4])
            for event in conn.events():
                if isinstance(event, AcceptConnection):
                    await client._take(received[end + 4 :])
                    return client
                if isinstance(event, RejectConnection):
                    raise StreamError(f"{failed}: HTTP {event.status_code}")
            raise StreamError(f"{failed}: an HTTP response that is no upgrade")
    except RemoteProtocolError as exc:
        raise StreamError(f"{failed}: {exc}") from exc
    except _LOST as exc:
        raise StreamError(f"{failed}: {exc!r}") from exc
