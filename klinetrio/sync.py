"""Gap finding (pure) and gap filling (REST → writer): the "syncer" component.

The database is the source of truth for what is missing. Whatever the cause of a hole (a dropped
connection, a full writer buffer, a crash, a stop of a week), the syncer finds it by comparing
what is stored with the candles that must exist, and fetches only the difference from REST.
Four things ask it to look: start-up (the look-back window and everything after the newest stored
candle), every (re)subscription of a connection, a live stream skipping a candle, and the writer
dropping candles from a full buffer during a long database outage.

Requests coalesce per series, so a storm of reconnects costs one pass per series, not one per
event. A range that REST confirms empty (a trading halt) is remembered in ``candle_holes`` and
never fetched again; confirmed means that two reads at least ``HOLE_CONFIRM_MS`` apart on the
exchange's clock both found it empty, in settled history. Until the second read a range is a
*suspect*, held in memory and read again once the minute has passed.

Never skip, never invent: what a pass examined (``_covered``) is recorded only once the pass
succeeded, so a request that arrived meanwhile skips only what was really filled; a pass that
fails leaves its whole range to be asked again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

import trio
from loguru import logger

from klinetrio.binance.rest import closed_only
from klinetrio.binance.wire import RestKline
from klinetrio.core.backoff import Backoff
from klinetrio.core.gaps import (
    Suspect,
    SyncRequest,
    empty_ranges,
    missing_ranges,
    reconcile_empty,
)
from klinetrio.core.intervals import Interval
from klinetrio.core.models import Candle, StreamKey, format_ms, plural
from klinetrio.errors import DatabaseUnavailable, ExchangeUnavailable, KlinetrioError
from klinetrio.progress import Progress
from klinetrio.store.database import Database
from klinetrio.threads import Offload, thread_offload

if TYPE_CHECKING:
    from klinetrio.history import ArchiveFiller

HOLE_SETTLE_MS = 60_000
# Two empty reads at least this far apart (exchange time) before a range counts as a hole.
HOLE_CONFIRM_MS = 60_000
# How often the syncer looks whether a suspected hole is due for its second read (real time).
RECHECK_POLL_S = 5.0
NOW_REUSE_S = 0.5
# With a look-back longer than this, whole days and months of a pass come from the archives.
ARCHIVE_LOOKBACK_MS = 2 * 86_400_000


class KlineSource(Protocol):
    """What the syncer needs from the REST client of one market."""

    @property
    def page_limit(self) -> int:
        """The most candles one klines request may ask for (1000 spot, 1500 futures)."""
        ...

    async def server_time(self) -> int: ...

    async def klines(
        self,
        symbol: str,
        interval: str,
        *,
        start_ms: int,
        end_ms: int | None = None,
        limit: int | None = None,
    ) -> list[RestKline]: ...


@dataclass(slots=True)
class SyncStatistics:
    passes: int = 0
    fetched: int = 0
    requests: int = 0
    gaps_found: int = 0
    holes_recorded: int = 0
    holes_suspected: int = 0
    errors: int = 0
    pending: int = 0
    last_error: str | None = None


class Syncer:
    """Fills gaps from REST. ``request_sync`` may be called from any task; ``run`` does the work.

    ``rest`` is the REST client of each market (one client alone serves spot), ``archives``
    the archive filler of each market that takes archives; a series goes to its market's.
    """

    def __init__(
        self,
        rest: KlineSource | Mapping[str, KlineSource],
        database: Database,
        *,
        lookback_ms: int,
        concurrency: int = 4,
        offload: Offload | None = None,
        archives: ArchiveFiller | Mapping[str, ArchiveFiller] | None = None,
    ) -> None:
        self._sources: dict[str, KlineSource] = (
            dict(rest) if isinstance(rest, Mapping) else {"spot": rest}
        )
        self._archives: dict[str, ArchiveFiller] = (
            {}
            if archives is None
            else dict(archives)
            if isinstance(archives, Mapping)
            else {"spot": archives}
        )
        self._db = database
        self._lookback_ms = lookback_ms
        self._concurrency = concurrency
        self._offload = offload or thread_offload(trio.CapacityLimiter(1))
        # Pending requests coalesce per series: the earliest start wins; None = "from the newest
        # stored candle". The queue holds each pending key once, so it can never fill up.
        self._pending: dict[StreamKey, SyncRequest] = {}
        self._queue_send, self._queue_receive = trio.open_memory_channel[StreamKey](2**31 - 1)
        self._active: set[StreamKey] = set()
        # What the last pass of each series examined, [start, end): a request that arrived during
        # that pass only needs what lies beyond it. The candles the pass sent may still be on
        # their way to the database, so looking again would fetch them twice.
        self._covered: dict[StreamKey, tuple[int, int]] = {}
        self._idle = trio.Event()
        self._idle.set()
        # When the newest request of each pending series arrived: its pass needs a reading of
        # the exchange's time taken after that, or candles that closed meanwhile are missed.
        self._requested_at: dict[StreamKey, float] = {}
        # Stored ranges read in bulk before start-up's passes (see ``preload``): each is used
        # by the first pass of its series that needs it, then dropped.
        self._bounds: dict[StreamKey, tuple[int, int] | None] = {}
        # Ranges one read found empty, per series, waiting for their second read.
        self._suspects: dict[StreamKey, list[Suspect]] = {}
        self._suspected = trio.Event()
        self._stats = SyncStatistics()
        self._now_locks: dict[str, trio.Lock] = {}
        self._now: dict[str, tuple[float, int]] = {}

    def _source(self, market: str) -> KlineSource:
        source = self._sources.get(market)
        if source is None:
            raise KlinetrioError(f"no REST client for the {market} market")
        return source

    async def _exchange_now(self, market: str, not_before: float) -> int:
        """The exchange's time on ``market``, from a reading taken at or after ``not_before``
        (Trio time).

        One reading serves every pass that asks within ``NOW_REUSE_S``, so thousands of series
        at start-up cost a few requests. It must not predate the request it serves: a pass
        asked for after a reconnect must count the candles that closed while disconnected.
        """
        async with self._now_locks.setdefault(market, trio.Lock()):
            fetched_at, now = self._now.get(market, (-math.inf, 0))
            if fetched_at < not_before or trio.current_time() - fetched_at > NOW_REUSE_S:
                now = await self._source(market).server_time()
                self._now[market] = (trio.current_time(), now)
            return now

    def statistics(self) -> SyncStatistics:
        """A snapshot: reading it changes nothing, and it does not change afterwards."""
        return replace(
            self._stats,
            pending=len(self._pending) + len(self._active),
            holes_suspected=sum(len(s) for s in self._suspects.values()),
        )

    async def preload(self, keys: Sequence[StreamKey]) -> None:
        """Read the stored range of every series in one query, for the start-up passes.

        A range read now may be older than the table by the time its pass runs (the writer
        goes on writing): then the pass starts earlier than it needs to and finds the candles
        stored. It never starts later, so nothing is skipped.
        """
        try:
            self._bounds.update(await self._offload(self._db.bounds_of, list(keys)))
        except DatabaseUnavailable as exc:  # each pass reads its own range, then
            logger.debug("cannot read the stored ranges in bulk ({error})", error=exc)

    def request_sync(self, key: StreamKey, start_ms: int | None) -> None:
        """Ask for a pass over ``key`` from ``start_ms`` (None: from the newest stored candle)."""
        request = SyncRequest.of(start_ms)
        if key in self._pending:
            self._requested_at[key] = trio.current_time()
            self._pending[key] = self._pending[key].merge(request)
            return
        self._pending[key] = request
        self._requested_at[key] = trio.current_time()
        if self._idle.is_set():
            # Only a set event is replaced: a waiter holds the unset one until it is set.
            self._idle = trio.Event()
        if key not in self._active:
            # A series being synced right now is queued again by its worker when it finishes,
            # so no two workers ever fill the same series at once.
            self._queue_send.send_nowait(key)

    async def wait_idle(self) -> None:
        """Return once no request is pending or being worked on."""
        while self._pending or self._active:
            await self._idle.wait()

    async def run(
        self,
        send_channel: trio.MemorySendChannel[Sequence[Candle]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        with send_channel, logger.contextualize(component="sync"):
            async with trio.open_nursery() as nursery:
                for _ in range(self._concurrency):
                    nursery.start_soon(self._worker, send_channel.clone())
                nursery.start_soon(self._recheck_suspects)
                task_status.started()

    async def _recheck_suspects(self) -> None:
        """Ask again for every suspected hole once a minute has passed on the exchange's clock."""
        while True:
            await self._suspected.wait()
            await trio.sleep(RECHECK_POLL_S)
            if not any(self._suspects.values()):
                self._suspected = trio.Event()
                continue
            markets = {key.market for key, suspects in self._suspects.items() if suspects}
            for market in sorted(markets):
                try:
                    now = await self._exchange_now(market, trio.current_time())
                except KlinetrioError as exc:
                    logger.debug("cannot read the exchange's time ({error})", error=exc)
                    continue
                for key, suspects in list(self._suspects.items()):
                    due = [s.start for s in suspects if s.seen_at <= now - HOLE_CONFIRM_MS]
                    if due and key.market == market:
                        self.request_sync(key, min(due))

    async def confirm_suspects(
        self, send_channel: trio.MemorySendChannel[Sequence[Candle]]
    ) -> None:
        """Read every suspected hole a second time, once a minute has passed on the exchange's
        clock, and so record or clear it (``backfill`` calls this before it ends)."""
        waited = False
        while any(self._suspects.values()):
            due_at = min(s.seen_at for v in self._suspects.values() for s in v) + HOLE_CONFIRM_MS
            market = min(
                (min(s.seen_at for s in v), k.market) for k, v in self._suspects.items() if v
            )[1]
            now = await self._exchange_now(market, trio.current_time())
            if now < due_at:
                if not waited:
                    waited = True
                    logger.info(
                        "asking the exchange again about {count} in {seconds:.0f}s (exchange time),"
                        " before they count as holes",
                        count=plural(self.statistics().holes_suspected, "empty range"),
                        seconds=(due_at - now) / 1000,
                    )
                await trio.sleep(min(1.0, (due_at - now) / 1000))
                continue
            for key, suspects in list(self._suspects.items()):
                if key.market != market:
                    continue
                for suspect in [s for s in suspects if s.seen_at <= now - HOLE_CONFIRM_MS]:
                    await self.sync(key, suspect.start, suspect.end, send_channel)

    async def _worker(self, send_channel: trio.MemorySendChannel[Sequence[Candle]]) -> None:
        with send_channel:
            async for key in self._queue_receive:
                request = self._pending.pop(key)
                requested_at = self._requested_at.pop(key)
                self._active.add(key)
                try:
                    await self._sync_with_retries(key, request, requested_at, send_channel)
                finally:
                    self._active.discard(key)
                    covered = self._covered.pop(key, None)
                    if key in self._pending:
                        if covered is not None:
                            self._pending[key] = self._pending[key].after(covered)
                        self._queue_send.send_nowait(key)
                    elif not self._pending and not self._active:
                        self._idle.set()

    async def _sync_with_retries(
        self,
        key: StreamKey,
        request: SyncRequest,
        requested_at: float,
        send_channel: trio.MemorySendChannel[Sequence[Candle]],
    ) -> None:
        backoff = Backoff(initial=1.0, maximum=60.0)
        while True:
            try:
                await self._pass(key, request, None, send_channel, not_before=requested_at)
                return
            except (ExchangeUnavailable, DatabaseUnavailable) as exc:
                self._stats.errors += 1
                self._stats.last_error = str(exc)
                delay = backoff.next_delay()
                # The first failure is news; the retries of the same outage are not.
                logger.log(
                    "WARNING" if backoff.attempts == 1 else "DEBUG",
                    "sync of {key} failed ({error}); retrying in {delay:.0f}s",
                    key=key,
                    error=exc,
                    delay=delay,
                )
                await trio.sleep(delay)
            except KlinetrioError as exc:
                self._stats.errors += 1
                self._stats.last_error = str(exc)
                logger.error("sync of {key} failed: {error}", key=key, error=exc)
                return

    async def sync(
        self,
        key: StreamKey,
        start_ms: int | None,
        end_ms: int | None,
        send_channel: trio.MemorySendChannel[Sequence[Candle]],
        *,
        progress: type[Progress] | None = None,
        label: str | None = None,
        not_before: float | None = None,
    ) -> int:
        """Fetch every missing closed candle of ``key`` in ``[start, end)`` and send it on.

        ``start_ms`` None means from the newest stored candle (or the look-back when there is
        none); ``end_ms`` None means the exchange's now. Returns how many candles were fetched.
        """
        return await self._pass(
            key,
            SyncRequest.of(start_ms),
            end_ms,
            send_channel,
            progress=progress,
            label=label,
            not_before=not_before,
        )

    async def _pass(
        self,
        key: StreamKey,
        request: SyncRequest,
        end_ms: int | None,
        send_channel: trio.MemorySendChannel[Sequence[Candle]],
        *,
        progress: type[Progress] | None = None,
        label: str | None = None,
        not_before: float | None = None,
    ) -> int:
        interval = Interval.parse(key.interval)
        now = await self._exchange_now(
            key.market, trio.current_time() if not_before is None else not_before
        )
        # Candles that open before the current one's open time have closed: only those are final.
        end = (
            interval.floor(now)
            if end_ms is None
            else min(interval.ceil(end_ms), interval.floor(now))
        )
        starts = [] if request.start is None else [request.start]
        if request.from_newest:
            # From the newest stored candle; and within the look-back, from the oldest one, so a
            # hole anywhere in recent history (a crash, a dropped batch) heals at the next start.
            if key in self._bounds:
                bounds = self._bounds.pop(key)
            else:
                bounds = await self._offload(self._db.bounds, key)
            if bounds is None:
                starts.append(now - self._lookback_ms)
            else:
                oldest, newest = bounds
                starts.append(min(newest, max(now - self._lookback_ms, oldest)))
        start = interval.ceil(min(starts))
        self._stats.passes += 1
        if start >= end:
            self._covered[key] = (start, end)
            return 0
        runs = await self._offload(self._db.stored_runs, key, start, end, interval.fixed_ms)
        holes = await self._offload(self._db.holes, key, start, end)
        gaps = missing_ranges(interval, start, end, runs, holes)
        if gaps and key.market in self._archives and self._lookback_ms > ARCHIVE_LOOKBACK_MS:
            gaps = await self._fill_from_archives(key, interval, start, end, gaps, now)
        if not gaps:
            self._covered[key] = (start, end)
            return 0
        total = sum(interval.count(a, b) for a, b in gaps)
        self._stats.gaps_found += len(gaps)
        label = label or str(key)
        logger.info(
            "{label}: {total} missing in {count} gap(s) from {start} to {end}",
            label=label,
            total=plural(total, "candle"),
            count=len(gaps),
            start=format_ms(gaps[0][0]),
            end=format_ms(gaps[-1][1]),
        )
        meter = (progress or Progress)(label, total)
        fetched = 0
        for gap_start, gap_end in gaps:
            fetched += await self._fill(key, interval, gap_start, gap_end, now, send_channel, meter)
        meter.finish()
        # Only now, with every gap filled, may a request that came meanwhile skip this range.
        self._covered[key] = (start, end)
        return fetched

    async def _fill_from_archives(
        self,
        key: StreamKey,
        interval: Interval,
        start: int,
        end: int,
        gaps: list[tuple[int, int]],
        now: int,
    ) -> list[tuple[int, int]]:
        """Load what the archives hold of ``gaps``; return what is still missing, for REST.

        The archives' rows go through the filler's own bulk path, not the send channel: a
        month of 1m candles per series would overflow the live writer's buffer. A candle a
        published file lacks and REST confirmed empty is recorded here as a hole.
        """
        report = await self._archives[key.market].fill(key, gaps, now)
        for hole_start, hole_end in report.holes:
            self._stats.holes_recorded += 1
            await self._offload(self._db.add_hole, key, hole_start, hole_end)
        if not report.files and not report.rest_fetched:
            return gaps
        runs = await self._offload(self._db.stored_runs, key, start, end, interval.fixed_ms)
        holes = await self._offload(self._db.holes, key, start, end)
        return missing_ranges(interval, start, end, runs, holes)

    async def _fill(
        self,
        key: StreamKey,
        interval: Interval,
        start: int,
        end: int,
        now: int,
        send_channel: trio.MemorySendChannel[Sequence[Candle]],
        progress: Progress,
    ) -> int:
        source = self._source(key.market)
        page_limit = source.page_limit
        cursor = start
        fetched = 0
        while cursor < end:
            rows = await source.klines(
                key.symbol, key.interval, start_ms=cursor, end_ms=end - 1, limit=page_limit
            )
            self._stats.requests += 1
            # Never a candle whose close time has not passed, and nothing outside the gap.
            page = [r for r in closed_only(rows, now) if cursor <= r.open_time < end]
            if page:
                candles = [r.to_candle(key.symbol, key.interval, market=key.market) for r in page]
                await send_channel.send(candles)
                fetched += len(candles)
                progress.advance(len(candles))
            page_end = end if len(rows) < page_limit else interval.next_open(rows[-1].open_time)
            # Only settled history can be declared empty: the newest minute is left to later passes.
            settled = min(page_end, end, interval.floor(now - HOLE_SETTLE_MS))
            progress.absent(
                await self._record_holes(
                    key, interval, cursor, settled, [r.open_time for r in page], now
                )
            )
            if len(rows) < page_limit:
                break
            cursor = page_end
        self._stats.fetched += fetched
        return fetched

    async def _record_holes(
        self, key: StreamKey, interval: Interval, start: int, end: int, got: list[int], now: int
    ) -> int:
        """Reconcile what REST found empty in ``[start, end)`` with the suspects of ``key``:
        record the ranges now confirmed, remember the new ones. Returns how many candles the
        empty ranges would hold (they are not coming, for now)."""
        if start >= end:
            return 0
        empty = empty_ranges(interval, start, end, got)
        suspects = self._suspects.get(key, [])
        if not empty and not suspects:
            return 0
        confirmed, remaining = reconcile_empty(suspects, (start, end), empty, now, HOLE_CONFIRM_MS)
        known = {(s.start, s.end) for s in suspects}
        for suspect in remaining:
            if suspect.seen_at == now and (suspect.start, suspect.end) not in known:
                logger.info(
                    "{key}: the exchange has no candles from {start} to {end}; asking again in"
                    " a minute before it counts as a hole",
                    key=key,
                    start=format_ms(suspect.start),
                    end=format_ms(suspect.end),
                )
        if remaining:
            self._suspects[key] = remaining
            self._suspected.set()
        else:
            self._suspects.pop(key, None)
        for hole_start, hole_end in confirmed:
            self._stats.holes_recorded += 1
            logger.info(
                "{key}: the exchange has no candles from {start} to {end} (asked twice);"
                " remembered as a hole",
                key=key,
                start=format_ms(hole_start),
                end=format_ms(hole_end),
            )
            await self._offload(self._db.add_hole, key, hole_start, hole_end)
        return sum(interval.count(a, b) for a, b in empty)


__all__ = ["KlineSource", "Syncer"]
