"""What one shard of streams knows, and the hot loop that reads frames into it.

A *shard* is the set of streams one connection serves (see ``binance.connection``). Its sessions
come and go (reconnects, rotations), but what the shard knows outlives them: per stream, the
open time of the last closed candle sent on (so each crosses the writer edge at most once), the
newest event time handed to observers, and the holes a rotation's new session jumped over.
``Shard.read`` is the hot loop of every session: per frame a msgspec glance at the stream, the
event time and ``k.x`` (``wire.KlineGlance``), and for a closed candle only the full decode and
a claim on the candle; whoever observes the stream gets the frame (undecoded while the candle
is in progress); per socket read one clock reading and one send of the read's closed candles to
the writer.

The shard's streams change while it runs: ``add`` and ``remove`` change what it *wants*, and
every live session follows (``SUBSCRIBE``/``UNSUBSCRIBE``, see ``StreamConnection``). A stream
removed is forgotten at once, so its late frames are ignored; a stream added is synced from
REST once a session has confirmed its subscription, so the stream and REST overlap.

The types the shard shares with its connection (``Series``, ``Session``, the counters and the
protocols of the transport and the syncer) are in ``binance.shard_types``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import msgspec
import trio
from loguru import logger

from klinetrio.binance import wire
from klinetrio.binance.kind_streams import KindSinks, KindStreams
from klinetrio.binance.shard_types import (
    NEVER,
    ConnectionStatistics,
    Series,
    Session,
    SyncRequester,
    Transport,
)
from klinetrio.core.intervals import Interval
from klinetrio.core.models import Candle, StreamKey, format_ms
from klinetrio.errors import StreamError
from klinetrio.fanout import Observed, Observer

BAD_FRAMES_BEFORE_RECONNECT = 50
# Malformed frames: the first few are logged, then one line per period with a count.
BAD_FRAME_LOG_BURST = 3
BAD_FRAME_LOG_EVERY_S = 10.0
BAD_FRAME_LOG_CHARS = 200
MAX_HOLES_PER_SERIES = 64
# A skipped closed candle waits this long past the close of the candle that revealed the skip
# (on the exchange's clock: the frames' event times) before it becomes a REST request.
GAP_GRACE_MS = 3_000


class Shard:
    """The streams of one connection and what each has delivered (see the module doc)."""

    def __init__(
        self,
        keys: Sequence[StreamKey],
        stats: ConnectionStatistics,
        *,
        syncer: SyncRequester | None,
        watching: dict[str, tuple[Observer, ...]],
        gap_grace_ms: int = GAP_GRACE_MS,
        kinds: KindSinks | None = None,
    ) -> None:
        self.stats = stats
        self.syncer = syncer
        self.market = stats.market
        # The fan-out's live table for this market (see ``fanout``): who observes which stream.
        self._watching = watching
        self.series: dict[str, Series] = {}
        # The streams of the other kinds (aggTrade, bookTicker, ticker, depth20): see kind_streams.
        self.kinds = KindStreams(stats.market, kinds)
        # Set (and replaced) whenever the wanted streams change: live sessions then follow.
        self.wanted_changed = trio.Event()
        self.handing_off = False
        self.holes = 0
        self.gap_grace_ms = gap_grace_ms
        # Series with skipped candles in their grace, and the earliest deadline among them.
        self._waiting: dict[str, Series] = {}
        self._next_deadline = NEVER
        self._bad_log_next = -math.inf
        self._bad_unlogged = 0
        self.add(keys)

    # --- what the shard wants --------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return [*self.series, *self.kinds.series]

    @property
    def count(self) -> int:
        """How many streams the shard wants (klines and the other kinds)."""
        return len(self.series) + len(self.kinds.series)

    def add(self, keys: Iterable[StreamKey]) -> list[StreamKey]:
        """Want ``keys`` too; returns those that were new."""
        added = []
        for key in keys:
            if not key.is_kline:
                if self.kinds.add(key):
                    added.append(key)
                continue
            name = key.stream_name
            if name not in self.series:
                self.series[name] = Series(key, Interval.parse(key.interval))
                added.append(key)
        self._changed()
        return added

    def remove(self, keys: Iterable[StreamKey]) -> list[StreamKey]:
        """Stop wanting ``keys``; their frames are ignored from now on. Returns those removed."""
        removed = []
        for key in keys:
            if not key.is_kline:
                if self.kinds.remove(key):
                    removed.append(key)
                continue
            series = self.series.pop(key.stream_name, None)
            if series is not None:
                self.holes -= len(series.holes)
                self._waiting.pop(key.stream_name, None)
                removed.append(key)
        self._changed()
        return removed

    def _changed(self) -> None:
        self.stats.streams = self.count
        self.wanted_changed.set()
        self.wanted_changed = trio.Event()

    # --- asking sync -----------------------------------------------------------------------

    def request_sync_all(self) -> None:
        """The time without a live session may hide closed candles: fill from REST.

        Called after the new session subscribed, so REST's "now" is past the first candle the
        new session can deliver: the two overlap instead of leaving a hole between them.
        """
        waiting = self._take_waiting()
        if self.syncer is None:
            return
        for series in self.series.values():
            start = (
                None
                if series.last_closed is None
                else series.interval.next_open(series.last_closed)
            )
            late = waiting.get(series.key.stream_name)
            if late and start is not None:
                start = min(start, min(late))
            self.syncer.request_sync(series.key, start)

    def sync_holes(self) -> None:
        """Holes no session will fill any more: from REST."""
        if not self.holes:
            return
        for series in self.series.values():
            if series.holes:
                self.stats.gaps_detected += 1
                if self.syncer is not None:
                    self.syncer.request_sync(series.key, min(series.holes))
                series.holes.clear()
        self.holes = 0

    def flush_late(self) -> None:
        """Skipped candles still in their grace go to sync now (the shard is stopping, or no
        session is left to bring them)."""
        for name, late in self._take_waiting().items():
            self._gap(self.series[name], min(late))

    def _take_waiting(self) -> dict[str, set[int]]:
        taken = {}
        for name, series in self._waiting.items():
            taken[name] = series.late
            series.late, series.late_deadline = set(), NEVER
        self._waiting.clear()
        self._next_deadline = NEVER
        return taken

    def _expire(self, now_ms: int) -> None:
        """The grace of some skipped candles has passed on the exchange's clock: a real gap."""
        next_deadline = NEVER
        for name, series in list(self._waiting.items()):
            if series.late_deadline <= now_ms:
                del self._waiting[name]
                start = min(series.late)
                series.late, series.late_deadline = set(), NEVER
                self._gap(series, start)
            else:
                next_deadline = min(next_deadline, series.late_deadline)
        self._next_deadline = next_deadline

    def _late(self, series: Series, open_time: int) -> bool:
        """A closed frame older than the last one sent on: a hole of a rotation, a skipped
        candle arriving within its grace (True: send it on), or a duplicate (False)."""
        if open_time in series.holes:
            series.holes.discard(open_time)
            self.holes -= 1
            return True
        if open_time in series.late:
            series.late.discard(open_time)
            self.stats.late_candles += 1
            if not series.late:
                # Every candle of the skip came: the REST request it would have cost is saved.
                series.late_deadline = NEVER
                del self._waiting[series.key.stream_name]
                self.stats.sync_requests_saved += 1
            return True
        return False

    # --- the hot loop ----------------------------------------------------------------------

    async def read(
        self,
        ws: Transport,
        session: Session,
        send_channel: trio.MemorySendChannel[Sequence[Candle]],
    ) -> None:
        """Take the frames of one socket read at a time: glance at each (stream, event time,
        ``k.x``), decode in full only closed ones, forward each closed candle at most once, the
        read's candles as one batch; hand what observers asked for to them (each event once,
        in-progress ones included, as frames). One clock reading per socket read."""
        stats = self.stats
        watching = self._watching
        kinds = self.kinds
        glance_of = wire.glance_decoder.decode
        get_messages = ws.get_messages
        now = trio.current_time
        bad_in_a_row = 0
        while True:
            messages = await get_messages()
            stats.frames += len(messages)
            stats.last_frame_at = session.last_frame_at = now()
            # Claimed in the loop, sent after it (candles, then the other kinds' rows): no
            # checkpoint in between, and whatever is left unsent goes to REST.
            batch: list[Candle] = []
            try:
                for message in messages:
                    try:
                        glance = glance_of(message)
                    except msgspec.DecodeError:
                        pass
                    else:
                        event_time = glance.data.event_time
                        stats.last_event_ms = session.last_event_ms = event_time
                        if event_time >= self._next_deadline:
                            self._expire(event_time)
                        watchers = watching.get(glance.stream) if watching else None
                        if not glance.data.kline.closed:
                            # A candle in progress: observers get its frame as it came (the
                            # glance vouches for it), decoded only by those that need values.
                            if watchers:
                                self._progress(message, glance.stream, event_time, watchers)
                            bad_in_a_row = 0
                            continue
                        if self._kline(message, glance.stream, watchers, batch):
                            bad_in_a_row = 0
                            continue
                    if kinds.series and kinds.take(message, watching, stats.last_event_ms):
                        bad_in_a_row = 0
                    elif self._other_message(message, session):
                        bad_in_a_row += 1
                        if bad_in_a_row >= BAD_FRAMES_BEFORE_RECONNECT:
                            raise StreamError(f"{bad_in_a_row} malformed frames in a row")
                if batch:
                    # Room in the channel is the rule; waiting is the exception (and only then
                    # may a retiring session be cancelled while it holds claimed candles).
                    try:
                        send_channel.send_nowait(batch)
                    except trio.WouldBlock:
                        await send_channel.send(batch)
                    stats.closed_candles += len(batch)
                    batch = []
                if kinds.pending:
                    await kinds.flush()
            except BaseException:
                self._undelivered(batch)
                kinds.abandon()
                raise

    def _progress(
        self, message: str | bytes, stream: str, event_time: int, watchers: tuple[Observer, ...]
    ) -> None:
        """An observed candle in progress, newer than what its observers have had."""
        series = self.series.get(stream)
        if series is not None and event_time > series.observed_ms:
            series.observed_ms = event_time
            observed = Observed(self.market, stream, message, None)
            for watcher in watchers:
                watcher.offer(observed)

    def _kline(
        self,
        message: str | bytes,
        stream: str,
        watchers: tuple[Observer, ...] | None,
        batch: list[Candle],
    ) -> bool:
        """A closed kline frame, decoded in full: the candle claimed and added to ``batch``,
        the event offered to observers. False if it does not decode."""
        try:
            event = wire.combined_decoder.decode(message).data
        except msgspec.DecodeError:
            return False
        event_time = event.event_time
        stats = self.stats
        market = self.market
        series = self.series.get(stream)
        if series is None:
            return True
        open_time = event.kline.open_time
        last = series.last_closed
        # Claimed before the send, with no checkpoint in between: the other session of a
        # rotation sees the claim and skips this candle.
        if last is None:
            if stats.decode_errors and self.syncer is not None:
                # The first candle of this series, after malformed frames: one of them may
                # have been this series' candle, and with nothing sent on no gap can show.
                self.syncer.request_sync(series.key, None)
            series.last_closed = open_time
        elif open_time > last:
            expected = series.interval.next_open(last)
            if open_time > expected:
                self._skipped(series, expected, open_time)
            series.last_closed = open_time
        elif (not series.holes and not series.late) or not self._late(series, open_time):
            return True  # a duplicate, or the other session of a rotation was first
        batch.append(event.kline.to_candle(market=market))
        if watchers:
            series.observed_ms = max(series.observed_ms, event_time)
            observed = Observed(market, stream, message, event)
            for watcher in watchers:
                watcher.offer(observed)
        return True

    def _skipped(self, series: Series, expected: int, got: int) -> None:
        """The stream jumped from ``expected`` to ``got``: candles are missing in between.

        During a rotation's hand-off the new session is often ahead of the old one, which is
        still reading its backlog: the missing candles become holes for the old session to
        fill (``StreamConnection._hand_off``). Otherwise they wait a grace on the exchange's
        clock, ``gap_grace_ms`` past the close of ``got``, measured by the event times of the
        frames that follow (one comparison per frame): a closed frame that is only late, coming
        after a newer one of its stream, arrives within it and costs no REST weight. What is
        still missing then is a gap, counted and filled from REST.
        """
        count = series.interval.count(expected, got)
        if self.handing_off and len(series.holes) + count <= MAX_HOLES_PER_SERIES:
            series.holes.update(series.interval.open_times(expected, got))
            self.holes += count
            return
        if self.gap_grace_ms > 0 and len(series.late) + count <= MAX_HOLES_PER_SERIES:
            series.late.update(series.interval.open_times(expected, got))
            series.late_deadline = series.interval.next_open(got) + self.gap_grace_ms
            self._waiting[series.key.stream_name] = series
            self._next_deadline = min(self._next_deadline, series.late_deadline)
            return
        if series.late:  # too many: everything of this series goes to sync at once
            expected = min(expected, *series.late)
            series.late, series.late_deadline = set(), NEVER
            self._waiting.pop(series.key.stream_name, None)
        self._gap(series, expected)

    def _gap(self, series: Series, expected: int) -> None:
        """Candles from ``expected`` on are missing for good: counted, and asked from REST."""
        self.stats.gaps_detected += 1
        logger.info(
            "{key}: stream skipped candles from {expected}; filling from REST",
            key=series.key,
            expected=format_ms(expected),
        )
        if self.syncer is not None:
            self.syncer.request_sync(series.key, expected)

    def _undelivered(self, candles: Sequence[Candle]) -> None:
        """A session retired (or the shard stopped, or failed) while holding claimed candles.

        They were not sent, and the other session has skipped them as duplicates: only REST
        can bring them now, from the earliest of each series.
        """
        earliest: dict[StreamKey, int] = {}
        for candle in candles:
            key = candle.key
            earliest[key] = min(earliest.get(key, candle.open_time), candle.open_time)
        for key, open_time in earliest.items():
            logger.info(
                "{key}: candle {open_time} not handed over before the session closed; filling from REST",
                key=key,
                open_time=format_ms(open_time),
            )
            if self.syncer is not None:
                self.syncer.request_sync(key, open_time)

    def _other_message(self, message: str | bytes, session: Session) -> bool:
        """Not a kline frame: a server notice, an answer, or garbage (True: garbage).

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
                name=self.stats.name,
                number=session.number,
            )
            session.shutdown_announced = True
            session.changed.set()
            return False
        try:
            result = wire.command_result_decoder.decode(message)
        except msgspec.DecodeError:
            pass
        else:
            self.answered(session, result.id, None)
            return False
        try:
            error = wire.command_error_decoder.decode(message)
        except msgspec.DecodeError:
            pass
        else:
            self.answered(session, error.id, error.error.msg)
            return False
        self._malformed(message)
        return True

    def answered(self, session: Session, request_id: int | str | None, error: str | None) -> None:
        """The server answered one of a live session's requests (see ``StreamConnection``)."""
        if not isinstance(request_id, int) or request_id not in session.requests:
            return
        method, names = session.requests.pop(request_id)
        if error is not None:
            logger.warning(
                "{name} session {number}: {method} of {count} streams refused: {error}",
                name=self.stats.name,
                number=session.number,
                method=method,
                count=len(names),
                error=error,
            )
            return
        if method != "SUBSCRIBE":
            return
        # Confirmed: REST's "now" from here on is past the first candle the stream can bring,
        # so a pass from the newest stored candle (or the look-back) overlaps the stream.
        if self.syncer is not None:
            for name in names:
                series = self.series.get(name)
                if series is not None:
                    self.syncer.request_sync(series.key, None)

    def _malformed(self, message: str | bytes) -> None:
        stats = self.stats
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


__all__ = ["BAD_FRAMES_BEFORE_RECONNECT", "Shard"]
