"""One shard's connection: connect, subscribe, follow changes, rotate, reconnect.

A ``StreamConnection`` keeps its shard (``binance.shard``) served by one WebSocket *session*
at a time, briefly two while it rotates::

    StreamConnection.run        one per shard; owns the shard's nursery
    ├── session n               connect → SUBSCRIBE → started(session) → read
    │   ├── keepalive           our ping every ping_interval; no pong in time = dead
    │   ├── stall watch         no frame for stall_timeout = dead
    │   └── follow              SUBSCRIBE/UNSUBSCRIBE what the shard's wanted streams gain/lose
    └── session n+1             during a rotation: up and subscribed before n is cancelled

Why sessions and rotation: Binance closes every connection after 24 hours, and announces some
closes with a ``serverShutdown`` event. The shard replaces a session *before* that happens
(``max_connection_age``, default 23 h 50 min) or as soon as the notice arrives, make-before-
break: the new session is connected and subscribed, the old one reads on until it has caught
up with the new one (its backlog of frames in flight, see ``_hand_off``), then its cancel scope
is cancelled. For that moment both deliver the same candles; the shard's per-stream state is
shared by its sessions, so each closed candle crosses the channel at most once, though not
necessarily in order. Any other end of a session (server close, reset, stall, missing pong, a
flood of bad frames) is a failure: reconnect with capped, jittered backoff, then ask the syncer
to fill the hole from REST.

Streams are added and removed while the shard runs (a listing, a delisting): each live session
sends the difference between what the shard wants and what it has asked for, in batches, at the
market's message pace (Binance counts every incoming message, pings and pongs included, and
closes a connection past 5 per second on spot, 10 on futures). No other stream of the
connection is interrupted. Those commands, the first SUBSCRIBE's and the follow's, are in
``binance.subscriptions``; this module decides when sessions start, rotate and end.
"""

from __future__ import annotations

import itertools
import math
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace

import trio
from loguru import logger

from klinetrio.binance.kind_streams import KindSinks
from klinetrio.binance.markets import SPOT, Market
from klinetrio.binance.shard import Shard
from klinetrio.binance.shard_types import (
    ConnectionStatistics,
    Session,
    SyncRequester,
    Transport,
)
from klinetrio.binance.subscriptions import follow, subscribe
from klinetrio.core.backoff import Backoff
from klinetrio.core.connect_budget import ConnectBudget
from klinetrio.core.models import Candle, StreamKey
from klinetrio.errors import StreamError
from klinetrio.fanout import Fanout
from klinetrio.net.websocket import open_websocket

# Binance closes a connection at 24 h; rotate with ten minutes to spare.
MAX_CONNECTION_AGE_S = 23 * 3600 + 50 * 60
PING_INTERVAL_S = 30.0
PONG_TIMEOUT_S = 10.0
# A rotation's hand-off: how long the old session may take to catch up with the new one, and
# how often the shard looks (it lasts milliseconds when the reader keeps up).
HANDOFF_TIMEOUT_S = 5.0
HANDOFF_POLL_S = 0.005


