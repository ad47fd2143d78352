"""The WebSocket face of the fake exchange: kline streams and the kinds beside them (aggTrade,
bookTicker, ticker, depth20: see ``feeds``), combined or raw, with SUBSCRIBE & co., keepalive
pings, Binance's message-rate limit, and the stream faults (drops, garbage, duplicates,
serverShutdown), which hit the frames of every kind alike: ``--drop-after`` counts every frame,
``--garbage`` spoils any, ``--duplicates`` repeats closed candles and trades.

Spot is served at ``/stream`` and ``/ws``; USD-M at ``/usdm/stream`` and ``/usdm/ws``, COIN-M
at ``/coinm/stream`` and ``/coinm/ws`` (a futures WebSocket base is the simulator's address plus
``/usdm`` or ``/coinm``). Futures events have spot's kline shape (COIN-M names like
``btcusd_perp@kline_1m``), futures serve no ``1s`` candles and allow 10 incoming messages a
second instead of 5.

Per connection, one nursery holds four tasks: the sender (one ``send_many`` per wake, woken by
the next candle close, update tick or, every ``FEED_TICK_S`` at most, the other kinds' frames),
the command reader (SUBSCRIBE & co., at most 5 messages a second), the keepalive (pings, pong
deadline) and, with ``--close-after``, the lifetime timer. When any of them ends, the
connection ends.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import trio
from loguru import logger

from klinetrio.core.intervals import Interval
from klinetrio.simulate.config import UPDATE_SLICES
from klinetrio.simulate.faults import drop_point
from klinetrio.simulate.feeds import Feed, garble, parse_stream
from klinetrio.simulate.market import partial_bar
from klinetrio.simulate.state import Exchange
from klinetrio.simulate.venues import Venue
from klinetrio.simulate.web import Request, WebSocket, WebSocketClosed

_encoder = msgspec.json.Encoder()
# How often, at most, a connection's sender wakes for the other kinds (a frame leaves up to this
# much after its time; at 10,000 book updates a second this is what keeps the sender's wakes,
# and its sends, at ~100 a second per connection instead of one per frame).
FEED_TICK_S = 0.01


class StreamFace:
    """Accepts the simulator's WebSocket clients and runs one ``_Connection`` for each."""

    def __init__(self, sim: Exchange) -> None:
        self.sim = sim
        self.config = sim.config
        self._stats = sim.counters
        self._connection_ids = itertools.count(1)

    async def handle(self, request: Request, ws: WebSocket) -> None:
        path = request.path.rstrip("/") or "/"
        market = "spot"
        for name in ("usdm", "coinm"):
            if path == f"/{name}" or path.startswith(f"/{name}/"):
                market, path = name, path[len(name) + 1 :] or "/"
        if path == "/stream":
            combined = True
            names = [n for n in request.query.get("streams", "").split("/") if n]
        elif path == "/ws" or path.startswith("/ws/"):
            combined = False
            names = [n for n in path[4:].split("/") if n]
        else:
            await ws.reject(404, b"404 Not Found\n")
            return
        if len(names) > self.config.max_streams:
            await ws.reject(400, b"too many streams\n")
            return
        ws.answer_pings = not self.config.no_pong
        await ws.accept()
        venue = self.sim.venues[market]
        connection = _Connection(self.sim, venue, ws, combined, next(self._connection_ids))
        with logger.contextualize(component="simulate", connection=connection.id):
            self._stats.connections_total += 1
            self._stats.connections_open += 1
            logger.info(
                "client connected from {client} to {path}",
                client=request.client,
                path=request.path,
            )
            try:
                await connection.run(names)
            finally:
                self._stats.connections_open -= 1
                self._stats.streams_subscribed -= len(connection.subs)
                logger.info("client disconnected after {frames} frames", frames=connection.frames)


@dataclass(slots=True)
class _Sub:
    """One subscribed stream on one connection, with its frame prefix pre-encoded."""

    name: str
    symbol: str
    interval: Interval | None  # None: a name we do not serve (Binance accepts it, sends nothing)
    head: bytes = b""
    mid: bytes = b""
    tail: bytes = b""


@dataclass(slots=True)
class _Group:
    """The streams of one interval: their candles open and close together."""

    interval: Interval
    open_ms: int
    subs: list[_Sub] = field(default_factory=list)


