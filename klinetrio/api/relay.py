"""The WebSocket relay: Binance's stream protocol on klinetrio's own port, fed by the fan-out.

A Binance client pointed at klinetrio works unchanged::

    /ws/<stream>[/<stream>...]   raw events (no envelope)
    /ws                          raw, streams by SUBSCRIBE
    /stream?streams=a/b          combined: {"stream": "...", "data": {...}}
    /stream                      combined, streams by SUBSCRIBE

Requests, and the replies Binance gives them::

    {"method": "SUBSCRIBE", "params": ["btcusdt@kline_1m"], "id": 1}   {"result": null, "id": 1}
    {"method": "UNSUBSCRIBE", "params": [...], "id": 2}                {"result": null, "id": 2}
    {"method": "LIST_SUBSCRIPTIONS", "id": 3}                          {"result": [...], "id": 3}
    {"method": "SET_PROPERTY", "params": ["combined", true], "id": 4}  {"result": null, "id": 4}
    {"method": "GET_PROPERTY", "params": ["combined"], "id": 5}        {"result": true, "id": 5}
    a stream klinetrio does not collect                    {"error": {"code": 2, "msg":
                                                             "Invalid request: invalid stream"},
                                                            "id": 1}

Binance's limits hold: at most 1024 streams and 5 incoming messages a second per connection
(more closes it, code 1008). Events are relayed as received, in-progress and closed, each frame's
text passed on as it came (the data part of the envelope for raw streams), never re-encoded.

Backpressure: each client is an observer with a bounded queue. A client that falls more than
its queue behind is closed with code 1008 ("too slow") and counted; nobody else waits for it.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import msgspec
import trio
from loguru import logger
from starlette.websockets import WebSocket, WebSocketDisconnect

from klinetrio.fanout import Observed, Observer, Overflow

MAX_STREAMS = 1024
MAX_MESSAGES_PER_S = 5
QUEUE = 2_000
POLICY_VIOLATION = 1008
# Closing a client that fell behind: its socket may be full, so the close frame may never go.
CLOSE_TIMEOUT_S = 1.0


class Observable(Protocol):
    """What the relay needs of the fan-out (``fanout.Fanout`` is one)."""

    def subscribe(
        self,
        market: str,
        streams: list[str] | None,
        *,
        capacity: int = ...,
        name: str | None = ...,
        overflow: Overflow = ...,
        on_overflow: Callable[[], None] | None = ...,
    ) -> tuple[Observer, trio.MemoryReceiveChannel[Observed]]: ...

    def unknown(self, market: str, streams: list[str]) -> list[str]: ...

    def add_streams(self, observer: Observer, streams: list[str]) -> None: ...

    def remove_streams(self, observer: Observer, streams: list[str]) -> None: ...

    def remove(self, observer: Observer) -> None: ...


@dataclass(frozen=True, slots=True)
class RelayStatistics:
    clients: int = 0
    accepted: int = 0
    frames_sent: int = 0
    closed_too_slow: int = 0
    closed_too_many_messages: int = 0


class _RawEnvelope(msgspec.Struct, frozen=True):
    stream: str
    data: msgspec.Raw


_raw_envelope = msgspec.json.Decoder(_RawEnvelope)


def raw_payload(item: Observed) -> str:
    """The ``data`` of the combined envelope, as the exchange sent it (what ``/ws`` carries)."""
    frame = item.frame if isinstance(item.frame, str) else item.frame.decode()
    head = f'{{"stream":"{item.stream}","data":'
    if frame.startswith(head) and frame.endswith("}"):
        return frame[len(head) : -1]
    return bytes(_raw_envelope.decode(frame).data).decode()  # spaced differently: parse it


def error_reply(msg: str, request_id: object, code: int = 2) -> str:
    return json.dumps(
        {"error": {"code": code, "msg": msg}, "id": request_id}, separators=(",", ":")
    )


def result_reply(result: object, request_id: object) -> str:
    return json.dumps({"result": result, "id": request_id}, separators=(",", ":"))


class Relay:
    """The relay for one market; ``handle`` is its Starlette WebSocket endpoint."""

    def __init__(
        self,
        fanout: Observable,
        market: str = "spot",
        *,
        queue: int = QUEUE,
        max_streams: int = MAX_STREAMS,
        max_messages_per_s: int = MAX_MESSAGES_PER_S,
    ) -> None:
        self._fanout = fanout
        self._market = market
        self._queue = queue
        self._max_streams = max_streams
        self._max_rate = max_messages_per_s
        self._stats = RelayStatistics()

    def statistics(self) -> RelayStatistics:
        return self._stats

    def _count(self, **changes: int) -> None:
        self._stats = replace(
            self._stats, **{k: getattr(self._stats, k) + v for k, v in changes.items()}
        )

    async def handle(self, websocket: WebSocket) -> None:
        path = websocket.url.path.rstrip("/")
        combined = path.startswith("/stream")
        if combined:
            asked = [s for s in websocket.query_params.get("streams", "").split("/") if s]
        else:
            asked = [s for s in path.removeprefix("/ws").split("/") if s]
        await websocket.accept()
        # Falling behind cancels the client at once: its send may be blocked on a full socket.
        session = trio.CancelScope()
        observer, events = self._fanout.subscribe(
            self._market,
            [],
            capacity=self._queue,
            name="relay",
            overflow="close",
            on_overflow=session.cancel,
        )
        client = _Client(self, websocket, observer, combined)
        self._count(clients=1, accepted=1)
        try:
            with events, session:
                if asked:
                    await client.subscribe_named(asked)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(client.send_events, events, nursery.cancel_scope)
                    nursery.start_soon(client.serve_requests, nursery.cancel_scope)
            if observer.closed_for_overflow:
                self._count(closed_too_slow=1)
                logger.info("relay client fell behind the stream: closed (1008)")
                with trio.move_on_after(CLOSE_TIMEOUT_S):
                    await websocket.close(POLICY_VIOLATION, "too slow: fell behind the stream")
        except WebSocketDisconnect:
            pass
        finally:
            self._fanout.remove(observer)
            self._count(clients=-1)


class _Client:
    """One relay connection: its observer, its mode, and who may send on its socket."""

    def __init__(
        self, relay: Relay, websocket: WebSocket, observer: Observer, combined: bool
    ) -> None:
        self.relay = relay
        self.websocket = websocket
        self.observer = observer
        self.combined = combined
        self.streams: list[str] = []  # in the order subscribed, for LIST_SUBSCRIPTIONS
        self._send_lock = trio.Lock()

    async def send(self, text: str) -> None:
        async with self._send_lock:
            await self.websocket.send_text(text)

    async def close(self, code: int, reason: str) -> None:
        async with self._send_lock:
            await self.websocket.close(code, reason)

    async def send_events(
        self, events: trio.MemoryReceiveChannel[Observed], done: trio.CancelScope
    ) -> None:
        relay = self.relay
        sent = 0
        try:
            async for first in events:
                # What queued up meanwhile goes out under one hold of the lock: every await on
                # the way to the socket is a turn of the whole loop, and under load a turn is
                # milliseconds (see bench/README.md, relay).
                async with self._send_lock:
                    item: Observed | None = first
                    while item is not None:
                        try:
                            if self.combined:
                                frame = item.frame
                                text = frame if isinstance(frame, str) else frame.decode()
                            else:
                                text = raw_payload(item)
                        except UnicodeDecodeError:
                            pass  # not UTF-8: no client could read it as text
                        else:
                            await self.websocket.send_text(text)
                            sent += 1
                        try:
                            item = events.receive_nowait()
                        except trio.WouldBlock:
                            item = None
                        except trio.EndOfChannel:
                            return
                if sent >= 100:
                    relay._count(frames_sent=sent)
                    sent = 0
        finally:
            relay._count(frames_sent=sent)
            done.cancel()

    async def serve_requests(self, done: trio.CancelScope) -> None:
        recent: deque[float] = deque()
        try:
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                now = trio.current_time()
                recent.append(now)
                while recent and recent[0] <= now - 1.0:
                    recent.popleft()
                if len(recent) > self.relay._max_rate:
                    self.relay._count(closed_too_many_messages=1)
                    logger.info(
                        "relay client sent more than {limit} messages a second: closed",
                        limit=self.relay._max_rate,
                    )
                    await self.close(POLICY_VIOLATION, "Too many requests")
                    return
                text = message.get("text")
                if text is None and message.get("bytes") is not None:
                    text = message["bytes"].decode("utf-8", "replace")
                if text is not None:
                    await self.send(await self.answer(text))
        finally:
            done.cancel()

    async def answer(self, text: str) -> str:
        try:
            request: Any = json.loads(text)
        except ValueError as exc:
            return error_reply(f"Invalid JSON: {exc}", None, code=3)
        if not isinstance(request, dict):
            return error_reply("Invalid JSON: expected an object", None, code=3)
        request_id = request.get("id")
        if isinstance(request_id, bool) or not isinstance(request_id, int) or request_id < 0:
            return error_reply("Invalid request: request ID must be an unsigned integer", None)
        method = request.get("method")
        params = request.get("params", [])
        if method == "LIST_SUBSCRIPTIONS":
            return result_reply(list(self.streams), request_id)
        if method == "GET_PROPERTY":
            if params == ["combined"]:
                return result_reply(self.combined, request_id)
            return error_reply("Invalid request: unknown property", request_id)
        if method == "SET_PROPERTY":
            if isinstance(params, list) and len(params) == 2 and params[0] == "combined":
                if isinstance(params[1], bool):
                    self.combined = params[1]
                    return result_reply(None, request_id)
                return error_reply(
                    "Invalid request: property value must be a boolean", request_id, 1
                )
            return error_reply("Invalid request: unknown property", request_id)
        if method not in ("SUBSCRIBE", "UNSUBSCRIBE"):
            return error_reply(
                f"Invalid request: unknown variant `{method}`, expected one of `SUBSCRIBE`, "
                "`UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY`",
                request_id,
            )
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            return error_reply("Invalid request: params must be a list of stream names", request_id)
        if method == "SUBSCRIBE":
            return await self.subscribe(params, request_id)
        self.relay._fanout.remove_streams(self.observer, params)
        self.streams = [s for s in self.streams if s not in set(params)]
        return result_reply(None, request_id)

    async def subscribe_named(self, streams: list[str]) -> None:
        """The streams of the URL: the ones klinetrio collects, and an error reply (with no
        id) for the others; the connection stays open either way."""
        unknown = set(self.relay._fanout.unknown(self.relay._market, streams))
        if unknown:
            await self.send(error_reply("Invalid request: invalid stream", None))
        known = [s for s in streams if s not in unknown]
        if known:
            reply = await self.subscribe(known, None)
            if "error" in reply:
                await self.send(reply)

    async def subscribe(self, streams: list[str], request_id: int | None) -> str:
        """All or nothing, as on Binance: one unknown stream refuses the whole request."""
        fanout = self.relay._fanout
        if fanout.unknown(self.relay._market, streams):
            return error_reply("Invalid request: invalid stream", request_id)
        new = [s for s in dict.fromkeys(streams) if s not in self.streams]
        if len(self.streams) + len(new) > self.relay._max_streams:
            return error_reply(
                f"Invalid request: too many streams (at most {self.relay._max_streams} per"
                " connection)",
                request_id,
            )
        fanout.add_streams(self.observer, new)
        self.streams.extend(new)
        return result_reply(None, request_id)


__all__ = ["Observable", "Relay", "RelayStatistics", "error_reply", "raw_payload", "result_reply"]