@asynccontextmanager
async def open_transport(
    url: str, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[Transport]:
    """A client connection of ``net.websocket``: no reader task, no per-message channel hop.

    Its errors are ``StreamError``; the server's close (or a dropped TCP connection) is a
    ``ConnectionClosed`` reading ``closed by server: <code> <name> (<reason>)``. On exit it
    closes within ``CLOSE_TIMEOUT_S``: short, because we close our side mostly when the peer is
    dead or being replaced.
    """
    async with open_websocket(url, ssl_context=ssl_context) as ws:
        yield ws


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
        market: Market = SPOT,
        kinds: KindSinks | None = None,
    ) -> None:
        self._url = ws_url.rstrip("/") + "/stream"
        self._ssl_context = ssl_context
        self.market = market
        self._pace = market.subscribe_pace_s
        self._stall_timeout = stall_timeout
        self._backoff = backoff or Backoff(initial=1.0, maximum=60.0)
        self._budget = budget or ConnectBudget()
        self._max_age = max_connection_age
        self._ping_interval = ping_interval
        self._pong_timeout = pong_timeout
        self._stats = ConnectionStatistics(name=name, streams=len(keys), market=market.name)
        self.shard = Shard(
            keys,
            self._stats,
            syncer=syncer,
            watching={} if fanout is None else fanout.watching(market.name),
            kinds=kinds,
        )
        self._numbers = itertools.count(1)
        self._live_sessions = 0
        self._scope = trio.CancelScope()

    @property
    def name(self) -> str:
        return self._stats.name

    @property
    def subscribed(self) -> bool:
        return self._stats.subscribed

    @property
    def streams(self) -> int:
        return self.shard.count

    def statistics(self) -> ConnectionStatistics:
        """A snapshot: reading it changes nothing, and it does not change afterwards."""
        kinds = self.shard.kinds.stats
        return replace(
            self._stats,
            event_frames=kinds.frames,
            event_duplicates=kinds.duplicates,
            trade_gaps=kinds.trade_gaps,
        )

    def add(self, keys: Sequence[StreamKey]) -> list[StreamKey]:
        """Serve ``keys`` too: every live session subscribes them (paced), the others are
        untouched. Returns the keys that were new."""
        return self.shard.add(keys)

    def remove(self, keys: Sequence[StreamKey]) -> list[StreamKey]:
        """Stop serving ``keys``: unsubscribed by every live session; their frames are ignored
        from now on."""
        return self.shard.remove(keys)

    def close(self) -> None:
        """End ``run`` (the shard has no stream left, or the group is done with it)."""
        self._scope.cancel()

    # --- the shard ---------------------------------------------------------------------------

    async def run(
        self,
        send_channel: trio.MemorySendChannel[Sequence[Candle]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Keep one subscribed session; report started after the first subscription.

        Runs until cancelled (or ``close``). The nursery that holds the sessions is opened here
        and nowhere else; sessions hand their cancel scope back through ``nursery.start``.
        """
        stats = self._stats
        started = False
        with send_channel, logger.contextualize(component="stream", connection=stats.name):
            try:
                with self._scope:
                    async with trio.open_nursery() as nursery:
                        session = await self._replace(nursery, send_channel, None)
                        task_status.started()
                        started = True
                        while True:
                            with trio.move_on_at(session.connected_at + self._max_age):
                                await session.changed.wait()
                            session = await self._replace(nursery, send_channel, session)
            finally:
                # No session will bring them now: skipped candles in their grace go to sync.
                self.shard.flush_late()
                stats.state = "stopped"
                stats.subscribed = False
        if not started:  # closed while connecting: nothing to wait for
            task_status.started()

    async def _replace(
        self,
        nursery: trio.Nursery,
        send_channel: trio.MemorySendChannel[Sequence[Candle]],
        old: Session | None,
    ) -> Session:
        """Bring up the session that follows ``old`` (None: the first); retire ``old``.

        A planned replacement (age, ``serverShutdown``) connects at once while ``old`` keeps
        reading. A failure first waits out the backoff. Either way, if ``old`` was gone before
        the new session subscribed, closed candles may have been missed: sync is requested
        only then, so a healthy rotation costs no REST weight.
        """
        stats = self._stats
        shard = self.shard
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
        shard.handing_off = old is not None and old.ended_at is None
        try:
            new = await self._connect(nursery, send_channel, retrying=failed)
            stats.state = "live"
            if old is None or (old.ended_at is not None and old.ended_at <= new.subscribed_at):
                shard.request_sync_all()
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
            shard.handing_off = False
        shard.sync_holes()
        return new

    async def _hand_off(self, old: Session, new: Session) -> bool:
        """Keep ``old`` reading until it has caught up with ``new``; True if it did.

        Cancelling the old session the moment the new one is subscribed would throw away its
        backlog: frames already on their way (in the socket, in the transport's buffer) that
        the new session never receives, because those candles closed before it subscribed.
        So the old session reads on until it has seen an event at least as recent as one the
        new session has seen, and until every candle the new session jumped over (a *hole*,
        see ``Shard._skipped``) has arrived. Frames of one connection come in event-time order,
        so by then the old session has delivered everything from before the new one's start.
        Whatever is still missing when the time limit passes is left to sync.
        """
        target = 0
        with trio.move_on_after(HANDOFF_TIMEOUT_S):
            while old.ended_at is None and new.ended_at is None:
                target = target or new.last_event_ms
                if target and old.last_event_ms >= target and not self.shard.holes:
                    return True
                # Polled: the reader's hot loop stays free of hand-off bookkeeping.
                await trio.sleep(HANDOFF_POLL_S)
        return False

    async def _connect(
        self,
        nursery: trio.Nursery,
        send_channel: trio.MemorySendChannel[Sequence[Candle]],
        *,
        retrying: bool,
    ) -> Session:
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
                session: Session = await nursery.start(self._run_session, send_channel, number)
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

    # --- one session -------------------------------------------------------------------------

    async def _run_session(
        self,
        send_channel: trio.MemorySendChannel[Sequence[Candle]],
        number: int,
        *,
        task_status: trio.TaskStatus[Session] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Connect and subscribe, hand back the session, then read until it ends.

        Failures before ``started`` propagate to ``nursery.start`` (the attempt failed); after
        it they are recorded on the session and end it quietly, so that one broken connection
        never takes the shard's nursery (and the old or new session in it) down.
        """
        stats = self._stats
        session = Session(number)
        stats.connect_attempts += 1
        try:
            with session.scope:
                async with open_transport(self._url, self._ssl_context) as ws:
                    session.connected_at = trio.current_time()
                    stats.open_connections += 1
                    try:
                        if stats.state != "rotating":
                            stats.state = "subscribing"
                        await subscribe(ws, session, self.shard.names, pace=self._pace)
                        session.subscribed_at = session.last_frame_at = trio.current_time()
                        stats.connects += 1
                        self._live_sessions += 1
                        stats.subscribed = True
                        logger.info(
                            "{name} session {number} subscribed {count} streams",
                            name=stats.name,
                            number=number,
                            count=len(session.subscribed),
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
        session: Session,
        send_channel: trio.MemorySendChannel[Sequence[Candle]],
    ) -> None:
        """Read, ping, watch for stalls and follow the shard's streams side by side; the first
        of them to fail ends all."""
        async with trio.open_nursery() as nursery:

            async def until_failure(task: Callable[[], Awaitable[None]]) -> None:
                # Failures are recorded here, not raised: raising in a nursery would wrap them
                # in an ExceptionGroup that the shard would have to pick apart.
                try:
                    await task()
                except StreamError as exc:
                    session.fail(exc)
                nursery.cancel_scope.cancel()

            nursery.start_soon(until_failure, lambda: self.shard.read(ws, session, send_channel))
            nursery.start_soon(until_failure, lambda: self._keepalive(ws))
            nursery.start_soon(until_failure, lambda: self._watch_stall(session))
            nursery.start_soon(
                until_failure, lambda: follow(ws, session, self.shard, pace=self._pace)
            )

    async def _keepalive(self, ws: Transport) -> None:
        """Our own ping: a half-open TCP connection (a NAT that forgot us, a dead route) can
        look idle for minutes; a pong that does not come back within ``pong_timeout`` proves
        it dead much sooner. One ping per ``ping_interval`` is a tiny share of Binance's
        incoming message limit."""
        for n in itertools.count(1):
            await trio.sleep(self._ping_interval)
            with trio.move_on_after(self._pong_timeout) as waiting:
                await ws.ping(b"klinetrio-%d" % n)
            if waiting.cancelled_caught:
                self._stats.pong_timeouts += 1
                raise StreamError(f"no pong within {self._pong_timeout:g}s")

    async def _watch_stall(self, session: Session) -> None:
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


__all__ = [
    "HANDOFF_TIMEOUT_S",
    "MAX_CONNECTION_AGE_S",
    "PING_INTERVAL_S",
    "PONG_TIMEOUT_S",
    "StreamConnection",
    "open_transport",
]
