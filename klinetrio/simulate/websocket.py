"""The server side of a WebSocket connection for ``web.serve_http``: a thin Trio shell around
wsproto that frames outgoing messages itself (see ``WebSocket``).

Backpressure: a ``WebSocket`` keeps at most ``_RECEIVE_QUEUE`` unread messages; past that its
reader stops reading the socket (TCP pushes back on the client) and, with it, stops answering
pings. Sends are serialized by a lock, so frames of concurrent senders never interleave.
"""

from __future__ import annotations

import contextlib
import math
import struct
from collections.abc import Awaitable, Callable, Sequence

import trio
import wsproto
import wsproto.events as wse
from loguru import logger
from wsproto.connection import ConnectionState

from klinetrio.errors import KlinetrioError

__all__ = ["WebSocket", "WebSocketClosed"]

_READ_SIZE = 65_536
_MAX_MESSAGE = 1_048_576
_RECEIVE_QUEUE = 64
# How long close() waits for the peer's close frame before dropping the connection anyway.
_CLOSE_GRACE_S = 2.0


class WebSocketClosed(KlinetrioError):
    """The WebSocket is closed (by either side, or dropped); nothing more can be sent."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"websocket closed ({code} {reason})".strip())
        self.code = code
        self.reason = reason


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

    async def serve(
        self, handler: Callable[[], Awaitable[None]], trailing: bytes, path: str
    ) -> None:
        """Run ``handler`` beside the reader task (``trailing``: bytes already read past the
        upgrade); afterwards reject an upgrade the handler left open, or close cleanly."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._run_reader, trailing)
            try:
                await handler()
            except WebSocketClosed:
                pass
            except Exception:
                logger.exception("websocket handler failed for {path}", path=path)
            finally:
                if not self._accepted.is_set() and not self._closed.is_set():
                    await _quietly(self.reject(404, b"404 Not Found\n"))
                elif not self._closed.is_set():
                    with trio.move_on_after(_CLOSE_GRACE_S) as scope:
                        scope.shield = True
                        await _quietly(self.close(1000, ""))
                self._mark_closed(self._close_code, self._close_reason)
                nursery.cancel_scope.cancel()

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


async def _quietly(awaitable: Awaitable[None]) -> None:
    with contextlib.suppress(
        WebSocketClosed, trio.BrokenResourceError, trio.ClosedResourceError, OSError
    ):
        await awaitable
