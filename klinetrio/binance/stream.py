"""Binance WebSocket kline streams: connections that connect, subscribe, read, rotate, reconnect.

``StreamGroup`` is the "streams" component: it splits the configured streams into *shards* of at
most ``streams_per_connection`` and runs one ``StreamConnection`` task per shard. A shard is
served by one WebSocket *session* at a time, briefly two while it rotates::

    StreamGroup.run                 shares one ConnectBudget (per-IP attempt limit)
    └── StreamConnection.run        one per shard; owns the shard's nursery and its dedup state
        ├── session n               connect → SUBSCRIBE → started(session) → read
        │   ├── keepalive           our ping every ping_interval; no pong in time = dead
        │   └── stall watch         no frame for stall_timeout = dead
        └── session n+1             during a rotation: up and subscribed before n is cancelled

Why sessions and rotation: Binance closes every connection after 24 hours, and announces some
closes with a ``serverShutdown`` event. The shard replaces a session *before* that happens
(``max_connection_age``, default 23 h 50 min) or as soon as the notice arrives, make-before-
break: the new session is connected and subscribed, the old one reads on until it has caught
up with the new one (its backlog of frames in flight, see ``_hand_off``), then its cancel scope
is cancelled. For that moment both deliver the same candles; the shard's per-stream "last closed
open time" (and the holes the new session jumped over) is shared by its sessions, so each
closed candle crosses the channel at most once, though not necessarily in order. Any
other end of a session (server close, reset, stall, missing pong, a flood of bad frames) is a
failure: reconnect with capped, jittered backoff, then ask the syncer to fill the hole from REST.

Every connection of the group draws attempts from one ``ConnectBudget`` (Binance: 300 attempts
per 5 minutes per IP), so a reconnect storm across many shards stays within the limit whatever
each shard's backoff says.

Backpressure: every connection owns a clone of the send end of the channel to the writer and
closes it when it ends, so the writer's intake finishes once the last connection is gone. Per
frame the reader does as little as possible: one msgspec decode and a look at ``k.x``. Only
closed candles travel on, one channel hop each; updates of candles still in progress are counted
and dropped. The writer's intake drains the channel at memory speed (see ``store.writer``), so
the reader never stalls long enough to miss a ping; if it ever blocks that long, the missing
pong ends the session and the resulting gap is healed by sync.

Binance's rules that shape this module: at most 1024 streams per connection; at most 5 incoming
messages per second per connection (pings, pongs and ``SUBSCRIBE`` requests all count), so
subscriptions are paced and our own pings are rare; the server pings every 20 seconds and drops
a connection that does not answer (the transport answers pings while we keep reading).
"""

from __future__ import annotations

import itertools
import math
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Protocol

import msgspec
import trio
from loguru import logger

from klinetrio.binance import wire
from klinetrio.core.backoff import Backoff
from klinetrio.core.connect_budget import ConnectBudget
from klinetrio.core.intervals import Interval
from klinetrio.core.models import Candle, StreamKey
from klinetrio.errors import StreamError
from klinetrio.fanout import Fanout, Observed, Observer
from klinetrio.net.websocket import open_websocket

SUBSCRIBE_BATCH = 200
# Binance allows 5 incoming messages per second; stay below it with room for a pong or a ping.
SUBSCRIBE_PACE_S = 0.25
BAD_FRAMES_BEFORE_RECONNECT = 50
# Binance closes a connection at 24 h; rotate with ten minutes to spare.
MAX_CONNECTION_AGE_S = 23 * 3600 + 50 * 60
PING_INTERVAL_S = 30.0
PONG_TIMEOUT_S = 10.0
# Malformed frames: the first few are logged, then one line per period with a count.
BAD_FRAME_LOG_BURST = 3
BAD_FRAME_LOG_EVERY_S = 10.0
BAD_FRAME_LOG_CHARS = 200
# A rotation's hand-off: how long the old session may take to catch up with the new one, and
# how often the shard looks (it lasts milliseconds when the reader keeps up).
HANDOFF_TIMEOUT_S = 5.0
HANDOFF_POLL_S = 0.005
MAX_HOLES_PER_SERIES = 64


