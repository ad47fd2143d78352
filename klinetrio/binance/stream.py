"""Binance WebSocket kline streams: connections that connect, subscribe, read and reconnect.

``StreamGroup`` is the "streams" component: it splits the configured streams into connections of
at most ``streams_per_connection`` and runs one ``StreamConnection`` task for each. Every
connection owns a clone of the send end of the channel to the writer and closes it when it ends,
so the writer's intake finishes once the last connection is gone.

Per frame the reader does as little as possible: one msgspec decode and a look at ``k.x``. Only
closed candles travel on, one channel hop each; updates of candles still in progress are counted
and dropped. The writer's intake drains the channel at memory speed (see ``store.writer``), so
the reader never stalls long enough to miss one of Binance's pings.

Binance's rules that shape this module: at most 1024 streams per connection; at most 5 incoming
messages per second per connection (pongs and ``SUBSCRIBE`` requests both count), so
subscriptions are paced; the server pings every 20 seconds and drops a connection that does not
answer (trio-websocket answers pings while we keep reading).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

import msgspec
import trio
import trio_websocket
from loguru import logger

from klinetrio.backoff import Backoff
from klinetrio.binance import wire
from klinetrio.errors import StreamError
from klinetrio.intervals import Interval
from klinetrio.models import Candle, StreamKey

SUBSCRIBE_BATCH = 200
# Binance allows 5 incoming messages per second; stay below it with room for a pong.
SUBSCRIBE_PACE_S = 0.25
BAD_FRAMES_BEFORE_RECONNECT = 50


class SyncRequester(Protocol):
    """Who fills gaps: told when a series may have missed candles (see ``sync.Syncer``)."""

    def request_sync(self, key: StreamKey, start_ms: int | None) -> None: ...


class Transport(Protocol):
    """The little a connection needs from a WebSocket library."""

    async def send_message(self, message: str) -> None: ...

    async def get_message(self) -> str | bytes: ...


@asynccontextmanager
async def open_transport(url: str) -> AsyncIterator[Transport]:
    """A trio-websocket client connection, with its errors translated to ``StreamError``."""
    try:
        async with trio_websocket.open_websocket_url(
            url, message_queue_size=64, max_message_size=4 * 1024 * 1024, connect_timeout=10
        ) as ws:
            yield ws
    except trio_websocket.HandshakeError as exc:
        raise StreamError(f"WebSocket handshake with {url} failed: {exc}") from exc
    except trio_websocket.ConnectionClosed as exc:
        raise StreamError(f"connection closed: {exc.reason}") from exc
    except (OSError, trio.BrokenResourceError) as exc:
        raise StreamError(f"cannot reach {url}: {exc}") from exc


def plan_connections(keys: Sequence[StreamKey], per_connection: int) -> list[list[StreamKey]]:
    """Split streams into evenly sized connections of at most ``per_connection`` each."""
    if not keys:
        return []
    count = math.ceil(len(keys) / per_connection)
    size = math.ceil(len(keys) / count)
    return [list(keys[i : i + size]) for i in range(0, len(keys), size)]


@dataclass(slots=True)
class ConnectionStatistics:
    name: str
    streams: int
    state: str = "starting"
    frames: int = 0
    closed_candles: int = 0
    decode_errors: int = 0
    reconnects: int = 0
    connects: int = 0
    gaps_detected: int = 0
    last_frame_at: float | None = None
    last_event_ms: int | None = None
    last_error: str | None = None
    subscribed: bool = False


@dataclass(slots=True)
class _Series:
    interval: Interval
    last_closed: int | None = None


@dataclass(slots=True)
class _Reader:
    """Per-connection decode state; kept apart so the hot loop touches few attributes."""

    series: dict[str, _Series] = field(default_factory=dict)
    bad_in_a_row: int = 0


class StreamConnection:
    """One WebSocket connection carrying up to 1024 streams, reconnecting until cancelled."""

    def __init__(
        self,
        ws_url: str,
        keys: Sequence[StreamKey],
        *,
        name: str = "ws-1",
        stall_timeout: float = 60.0,
        syncer: SyncRequester | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self._url = ws_url.rstrip("/") + "/stream"
        self._keys = list(keys)
        self._by_stream = {key.stream_name: key for key in self._keys}
        self._stall_timeout = stall_timeout
        self._syncer = syncer
        self._backoff = backoff or Backoff(initial=1.0, maximum=60.0)
        self._stats = ConnectionStatistics(name=name, streams=len(self._keys))
        self._reader = _Reader(
            {k.stream_name: _Series(Interval.parse(k.interval)) for k in self._keys}
        )

    def statistics(self) -> ConnectionStatistics:
        return self._stats

    async def run(
        self,
        send_channel: trio.MemorySendChannel[Sequence[Candle]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Connect, subscribe, read; on any failure reconnect with backoff. Runs until cancelled."""
        stats = self._stats
        with send_channel, logger.contextualize(component="stream", connection=stats.name):
            while True:
                try:
                    await self._session(send_channel, task_status)
                    task_status = trio.TASK_STATUS_IGNORED
                except StreamError as exc:
                    stats.last_error = str(exc)
                    if stats.subscribed:
                        task_status = trio.TASK_STATUS_IGNORED
                    stats.subscribed = False
                    stats.state = "backoff"
                    stats.reconnects += 1
                    delay = self._backoff.next_delay()
                    logger.warning(
                        "{name} disconnected ({error}); reconnecting in {delay:.1f}s",
                        name=stats.name,
                        error=exc,
                        delay=delay,
                    )
                    await trio.sleep(delay)

    async def _session(
        self,
        send_channel: trio.MemorySendChannel[Sequence[Candle]],
        task_status: trio.TaskStatus[None],
    ) -> None:
        stats = self._stats
        stats.state = "connecting"
        async with open_transport(self._url) as ws:
            stats.connects += 1
            stats.state = "subscribing"
            logger.info("{name} connected to {url}", name=stats.name, url=self._url)
            await self._subscribe(ws)
            stats.subscribed = True
            stats.state = "live"
            logger.info("{name} subscribed {count} streams", name=stats.name, count=len(self._keys))
            self._request_sync_all()
            task_status.started()
            try:
                await self._read(ws, send_channel)
            except trio_websocket.ConnectionClosed as exc:
                raise StreamError(f"closed by server: {exc.reason}") from exc

    async def _subscribe(self, ws: Transport) -> None:
        names = list(self._by_stream)
        pending: set[int] = set()
        for number, start in enumerate(range(0, len(names), SUBSCRIBE_BATCH), 1):
            if number > 1:
                await trio.sleep(SUBSCRIBE_PACE_S)
            request = wire.Subscribe("SUBSCRIBE", names[start : start + SUBSCRIBE_BATCH], number)
            await ws.send_message(wire.encoder.encode(request).decode())
            pending.add(number)
        with trio.move_on_after(max(10.0, len(pending) * 2 * SUBSCRIBE_PACE_S)) as scope:
            while pending:
                message = await ws.get_message()
                try:
                    result = wire.command_result_decoder.decode(message)
                except msgspec.DecodeError:
                    try:
                        error = wire.command_error_decoder.decode(message)
                    except msgspec.DecodeError:
                        continue  # a kline frame may already arrive; the reader takes over soon
                    raise StreamError(f"subscription refused: {error.error.msg}") from None
                if isinstance(result.id, int):
                    pending.discard(result.id)
        if scope.cancelled_caught:
            raise StreamError("no answer to SUBSCRIBE within the time limit")

    def _request_sync_all(self) -> None:
        """After every (re)subscription, the time without a connection may hide closed candles."""
        if self._syncer is None:
            return
        for name, series in self._reader.series.items():
            key = self._by_stream[name]
            start = (
                None
                if series.last_closed is None
                else series.interval.next_open(series.last_closed)
            )
            self._syncer.request_sync(key, start)

    async def _read(
        self, ws: Transport, send_channel: trio.MemorySendChannel[Sequence[Candle]]
    ) -> None:
        stats = self._stats
        reader = self._reader
        series_of = reader.series
        decode = wire.combined_decoder.decode
        self._backoff.reset()
        while True:
            with trio.move_on_after(self._stall_timeout) as stall:
                message = await ws.get_message()
            if stall.cancelled_caught:
                raise StreamError(f"no frame for {self._stall_timeout:g}s (stalled)")
            stats.frames += 1
            stats.last_frame_at = trio.current_time()
            try:
                envelope = decode(message)
            except msgspec.DecodeError:
                self._other_message(message)
                continue
            reader.bad_in_a_row = 0
            event = envelope.data
            stats.last_event_ms = event.event_time
            kline = event.kline
            if not kline.closed:
                continue
            series = series_of.get(envelope.stream)
            if series is None:
                continue
            candle = kline.to_candle()
            last = series.last_closed
            if last is not None:
                if candle.open_time <= last:
                    continue  # a duplicate of a candle already sent on
                expected = series.interval.next_open(last)
                if candle.open_time > expected and self._syncer is not None:
                    stats.gaps_detected += 1
                    key = self._by_stream[envelope.stream]
                    logger.info(
                        "{key}: stream skipped from {expected} to {got}; filling from REST",
                        key=key,
                        expected=expected,
                        got=candle.open_time,
                    )
                    self._syncer.request_sync(key, expected)
            series.last_closed = candle.open_time
            stats.closed_candles += 1
            await send_channel.send((candle,))

    def _other_message(self, message: str | bytes) -> None:
        """Not a kline frame: a server notice, a late answer, or garbage (counted and skipped)."""
        try:
            wire.shutdown_decoder.decode(message)
        except msgspec.DecodeError:
            pass
        else:
            logger.info("{name}: server announced shutdown; will reconnect", name=self._stats.name)
            return
        try:
            wire.command_result_decoder.decode(message)
        except msgspec.DecodeError:
            pass
        else:
            return
        stats = self._stats
        stats.decode_errors += 1
        self._reader.bad_in_a_row += 1
        if stats.decode_errors <= 10 or stats.decode_errors % 1000 == 0:
            text = message if isinstance(message, str) else message.decode("utf-8", "replace")
            logger.warning(
                "{name}: skipped a malformed frame ({count} so far): {frame}",
                name=stats.name,
                count=stats.decode_errors,
                frame=text[:200],
            )
        if self._reader.bad_in_a_row >= BAD_FRAMES_BEFORE_RECONNECT:
            raise StreamError(f"{self._reader.bad_in_a_row} malformed frames in a row")


class StreamGroup:
    """The "streams" component: every configured stream, over as many connections as it takes."""

    def __init__(
        self,
        ws_url: str,
        keys: Sequence[StreamKey],
        *,
        streams_per_connection: int = 1024,
        stall_timeout: float = 60.0,
        syncer: SyncRequester | None = None,
    ) -> None:
        self.connections = [
            StreamConnection(
                ws_url, shard, name=f"ws-{n}", stall_timeout=stall_timeout, syncer=syncer
            )
            for n, shard in enumerate(plan_connections(keys, streams_per_connection), 1)
        ]

    def statistics(self) -> list[ConnectionStatistics]:
        return [c.statistics() for c in self.connections]

    @property
    def all_subscribed(self) -> bool:
        return all(c.statistics().subscribed for c in self.connections)

    async def run(
        self,
        send_channel: trio.MemorySendChannel[Sequence[Candle]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run every connection; report started once each has subscribed for the first time."""
        with send_channel:
            async with trio.open_nursery() as nursery:
                # Start the connections side by side: each subscribes at Binance's pace.
                async with trio.open_nursery() as starting:
                    for connection in self.connections:
                        starting.start_soon(nursery.start, connection.run, send_channel.clone())
                task_status.started()