class _Connection:
    """One WebSocket client of the simulator."""

    def __init__(
        self, sim: Exchange, venue: Venue, ws: WebSocket, combined: bool, conn_id: int
    ) -> None:
        self.sim = sim
        self.venue = venue
        self.ws = ws
        self.combined = combined
        self.id = conn_id
        self.subs: dict[str, _Sub] = {}
        self.groups: dict[str, _Group] = {}
        self.feeds: dict[str, Feed] = {}  # the streams of other kinds
        self.frames = 0
        self.changed = trio.Event()
        self.rng = random.Random(sim.config.seed * 1_000_003 + conn_id)
        self.drop_at = drop_point(sim.config, self.rng)
        self.closed_pending: list[str] = []  # closed frames of the batch being sent (--sent-log)

    async def run(self, initial: list[str]) -> None:
        self._subscribe(initial)
        if initial:
            logger.info("subscribed {count} streams", count=len(initial))
        config = self.sim.config
        async with trio.open_nursery() as nursery:

            async def until_done(task: Callable[[], Awaitable[None]]) -> None:
                with contextlib.suppress(WebSocketClosed):
                    await task()
                nursery.cancel_scope.cancel()

            nursery.start_soon(until_done, self._run_sender)
            nursery.start_soon(until_done, self._run_commands)
            nursery.start_soon(until_done, self._run_keepalive)
            if config.close_after is not None:
                nursery.start_soon(until_done, self._run_lifetime)

    # --- subscriptions ---------------------------------------------------------------------

    def _make_sub(self, name: str) -> _Sub:
        symbol_part, sep, interval_name = name.partition("@kline_")
        symbol = symbol_part.upper()
        served = (
            sep
            and symbol_part == symbol_part.lower()
            and self.venue.has(symbol)
            and self.venue.serves_interval(interval_name)
        )
        if not served:
            return _Sub(name, symbol, None)
        event = b'{"e":"kline","E":'
        head = b'{"stream":"' + name.encode() + b'","data":' + event if self.combined else event
        return _Sub(
            name,
            symbol,
            Interval(interval_name),
            head=head,
            mid=b',"s":"' + symbol.encode() + b'","k":',
            tail=b"}}" if self.combined else b"}",
        )

    def _subscribe(self, names: Sequence[str]) -> None:
        now_ms = self.sim.clock.now_ms()
        for name in names:
            if name in self.subs:
                continue
            sub = self._make_sub(name)
            self.subs[name] = sub
            self.sim.counters.streams_subscribed += 1
            if sub.interval is None:
                feed = self._make_feed(name, now_ms)
                if feed is not None:
                    self.feeds[name] = feed
                continue
            group = self.groups.get(sub.interval.name)
            if group is None:
                group = _Group(sub.interval, sub.interval.floor(now_ms))
                self.groups[sub.interval.name] = group
            group.subs.append(sub)
        self._wake()

    def _make_feed(self, name: str, now_ms: int) -> Feed | None:
        spec = parse_stream(name)
        if spec is None or not self.venue.has(spec.symbol):
            return None
        venue = self.venue
        return Feed(
            name,
            spec,
            venue.name,
            venue.trades,
            venue.books,
            self.sim.config,
            self.combined,
            now_ms,
        )

    def _unsubscribe(self, names: Sequence[str]) -> None:
        for name in names:
            sub = self.subs.pop(name, None)
            if sub is None:
                continue
            self.feeds.pop(name, None)
            self.sim.counters.streams_subscribed -= 1
            if sub.interval is not None:
                group = self.groups[sub.interval.name]
                group.subs.remove(sub)
                if not group.subs:
                    del self.groups[sub.interval.name]
        self._wake()

    def _wake(self) -> None:
        self.changed.set()

    # --- the sender ------------------------------------------------------------------------

    async def _run_sender(self) -> None:
        """Wake at the next candle close or update tick, send everything due in one batch."""
        config = self.sim.config
        clock = self.sim.clock
        # Each stream gets its updates at a phase of its own, as on Binance, whose per-stream
        # pushes are not aligned: a tick sends one slice of the streams, so thousands of update
        # frames flow evenly instead of leaving together once a second.
        rate = config.updates_per_second * UPDATE_SLICES
        period = 1.0 / rate if rate > 0 else math.inf
        next_update = trio.current_time() + period
        tick = 0
        while True:
            if self.changed.is_set():
                self.changed = trio.Event()
            now = trio.current_time()
            now_ms = clock.now_ms(now)
            batch: list[bytes] = []
            closed = 0
            for group in self.groups.values():
                closed += self._emit_closed(group, now_ms, batch)
            if now >= next_update:
                for group in self.groups.values():
                    self._emit_partial(group, now_ms, batch, tick % UPDATE_SLICES)
                tick += 1
                next_update += period
                if next_update <= now:
                    next_update = now + period
            kinds = self._emit_feeds(now_ms, batch)
            if batch and not await self._send(batch, closed, kinds):
                return
            deadline = next_update
            for group in self.groups.values():
                deadline = min(deadline, clock.real_at(group.interval.next_open(group.open_ms)))
            if self.feeds:
                due = min(feed.due_ms() for feed in self.feeds.values())
                # The other kinds' frames leave together, on a grid of FEED_TICK_S: streams
                # with phases of their own would otherwise wake the sender every millisecond.
                grid = math.ceil(clock.real_at(due) / FEED_TICK_S) * FEED_TICK_S
                deadline = min(deadline, grid)
            deadline = max(deadline, now + 0.0002)
            with trio.move_on_at(deadline):
                await self.changed.wait()

    def _emit_closed(self, group: _Group, now_ms: int, batch: list[bytes]) -> int:
        market = self.venue.candles
        interval = group.interval
        count = 0
        while True:
            close_time = interval.close_time(group.open_ms)
            if now_ms <= close_time:
                return count
            event_time = close_time + 1 + min(now_ms - close_time - 1, 10)
            e = str(event_time).encode()
            for sub in group.subs:
                bar = market.bar(sub.symbol, interval.name, group.open_ms)
                if bar is None:
                    continue
                frame = b"".join((sub.head, e, sub.mid, bar.kline_json(True), sub.tail))
                batch.append(frame)
                count += 1
                if self.sim.config.sent_log is not None:
                    self.closed_pending.append(f"{sub.symbol} {interval.name} {group.open_ms}")
                if self.sim.config.duplicates and self.rng.random() < self.sim.config.duplicates:
                    batch.append(frame)
                    self.sim.counters.duplicate_frames += 1
                    count += 1
            group.open_ms = interval.next_open(group.open_ms)

    def _emit_partial(self, group: _Group, now_ms: int, batch: list[bytes], phase: int) -> None:
        market = self.venue.candles
        interval = group.interval
        e = str(now_ms).encode()
        for sub in group.subs[phase::UPDATE_SLICES]:
            bar = market.bar(sub.symbol, interval.name, group.open_ms)
            if bar is None:
                continue
            k = partial_bar(bar, now_ms).kline_json(False)
            batch.append(b"".join((sub.head, e, sub.mid, k, sub.tail)))

    def _emit_feeds(self, now_ms: int, batch: list[bytes]) -> list[tuple[int, str]]:
        """Append the due frames of the other kinds; (index in ``batch``, kind) of each."""
        kinds: list[tuple[int, str]] = []
        duplicates = self.sim.config.duplicates
        sent = self.closed_pending if self.sim.config.sent_log is not None else None
        for feed in self.feeds.values():
            start = len(batch)
            if not feed.emit(now_ms, batch, sent):
                continue
            if duplicates and feed.kind == "aggTrade":
                frames = batch[start:]
                del batch[start:]
                for frame in frames:
                    batch.append(frame)
                    if self.rng.random() < duplicates:
                        batch.append(frame)
                        self.sim.counters.duplicate_frames += 1
            kinds.extend((index, feed.kind) for index in range(start, len(batch)))
        return kinds

    async def _send(
        self, batch: list[bytes], closed: int, kinds: Sequence[tuple[int, str]] = ()
    ) -> bool:
        """Send a batch with the configured faults; False once the connection was dropped."""
        config = self.sim.config
        stats = self.sim.counters
        if config.garbage:
            first_kind = kinds[0][0] if kinds else len(batch)
            for index, frame in enumerate(batch):
                if self.rng.random() < config.garbage:
                    if index < first_kind:
                        batch[index] = self._garble(frame)
                    else:
                        batch[index] = garble(frame, self.rng.random() < 0.5)
                    stats.garbage_frames += 1
        drop = False
        if self.drop_at is not None and self.frames + len(batch) >= self.drop_at:
            batch = batch[: self.drop_at - self.frames]
            closed = sum(1 for frame in batch if b'"x":true' in frame)
            drop = True
        for index, kind in kinds:
            if index >= len(batch):
                break
            stats.kind_frames_sent[kind] = stats.kind_frames_sent.get(kind, 0) + 1
        if self.closed_pending:
            # Wall clock (what the database's clock reads) as the batch is handed to the socket:
            # a large batch may take a while to leave, and its first frames can be read, and
            # committed, before the last has gone.
            sent_ms = time.time_ns() // 1_000_000
            self.sim.sent.extend(f"{key} {sent_ms}\n" for key in self.closed_pending)
            self.closed_pending.clear()
        await self.ws.send_many(batch)
        self.frames += len(batch)
        stats.frames_sent += len(batch)
        stats.closed_frames_sent += closed
        logger.debug("sent {count} frames ({closed} closed)", count=len(batch), closed=closed)
        if drop:
            stats.dropped_connections += 1
            logger.info("dropping the connection after {frames} frames", frames=self.frames)
            await self.ws.abort()
            return False
        return True

    def _garble(self, frame: bytes) -> bytes:
        if self.rng.random() < 0.5:
            return frame[: len(frame) // 2]  # invalid JSON
        if b'"x":true' in frame:
            return frame.replace(b'"x":true', b'"x":"true"', 1)  # ill-typed field
        return frame.replace(b'"t":', b'"t":"', 1).replace(b',"T":', b'","T":', 1)

    # --- commands, keepalive, lifetime -----------------------------------------------------

    async def _run_commands(self) -> None:
        """Answer SUBSCRIBE/UNSUBSCRIBE/LIST_SUBSCRIPTIONS; more than the allowed messages per
        second closes the connection, as on Binance."""
        limit = self.venue.max_messages_per_second
        recent: deque[float] = deque()
        while True:
            message = await self.ws.receive()
            if message is None:
                return
            now = trio.current_time()
            recent.append(now)
            while recent[0] <= now - 1.0:
                recent.popleft()
            if len(recent) > limit:
                self.sim.counters.message_rate_closes += 1
                logger.warning("closing: more than {limit} messages a second", limit=limit)
                await self.ws.close(1008, "Too many requests")
                return
            await self.ws.send_text(_encoder.encode(self._command(message)))

    def _command(self, message: str) -> dict[str, Any]:
        try:
            request = msgspec.json.decode(message)
        except msgspec.DecodeError as exc:
            return {"error": {"code": 3, "msg": f"Invalid JSON: {exc}"}, "id": None}
        if not isinstance(request, dict):
            return {"error": {"code": 3, "msg": "Invalid JSON: expected an object"}, "id": None}
        request_id = request.get("id")
        if isinstance(request_id, bool) or not isinstance(request_id, int) or request_id < 0:
            return _ws_error("Invalid request: request ID must be an unsigned integer", None)
        method = request.get("method")
        params = request.get("params", [])
        if method not in ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS"):
            return _ws_error(
                f"Invalid request: unknown variant {method!r}, expected one of SUBSCRIBE, "
                "UNSUBSCRIBE, LIST_SUBSCRIPTIONS",
                request_id,
            )
        if method == "LIST_SUBSCRIPTIONS":
            return {"result": list(self.subs), "id": request_id}
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            return _ws_error("Invalid request: params must be a list of stream names", request_id)
        if method == "SUBSCRIBE":
            new = [p for p in dict.fromkeys(params) if p not in self.subs]
            if len(self.subs) + len(new) > self.sim.config.max_streams:
                return _ws_error(
                    f"Invalid request: too many streams (max {self.sim.config.max_streams} "
                    "per connection)",
                    request_id,
                )
            self._subscribe(new)
            logger.info("subscribed {count} streams", count=len(new))
        else:
            self._unsubscribe(params)
            logger.info("unsubscribed {count} streams", count=len(params))
        return {"result": None, "id": request_id}

    async def _run_keepalive(self) -> None:
        """Ping every ``ping_interval``; close if the oldest unanswered ping is too old."""
        config = self.sim.config
        ws = self.ws
        unanswered_since: float | None = None
        for n in itertools.count(1):
            await trio.sleep(config.ping_interval)
            now = trio.current_time()
            if unanswered_since is not None and ws.last_pong_at >= unanswered_since:
                unanswered_since = None
            if unanswered_since is not None and now - unanswered_since >= config.pong_timeout:
                self.sim.counters.pong_timeouts += 1
                logger.warning(
                    "closing: no pong for {seconds:.1f} s", seconds=now - unanswered_since
                )
                await ws.close(1008, "pong timeout")
                return
            if unanswered_since is None:
                unanswered_since = now
            await ws.ping(str(n).encode())

    async def _run_lifetime(self) -> None:
        """Binance's 24-hour limit in miniature: serverShutdown, then a clean close."""
        assert self.sim.config.close_after is not None
        await trio.sleep(self.sim.config.close_after)
        event = {"e": "serverShutdown", "E": self.sim.clock.now_ms()}
        message = {"stream": "serverShutdown", "data": event} if self.combined else event
        self.sim.counters.shutdown_closes += 1
        logger.info(
            "closing after {seconds} s with serverShutdown", seconds=self.sim.config.close_after
        )
        await self.ws.send_text(_encoder.encode(message))
        # Binance announces, then closes a while later: a client that rotates at once overlaps.
        await trio.sleep(self.sim.config.shutdown_grace)
        await self.ws.close(1000, "server shutdown")


def _ws_error(msg: str, request_id: int | None) -> dict[str, Any]:
    return {"error": {"code": 2, "msg": msg}, "id": request_id}