class SyncRequester(Protocol):
    """Who fills gaps: told when a series may have missed candles (see ``sync.Syncer``)."""

    def request_sync(self, key: StreamKey, start_ms: int | None) -> None: ...


class Transport(Protocol):
    """The little a connection needs from a WebSocket library (so a thinner one can replace it).

    ``ping`` sends a ping and returns when its pong arrives; callers put a deadline around it.
    Errors of the library must surface as ``StreamError`` from ``open_transport``.
    """

    async def send_message(self, message: str) -> None: ...

    async def get_message(self) -> str | bytes: ...

    async def ping(self, payload: bytes | None = None) -> None: ...


@asynccontextmanager
async def open_transport(
    url: str, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[Transport]:
    """A client connection of ``transport``: no reader task, no per-message channel hop.

    Its errors are ``StreamError``; the server's close (or a dropped TCP connection) is a
    ``transport.ConnectionClosed`` reading ``closed by server: <code> <name> (<reason>)``. On
    exit it closes within ``transport.CLOSE_TIMEOUT_S``: short, because we close our side
    mostly when the peer is dead or being replaced.
    """
    async with open_websocket(url, ssl_context=ssl_context) as ws:
        yield ws


def plan_connections(keys: Sequence[StreamKey], per_connection: int) -> list[list[StreamKey]]:
    """Split streams into evenly sized connections of at most ``per_connection`` each."""
    if not keys:
        return []
    count = math.ceil(len(keys) / per_connection)
    size = math.ceil(len(keys) / count)
    return [list(keys[i : i + size]) for i in range(0, len(keys), size)]


@dataclass(slots=True)
class ConnectionStatistics:
    """Counters of one shard (all its sessions); read by ``http`` at request time.

    ``reconnects`` counts connection attempts made because a session or an attempt failed;
    ``rotations`` counts planned replacements (connection age, ``serverShutdown``), which are
    not failures. ``open_connections`` is 2 while a rotation overlaps, 0 once stopped.
    """

    name: str
    streams: int
    state: str = "starting"
    frames: int = 0
    closed_candles: int = 0
    decode_errors: int = 0
    reconnects: int = 0
    rotations: int = 0
    connect_attempts: int = 0
    connects: int = 0
    budget_waits: int = 0
    pong_timeouts: int = 0
    stalls: int = 0
    gaps_detected: int = 0
    open_connections: int = 0
    last_frame_at: float | None = None
    last_event_ms: int | None = None
    last_error: str | None = None
    subscribed: bool = False


@dataclass(slots=True)
class _Series:
    """Per stream, shared by every session of the shard: what was last sent on."""

    key: StreamKey
    interval: Interval
    last_closed: int | None = None
    # The newest event time handed to observers: during a rotation both sessions deliver the
    # same updates, and an observer sees each once.
    observed_ms: int = -1
    # During a rotation's hand-off: open times the new session jumped over, which the old
    # session, still reading its backlog, is expected to bring.
    holes: set[int] = field(default_factory=set)


@dataclass(slots=True, eq=False)
class _Session:
    """One WebSocket connection of a shard, as the shard's loop sees it.

    ``changed`` is set when the shard must act: the server announced a shutdown, or the session
    ended. ``scope`` is the session's own cancel scope: cancelling it retires the session.
    """

    number: int
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    changed: trio.Event = field(default_factory=trio.Event)
    connected_at: float = math.inf
    subscribed_at: float = math.inf
    last_frame_at: float = 0.0
    last_event_ms: int = 0
    ended_at: float | None = None
    shutdown_announced: bool = False
    error: StreamError | None = None

    def fail(self, error: StreamError) -> None:
        if self.error is None:
            self.error = error


class StreamConnection:
    """One shard of up to 1024 streams, kept subscribed until cancelled (see the module doc)."""

    def __init__(
        self,
        ws_url: str,
        keys: Sequence[StreamKey],
        *,
        name: str = "ws-1",
        stall_timeout: float = 60.0,
        syncer: SyncRequester | None = None,
        backoff: Backoff | None = None,
        budget: ConnectBudget | None = None,
        max_connection_age: float = MAX_CONNECTION_AGE_S,
        ping_interval: float = PING_INTERVAL_S,
        pong_timeout: float = PONG_TIMEOUT_S,
        ssl_context: ssl.SSLContext | None = None,
        fanout: Fanout | None = None,
        market: str = "spot",
    ) -> None:
        self._url = ws_url.rstrip("/") + "/stream"
        self._ssl_context = ssl_context
        self._market = market
        # The fan-out's live table for this market (see ``fanout``): who observes which stream.
        self._watching: dict[str, tuple[Observer, ...]] = (
            {} if fanout is None else fanout.watching(market)
        )
        self._keys = list(keys)
        self._stall_timeout = stall_timeout
        self._syncer = syncer
        self._backoff = backoff or Backoff(initial=1.0, maximum=60.0)
        self._budget = budget or ConnectBudget()
        self._max_age = max_connection_age
        self._ping_interval = ping_interval
        self._pong_timeout = pong_timeout
        self._stats = ConnectionStatistics(name=name, streams=len(self._keys))
        self._series = {k.stream_name: _Series(k, Interval.parse(k.interval)) for k in self._keys}
        self._numbers = itertools.count(1)
        self._live_sessions = 0
        self._handing_off = False
        self._holes = 0
        self._bad_log_next = -math.inf
        self._bad_unlogged = 0

    @property
    def subscribed(self) -> bool:
        return self._stats.subscribed

    def statistics(self) -> ConnectionStatistics:
        """A snapshot: reading it changes nothing, and it does not change afterwards."""
        return replace(self._stats)

    # --- the shard ---------------------------------------------------------------------------

    async def run(
        self,
        send_channel: trio.MemorySendChannel[Sequence[Candle]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Keep one subscribed session; report started after the first subscription.

        Runs until cancelled. The nursery that holds the sessions is opened here and nowhere
        else; sessions hand their cancel scope back through ``nursery.start``.
        """
        stats = self._stats
        with send_channel, logger.contextualize(component="stream", connection=stats.name):
            try:
                async with trio.open_nursery() as nursery:
                    session = await self._replace(nursery, send_channel, None)
                    task_status.started()
                    while True:
                        with trio.move_on_at(session.connected_at + self._max_age):
                            await session.changed.wait()
                        session = await self._replace(nursery, send_channel, session)
            finally:
                stats.state = "stopped"
                stats.subscribed = False

    async def _replace(
        self,
        nursery: trio.Nursery,
        send_channel: trio.MemorySendChannel[Sequence[Candle]],
        old: _Session | None,
    ) -> _Session:
        """Bring up the session that follows ``old`` (None: the first); retire ``old``.

        A planned replacement (age, ``serverShutdown``) connects at once while ``old`` keeps
        reading. A failure first waits out the backoff. Either way, if ``old`` was gone before
        the new session subscribed, closed candles may have been missed: sync is requested
        only then, so a healthy rotation costs no REST weight.
        """
        stats = self._stats
        now = trio.current_time()
        failed = old is not None and old.ended_at is not None and not old.shutdown_announced
        if old is None:
            logger.info("{name} connecting to {url}", name=stats.name, url=self._url)
        elif failed:
            assert old.ended_at is not None
            error = old.error or StreamError("closed")
            stats.last_error = str(error)
            if old.last_frame_at > old.subscribed_at:
                # It delivered data, so it was healthy: start the schedule afresh. A session
                # dropped right after SUBSCRIBE keeps the backoff growing instead, so such a
                # server is not hammered every second (and the shared budget caps the rest).
                self._backoff.reset()
            delay = self._backoff.next_delay()
            stats.state = "backoff"
            logger.warning(
                "{name} disconnected ({error}); reconnecting in {delay:.1f}s",
                name=stats.name,
                error=error,
                delay=delay,
            )
            await trio.sleep(delay)
        else:
            reason = (
                "serverShutdown" if old.shutdown_announced else f"age {now - old.connected_at:.0f}s"
            )
            stats.rotations += 1
            stats.state = "rotating"
            logger.info(
                "{name} rotating ({reason}): connecting the replacement before closing the old connection",
                name=stats.name,
                reason=reason,
            )
        # While the old session still reads, the new one is marked as handing over before it
        # can read its first frame: a candle it jumps over is a hole for the old session to
        # fill, not a gap for REST, and the old session's candle for it is no duplicate.
        self._handing_off = old is not None and old.ended_at is None
        try:
            new = await self._connect(nursery, send_channel, retrying=failed)
            stats.state = "live"
            if old is None or (old.ended_at is not None and old.ended_at <= new.subscribed_at):
                self._request_sync_all()
            if old is not None and old.ended_at is None:
                caught_up = await self._hand_off(old, new)
                old.scope.cancel()
                logger.info(
                    "{name} rotated: session {new} subscribed in {seconds:.2f}s; session {old} "
                    "{how} after {handoff:.3f}s more",
                    name=stats.name,
                    new=new.number,
                    old=old.number,
                    seconds=new.subscribed_at - now,
                    how="caught up and closed" if caught_up else "closed without catching up",
                    handoff=trio.current_time() - new.subscribed_at,
                )
        finally:
            self._handing_off = False
        self._sync_holes()
        return new

    async def _hand_off(self, old: _Session, new: _Session) -> bool:
        """Keep ``old`` reading until it has caught up with ``new``; True if it did.

        Cancelling the old session the moment the new one is subscribed would throw away its
        backlog: frames already on their way (in the socket, in the transport's buffer) that
        the new session never receives, because those candles closed before it subscribed.
        So the old session reads on until it has seen an event at least as recent as one the
        new session has seen, and until every candle the new session jumped over (a *hole*,
        see ``_skipped``) has arrived. Frames of one connection come in event-time order, so
        by then the old session has delivered everything from before the new one's start.
        Whatever is still missing when the time limit passes is left to sync.
        """
        target = 0
        with trio.move_on_after(HANDOFF_TIMEOUT_S):
            while old.ended_at is None and new.ended_at is None:
                target = target or new.last_event_ms
                if target and old.last_event_ms >= target and not self._holes:
                    return True
                # Polled: the reader's hot loop stays free of hand-off bookkeeping.
                await trio.sleep(HANDOFF_POLL_S)
        return False

    def _sync_holes(self) -> None:
        """Holes no session will fill any more: from REST."""
        if not self._holes:
            return
        for series in self._series.values():
            if series.holes:
                self._stats.gaps_detected += 1
                if self._syncer is not None:
                    self._syncer.request_sync(series.key, min(series.holes))
                series.holes.clear()
        self._holes = 0

    async def _connect(
        self,
        nursery: trio.Nursery,
        send_channel: trio.MemorySendChannel[Sequence[Candle]],
        *,
        retrying: bool,
    ) -> _Session:
        """Attempt sessions until one is subscribed: each attempt paid from the shared budget."""
        stats = self._stats
        while True:
            await self._spend_budget()
            number = next(self._numbers)
            if stats.state != "rotating":
                stats.state = "connecting"
            if retrying:
                stats.reconnects += 1
                logger.info(
                    "{name} reconnecting (session {number}, attempt {attempts} in a row)",
                    name=stats.name,
                    number=number,
                    attempts=self._backoff.attempts,
                )
            try:
                session: _Session = await nursery.start(self._run_session, send_channel, number)
            except StreamError as exc:
                stats.last_error = str(exc)
                delay = self._backoff.next_delay()
                if stats.state != "rotating":
                    stats.state = "backoff"
                logger.warning(
                    "{name} connection attempt failed ({error}); retrying in {delay:.1f}s",
                    name=stats.name,
                    error=exc,
                    delay=delay,
                )
                await trio.sleep(delay)
                retrying = True
                continue
            return session

    async def _spend_budget(self) -> None:
        """Wait until the group's shared budget allows one more connection attempt."""
        budget = self._budget
        wait = budget.try_acquire(trio.current_time())
        if wait == 0.0:
            return
        self._stats.budget_waits += 1
        logger.warning(
            "{name}: {limit} connection attempts in {window:g}s used up (Binance's per-IP "
            "limit); waiting {wait:.1f}s",
            name=self._stats.name,
            limit=budget.limit,
            window=budget.window,
            wait=wait,
        )
        while wait > 0.0:
            await trio.sleep(wait)
            wait = budget.try_acquire(trio.current_time())

    def _request_sync_all(self) -> None:
        """The time without a live session may hide closed candles: fill from REST.

        Called after the new session subscribed, so REST's "now" is past the first candle the
        new session can deliver: the two overlap instead of leaving a hole between them.
        """
        if self._syncer is None:
            return
        for series in self._series.values():
            start = (
                None
                if series.last_closed is None
                else series.interval.next_open(series.last_closed)
            )
            self._syncer.request_sync(series.key, start)

    # --- one session -------------------------------------------------------------------------

    async def _run_session(
        self,
        send_channel: trio.MemorySendChannel[Sequence[Candle]],
        number: int,
        *,
        task_status: trio.TaskStatus[_Session] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Connect and subscribe, hand back the session, then read until it ends.

        Failures before ``started`` propagate to ``nursery.start`` (the attempt failed); after
        it they are recorded on the session and end it quietly, so that one broken connection
        never takes the shard's nursery (and the old or new session in it) down.
        """
        stats = self._stats
        session = _Session(number)
        stats.connect_attempts += 1
        try:
            with session.scope:
                async with open_transport(self._url, self._ssl_context) as ws:
                    session.connected_at = trio.current_time()
                    stats.open_connections += 1
                    try:
                        if stats.state != "rotating":
                            stats.state = "subscribing"
                        await self._subscribe(ws)
                        session.subscribed_at = session.last_frame_at = trio.current_time()
                        stats.connects += 1
                        self._live_sessions += 1
                        stats.subscribed = True
                        logger.info(
                            "{name} session {number} subscribed {count} streams",
                            name=stats.name,
                            number=number,
                            count=len(self._keys),
                        )
                        task_status.started(session)
                        await self._serve(ws, session, send_channel)
                    finally:
                        stats.open_connections -= 1
        except StreamError as exc:
            if session.subscribed_at == math.inf:
                raise
            session.fail(exc)
        finally:
            if session.subscribed_at != math.inf:
                self._live_sessions -= 1
                stats.subscribed = self._live_sessions > 0
            session.ended_at = trio.current_time()
            session.changed.set()

    async def _serve(
        self,
        ws: Transport,
        session: _Session,
        send_channel: trio.MemorySendChannel[Sequence[Candle]],
    ) -> None:
        """Read, ping and watch for stalls side by side; the first of them to fail ends all."""
        async with trio.open_nursery() as nursery:

            async def until_failure(task: Callable[[], Awaitable[None]]) -> None:
                # Failures are recorded here, not raised: raising in a nursery would wrap them
                # in an ExceptionGroup that the shard would have to pick apart.
                try:
                    await task()
                except StreamError as exc:
                    session.fail(exc)
                nursery.cancel_scope.cancel()

            nursery.start_soon(until_failure, lambda: self._read(ws, session, send_channel))
            nursery.start_soon(until_failure, lambda: self._keepalive(ws))
            nursery.start_soon(until_failure, lambda: self._watch_stall(session))

    async def _subscribe(self, ws: Transport) -> None:
        """SUBSCRIBE in batches at Binance's pace and wait for every answer.

        Kline frames that arrive before the last answer are dropped: after a failure the sync
        requested once we are subscribed covers them, and during a rotation the old session is
        still delivering them.
        """
        names = list(self._series)
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
                        continue  # a kline frame may already arrive; see the docstring
                    raise StreamError(f"subscription refused: {error.error.msg}") from None
                if isinstance(result.id, int):
                    pending.discard(result.id)
        if scope.cancelled_caught:
            raise StreamError("no answer to SUBSCRIBE within the time limit")

    async def _keepalive(self, ws: Transport) -> None:
        """Our own ping: a half-open TCP connection (a NAT that forgot us, a dead route) can
        look idle for minutes; a pong that does not come back within ``pong_timeout`` proves
        it dead much sooner. One ping per ``ping_interval`` is a tiny share of Binance's five
        incoming messages per second."""
        for n in itertools.count(1):
            await trio.sleep(self._ping_interval)
            with trio.move_on_after(self._pong_timeout) as waiting:
                await ws.ping(b"klinetrio-%d" % n)
            if waiting.cancelled_caught:
                self._stats.pong_timeouts += 1
                raise StreamError(f"no pong within {self._pong_timeout:g}s")

    async def _watch_stall(self, session: _Session) -> None:
        """No frame for ``stall_timeout``: the connection is dead even if TCP does not know.

        A watchdog task rather than a deadline around every ``get_message``: the reader then
        only stores the time of each frame, which is cheaper than a cancel scope per frame.
        """
        while True:
            deadline = session.last_frame_at + self._stall_timeout
            if trio.current_time() >= deadline:
                self._stats.stalls += 1
                raise StreamError(f"no frame for {self._stall_timeout:g}s (stalled)")
            await trio.sleep_until(deadline)

    async def _read(
        self,
        ws: Transport,
        session: _Session,
        send_channel: trio.MemorySendChannel[Sequence[Candle]],
    ) -> None:
        """The hot loop: decode, look at ``k.x``, forward each closed candle at most once; hand
        what observers asked for to them (each event once, in-progress ones included)."""
        stats = self._stats
        series_of = self._series
        watching = self._watching
        market = self._market
        decode = wire.combined_decoder.decode
        get_message = ws.get_message
        now = trio.current_time
        bad_in_a_row = 0
        while True:
            message = await get_message()
            stats.frames += 1
            stats.last_frame_at = session.last_frame_at = now()
            try:
                envelope = decode(message)
            except msgspec.DecodeError:
                if self._other_message(message, session):
                    bad_in_a_row += 1
                    if bad_in_a_row >= BAD_FRAMES_BEFORE_RECONNECT:
                        raise StreamError(f"{bad_in_a_row} malformed frames in a row") from None
                continue
            bad_in_a_row = 0
            event = envelope.data
            stats.last_event_ms = session.last_event_ms = event.event_time
            kline = event.kline
            watchers = watching.get(envelope.stream)
            if not kline.closed:
                if watchers:
                    series = series_of.get(envelope.stream)
                    if series is not None and event.event_time > series.observed_ms:
                        series.observed_ms = event.event_time
                        observed = Observed(market, envelope.stream, message, event)
                        for watcher in watchers:
                            watcher.offer(observed)
                continue
            series = series_of.get(envelope.stream)
            if series is None:
                continue
            open_time = kline.open_time
            last = series.last_closed
            # Claimed before the send, with no checkpoint in between: the other session of a
            # rotation sees the claim and skips this candle.
            if last is None:
                if stats.decode_errors and self._syncer is not None:
                    # The first candle of this series, after malformed frames: one of them may
                    # have been this series' candle, and with nothing sent on no gap can show.
                    self._syncer.request_sync(series.key, None)
                series.last_closed = open_time
            elif open_time > last:
                expected = series.interval.next_open(last)
                if open_time > expected:
                    self._skipped(series, expected, open_time)
                series.last_closed = open_time
            elif not series.holes or open_time not in series.holes:
                continue  # a duplicate, or the other session of a rotation was first
            else:
                series.holes.discard(open_time)
                self._holes -= 1
            candle = kline.to_candle()
            try:
                # Room in the channel is the rule; waiting is the exception (and only then may
                # a retiring session be cancelled while it holds a claimed candle).
                send_channel.send_nowait((candle,))
            except trio.WouldBlock:
                try:
                    await send_channel.send((candle,))
                except trio.Cancelled:
                    self._undelivered(series, candle)
                    raise
            stats.closed_candles += 1
            if watchers:
                series.observed_ms = max(series.observed_ms, event.event_time)
                observed = Observed(market, envelope.stream, message, event)
                for watcher in watchers:
                    watcher.offer(observed)

    def _skipped(self, series: _Series, expected: int, got: int) -> None:
        """The stream jumped from ``expected`` to ``got``: candles are missing in between.

        During a rotation's hand-off the new session is often ahead of the old one, which is
        still reading its backlog: the missing candles become holes for the old session to
        fill (``_hand_off``). Otherwise they are a gap, counted and filled from REST.
        """
        if self._handing_off:
            missing = list(series.interval.open_times(expected, got))
            if len(series.holes) + len(missing) <= MAX_HOLES_PER_SERIES:
                series.holes.update(missing)
                self._holes += len(missing)
                return
        self._stats.gaps_detected += 1
        logger.info(
            "{key}: stream skipped from {expected} to {got}; filling from REST",
            key=series.key,
            expected=expected,
            got=got,
        )
        if self._syncer is not None:
            self._syncer.request_sync(series.key, expected)

    def _undelivered(self, series: _Series, candle: Candle) -> None:
        """A session retired (or the shard stopped) while waiting for room in the channel.

        The candle is claimed but was not sent, and the other session has skipped it as a
        duplicate: only REST can bring it now.
        """
        logger.info(
            "{key}: candle {open_time} not handed over before the session closed; filling from REST",
            key=series.key,
            open_time=candle.open_time,
        )
        if self._syncer is not None:
            self._syncer.request_sync(series.key, candle.open_time)

    def _other_message(self, message: str | bytes, session: _Session) -> bool:
        """Not a kline frame: a server notice, a late answer, or garbage (True: garbage).

        Garbage is counted and skipped; its log lines are rate-limited so that a flood costs a
        few lines, not one per frame.
        """
        try:
            wire.shutdown_decoder.decode(message)
        except msgspec.DecodeError:
            pass
        else:
            logger.info(
                "{name} session {number}: server announced shutdown; rotating",
                name=self._stats.name,
                number=session.number,
            )
            session.shutdown_announced = True
            session.changed.set()
            return False
        try:
            wire.command_result_decoder.decode(message)
        except msgspec.DecodeError:
            pass
        else:
            return False
        stats = self._stats
        stats.decode_errors += 1
        now = trio.current_time()
        if stats.decode_errors <= BAD_FRAME_LOG_BURST or now >= self._bad_log_next:
            if stats.decode_errors > BAD_FRAME_LOG_BURST:
                self._bad_log_next = now + BAD_FRAME_LOG_EVERY_S
            text = message if isinstance(message, str) else message.decode("utf-8", "replace")
            logger.warning(
                "{name}: skipped a malformed frame ({count} so far, {unlogged} not logged): {frame}",
                name=stats.name,
                count=stats.decode_errors,
                unlogged=self._bad_unlogged,
                frame=text[:BAD_FRAME_LOG_CHARS],
            )
            self._bad_unlogged = 0
        else:
            self._bad_unlogged += 1
        return True


class StreamGroup:
    """The "streams" component: every configured stream, over as many connections as it takes.

    All connections share one ``ConnectBudget``: Binance limits attempts per IP, not per
    connection. Pass ``connect_budget`` to share it with other groups of the same process.
    """

    def __init__(
        self,
        ws_url: str,
        keys: Sequence[StreamKey],
        *,
        streams_per_connection: int = 1024,
        stall_timeout: float = 60.0,
        syncer: SyncRequester | None = None,
        max_connection_age: float = MAX_CONNECTION_AGE_S,
        ping_interval: float = PING_INTERVAL_S,
        pong_timeout: float = PONG_TIMEOUT_S,
        connect_budget: ConnectBudget | None = None,
        backoff_initial: float = 1.0,
        backoff_maximum: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
        fanout: Fanout | None = None,
        market: str = "spot",
    ) -> None:
        self.connect_budget = connect_budget or ConnectBudget()
        self.connections = [
            StreamConnection(
                ws_url,
                shard,
                name=f"ws-{n}",
                stall_timeout=stall_timeout,
                syncer=syncer,
                backoff=Backoff(initial=backoff_initial, maximum=backoff_maximum),
                budget=self.connect_budget,
                max_connection_age=max_connection_age,
                ping_interval=ping_interval,
                pong_timeout=pong_timeout,
                ssl_context=ssl_context,
                fanout=fanout,
                market=market,
            )
            for n, shard in enumerate(plan_connections(keys, streams_per_connection), 1)
        ]

    def statistics(self) -> list[ConnectionStatistics]:
        return [c.statistics() for c in self.connections]

    @property
    def all_subscribed(self) -> bool:
        return all(c.subscribed for c in self.connections)

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
