"""The composition root: builds every component, wires the channels, owns the shutdown order.

::

    serve(settings)                  signals → collector.stop()
    └── Collector.run                root nursery; the only composition root
        ├── writer                   channel → batches → PostgreSQL (worker threads)
        ├── upkeep                   table sizes, retention (plain PostgreSQL), daily backups
        ├── universe                 the symbols refresh: listings and delistings → streams
        ├── observers                the Redis publisher (library subscriptions come and go)
        ├── api                      ASGI app on hypercorn: /health /ready /live /metrics, relay,
        │                            the read API and dashboard (read-only connections of its
        │                            own), the coverage of the collected series for /health
        └── intake                   one cancel scope: stop() cancels it
            ├── syncer               gaps → archives/REST → writer, each series on its market
            └── streams              per market: WebSocket connections → writer, → fan-out

Each market (spot, USD-M, COIN-M futures; see ``binance.markets``) that ``KLINETRIO_SYMBOLS``
reaches gets its REST client (its own weight budget), its archive filler and its stream
group; the syncer and the writer serve them all. The universe resolves the symbols before the
intake starts and hands every later change to ``_apply``, which adds or removes streams on the
running groups.

Two edges leave the streams: the writer's channel (closed candles only, lossless: every
producer owns a clone of the send end and closes it when it ends) and the fan-out (every event,
lossy: a bounded channel per observer). Stopping cancels the intake scope only; the producers'
ends close, the writer commits what it holds within ``DRAIN_DEADLINE_S`` and returns, and only
then is the rest of the tree cancelled. Nothing already received is dropped on an orderly stop.

No stop can hang: every database connection has TCP keepalives, a TCP user timeout and a
statement timeout, blocking calls abandon their thread when cancelled, and every shield has a
bound. When the drain deadline passes, what the writer still holds is counted in one line and
left to the next start's sync; ``abort()`` (a second signal) ends everything at once.

The API never sees this module: it gets ``statistics`` (a snapshot callable) and the fan-out.
"""

from __future__ import annotations

import gc
import signal
import ssl
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager

import httpx
import msgspec
import trio
from loguru import logger

from klinetrio.api import build_app, serve_api
from klinetrio.binance import wire_kinds
from klinetrio.binance.archive import ArchiveClient
from klinetrio.binance.kind_streams import KindSinks
from klinetrio.binance.markets import MARKETS
from klinetrio.binance.rest import RestClient, RestStatistics
from klinetrio.binance.rest_http import make_http_client
from klinetrio.binance.stream import StreamGroup
from klinetrio.core.backoff import Backoff
from klinetrio.core.connect_budget import ConnectBudget
from klinetrio.core.models import Candle, StreamKey
from klinetrio.core.universe import Change, markets_of, selectors_of
from klinetrio.errors import DatabaseUnavailable, SettingsError
from klinetrio.events import Subscription
from klinetrio.fanout import DEFAULT_CAPACITY, Fanout
from klinetrio.futures_stats import FuturesStatistics
from klinetrio.history import ArchiveFiller
from klinetrio.net.tls import client_context
from klinetrio.outputs.redis import RedisPublisher
from klinetrio.settings import Settings, dead_letter_dir, redact_url, stream_keys_of
from klinetrio.snapshot import CollectorStatistics
from klinetrio.store.bulk import BulkStore, BulkWriter
from klinetrio.store.coverage_monitor import CoverageMonitor
from klinetrio.store.database import READ_TIMEOUT_S, WRITE_TIMEOUT_S, Database
from klinetrio.store.deadletters import DeadLetters
from klinetrio.store.embedded import database_for
from klinetrio.store.events import EVENT_TABLES, EventStore
from klinetrio.store.events_writer import EventWriter, RowBatch
from klinetrio.store.migrations import SchemaReport
from klinetrio.store.policies import StoreOptions
from klinetrio.store.reader import StoreReader
from klinetrio.store.upkeep import StoreUpkeep
from klinetrio.store.writer import CandleWriter
from klinetrio.sync import Syncer, SyncStatistics
from klinetrio.threads import thread_offload
from klinetrio.trade_sync import TradeSyncer
from klinetrio.universe import Universe, UniverseStatistics

DRAIN_DEADLINE_S = 8.0
# Closing what is left after the drain: quick, unless a thread is stuck on a dead peer.
CLOSE_DEADLINE_S = 2.0
STARTUP_DB_ATTEMPTS = 4
# The writer's intake empties the channel at memory speed; this only absorbs bursts (the
# closing second of a minute on thousands of streams) while the intake is being scheduled.
CHANNEL_CAPACITY = 4096
# The Redis publisher's queue: a second of the full load, so a slow round trip loses nothing.
REDIS_QUEUE = 20_000
# The relay and library subscriptions speak of spot streams unless told otherwise.
MARKET = "spot"


class Collector:
    """klinetrio's collector. ``await nursery.start(collector.run)`` (or ``open_collector``);
    ``collector.stop()`` ends it in order."""

    def __init__(self, settings: Settings, *, database_url: str) -> None:
        self.settings = settings
        self.database_url = database_url
        self.markets = markets_of(selectors_of(settings.symbols))
        self._writer_db = Database(database_url, statement_timeout_s=WRITE_TIMEOUT_S)
        self._sync_db = Database(database_url, statement_timeout_s=READ_TIMEOUT_S)
        self._sync_offload = thread_offload(trio.CapacityLimiter(1))
        # The API's own read-only connections: a slow read never waits behind sync or writes.
        self._reader = StoreReader(database_url)
        self.coverage = CoverageMonitor(self._reader, self._collected, settings.sync_lookback_ms)
        # Filled in by the universe's resolution at start-up, then by every change.
        self.fanout = Fanout()
        self.writer = CandleWriter(
            self._writer_db,
            batch_size=settings.writer_batch,
            flush_interval=settings.writer_flush_s,
            buffer_limit=settings.writer_buffer,
            on_dropped=lambda key, open_time: self.syncer.request_sync(key, open_time),
            dead_letters=DeadLetters(dead_letter_dir(settings)),
        )
        # One writer per table of the other kinds collected (KLINETRIO_STREAMS), each on its
        # own connection and thread, and the channels the streams send their rows on.
        self.event_writers: dict[wire_kinds.Kind, EventWriter] = {}
        self._kind_receives: dict[wire_kinds.Kind, trio.MemoryReceiveChannel[RowBatch]] = {}
        sends: dict[wire_kinds.Kind, trio.MemorySendChannel[RowBatch]] = {}
        for kind in wire_kinds.KINDS:
            if kind == "kline" or kind not in settings.streams:
                continue
            table = EVENT_TABLES[wire_kinds.TABLE_OF[kind]]
            database = Database(database_url, statement_timeout_s=WRITE_TIMEOUT_S)
            self.event_writers[kind] = EventWriter(
                EventStore(database, table),
                on_dropped=(
                    (lambda rows: self.trade_syncer.dropped(rows)) if kind == "aggTrade" else None
                ),
            )
            sends[kind], self._kind_receives[kind] = trio.open_memory_channel[RowBatch](
                CHANNEL_CAPACITY
            )
        self._kind_sinks = KindSinks(sends)
        self._kinds_scope = trio.CancelScope()
        self.upkeep = StoreUpkeep(settings, database_url=database_url)
        self.redis = (
            None
            if settings.redis_url is None
            else RedisPublisher(settings.redis_url, {m: () for m in self.markets})
        )
        # The REST clients, syncer, streams and universe need the TLS context, which run()
        # builds off the Trio loop (loading the CA store blocks): see _build_intake.
        self._http_client: httpx.AsyncClient | None = None
        self.rest: dict[str, RestClient] = {}
        self.syncer: Syncer
        self.trade_syncer: TradeSyncer
        self.streams: dict[str, StreamGroup] = {}
        self.universe: Universe
        self.futures_stats: FuturesStatistics | None = None
        self.http_port: int | None = None
        self.started_at = 0.0
        self.stopping = False
        self._intake_scope = trio.CancelScope()
        self._writer_scope = trio.CancelScope()
        self._root_scope = trio.CancelScope()
        self._intake_running = False
        self.unwritten = 0  # candles the writer still held when run() returned
        self.stopped = trio.Event()  # set when run() has returned, drained or not

    def _build_intake(self, ssl_context: ssl.SSLContext) -> None:
        settings = self.settings
        http = self._http_client = make_http_client(ssl_context=ssl_context)
        # Start-up sync with a look-back of more than 2 days takes whole days and months from
        # the archives, through a bulk connection of its own (opened only when first used).
        self._bulk = BulkWriter([BulkStore(self.database_url)])
        archives: dict[str, ArchiveFiller] = {}
        archive_clients: dict[str, ArchiveClient] = {}
        for name in self.markets:
            market = MARKETS[name]
            rest = self.rest[name] = RestClient(http, settings.rest_url_of(name), market=market)
            archive_clients[name] = ArchiveClient(http, settings.archive_url, market=name)
            archives[name] = ArchiveFiller(archive_clients[name], self._bulk, rest)
        self.syncer = Syncer(
            self.rest,
            self._sync_db,
            lookback_ms=settings.sync_lookback_ms,
            offload=self._sync_offload,
            archives=archives,
        )
        # Binance counts connection attempts per IP, whichever market they are for.
        budget = ConnectBudget()
        for name in self.markets:
            self.streams[name] = StreamGroup(
                settings.ws_url_of(name),
                [],
                streams_per_connection=settings.streams_per_connection,
                stall_timeout=settings.stall_timeout_s,
                syncer=self.syncer,
                connect_budget=budget,
                ssl_context=ssl_context,
                fanout=self.fanout,
                market=MARKETS[name],
                kinds=self._kind_sinks if self.event_writers else None,
            )
        # Trades heal by agg id, on a connection of their own.
        self._trade_db = Database(self.database_url, statement_timeout_s=READ_TIMEOUT_S)
        self._trade_offload = thread_offload(trio.CapacityLimiter(1))
        self.trade_syncer = TradeSyncer(
            self.rest, self._trade_db, offload=self._trade_offload, archives=archive_clients
        )
        self._kind_sinks.trade_syncer = self.trade_syncer
        self.universe = Universe(
            settings.symbols,
            self.rest,
            self._sync_db,
            refresh_s=settings.symbols_refresh_ms / 1000,
            offload=self._sync_offload,
        )
        futures = {m: r for m, r in self.rest.items() if r.market.has_futures_data}
        if settings.futures_stats and futures:
            self.futures_stats = FuturesStatistics(
                futures,
                self._sync_db,
                period=settings.futures_stats_period,
                lookback_ms=settings.sync_lookback_ms,
                offload=self._sync_offload,
            )

    def _collected(self) -> list[StreamKey]:
        return self.keys

    @property
    def keys(self) -> list[StreamKey]:
        """Every series collected now, market by market."""
        return [key for group in self.streams.values() for key in group.keys]

    def _apply(self, change: Change) -> None:
        """A change of the universe (a listing, a delisting) reaches the streams, the fan-out
        and Redis; the streams subscribe and sync what is new."""
        intervals, streams = self.settings.intervals, self.settings.streams
        group = self.streams[change.market]
        added = [
            k for s in change.added for k in stream_keys_of(change.market, s, intervals, streams)
        ]
        removed = [
            k for s in change.removed for k in stream_keys_of(change.market, s, intervals, streams)
        ]
        self.fanout.collect(change.market, [k.stream_name for k in added])
        group.add(added)
        group.remove(removed)
        self.fanout.uncollect(change.market, [k.stream_name for k in removed])
        if self.redis is not None:
            self.redis.set_active(change.market, self.universe.collected[change.market])
        if self.futures_stats is not None:
            self.futures_stats.set_symbols(change.market, self.universe.collected[change.market])

    # --- what the world may ask ----------------------------------------------------------

    @property
    def ready(self) -> bool:
        return (
            self._intake_running
            and self._http_client is not None
            and not self.stopping
            and self.writer.healthy
            and all(group.all_subscribed for group in self.streams.values())
        )

    def statistics(self) -> CollectorStatistics:
        """A frozen snapshot of every component (see ``snapshot``); reading it changes nothing."""
        built = self._http_client is not None
        return CollectorStatistics(
            taken_at=trio.current_time(),
            started_at=self.started_at,
            ready=self.ready,
            stopping=self.stopping,
            writer_buffer_limit=self.settings.writer_buffer,
            writer=self.writer.statistics(),
            connections=tuple(c for g in self.streams.values() for c in g.statistics()),
            sync=self.syncer.statistics() if built else _NO_SYNC,
            rest=self._rest_statistics(),
            fanout=self.fanout.statistics(),
            upkeep=self.upkeep.statistics(),
            redis=None if self.redis is None else self.redis.statistics(),
            rest_by_market={m: r.statistics() for m, r in self.rest.items()},
            universe=self.universe.statistics() if built else UniverseStatistics(),
            futures_stats=None if self.futures_stats is None else self.futures_stats.statistics(),
            coverage=self.coverage.statistics(),
            events=tuple(w.statistics() for w in self.event_writers.values()),
            trade_sync=self.trade_syncer.statistics()
            if built and "aggTrade" in self.event_writers
            else None,
        )

    def _rest_statistics(self) -> RestStatistics:
        """Every market's REST client together: counters summed, the spot client's weight."""
        parts = [r.statistics() for r in self.rest.values()]
        if not parts:
            return _NO_REST
        first = parts[0]
        return RestStatistics(
            requests=sum(p.requests for p in parts),
            weight_used=sum(p.weight_used for p in parts),
            rate_limited=sum(p.rate_limited for p in parts),
            banned=sum(p.banned for p in parts),
            retries=sum(p.retries for p in parts),
            server_used_weight=first.server_used_weight,
            weight_limit=first.weight_limit,
            kline_requests=sum(p.kline_requests for p in parts),
        )

    def subscribe(
        self,
        streams: Iterable[str] | None = None,
        *,
        capacity: int = DEFAULT_CAPACITY,
        name: str | None = None,
    ) -> Subscription:
        """Live events of ``streams`` (Binance's names, e.g. ``btcusdt@kline_1m``; None: every
        stream collected), in-progress and closed, as ``KlineEvent``s. Lossy: at most
        ``capacity`` wait; past that the newest are dropped and counted. A stream that is not
        collected raises ``SettingsError``. Close the subscription to end it."""
        names = None if streams is None else [s.strip() for s in streams]
        unknown = [] if names is None else self.fanout.unknown(MARKET, names)
        if unknown:
            raise SettingsError(f"not collected, so nothing to subscribe to: {', '.join(unknown)}")
        observer, receive = self.fanout.subscribe(MARKET, names, capacity=capacity, name=name)
        return Subscription(observer, receive)

    def stop(self, reason: str = "stop requested") -> None:
        """An orderly stop: end the intake, let the writer commit what it holds, return."""
        if self.stopping:
            return
        self.stopping = True
        logger.info("stopping ({reason}): closing streams, draining the writer", reason=reason)
        if self._intake_running:
            self._intake_scope.cancel(reason=reason)
        else:
            self._root_scope.cancel(reason=reason)

    def abort(self) -> None:
        """Stop now, without waiting for the writer."""
        self._root_scope.cancel(reason="aborted")

    # --- the tree ------------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[Collector] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self.started_at = trio.current_time()
        send_channel, receive_channel = trio.open_memory_channel[Sequence[Candle]](CHANNEL_CAPACITY)
        try:
            with self._root_scope, logger.contextualize(component="collector"):
                self._build_intake(await client_context())
                # Bad input fails here, before any task starts, as a plain exception.
                report = await self._prepare_database()
                await self._resolve_symbols()
                async with trio.open_nursery() as nursery:
                    writer_done = trio.Event()
                    await nursery.start(self._run_writer, receive_channel, writer_done)
                    kinds_done = trio.Event()
                    await nursery.start(self._run_event_writers, kinds_done)
                    timescale = report.layout is not None and report.layout.timescale
                    await nursery.start(self.upkeep.run, timescale)
                    await nursery.start(self.universe.run, self._apply)
                    if self.futures_stats is not None:
                        await nursery.start(self.futures_stats.run)
                    if self.redis is not None:
                        events = self.fanout.subscribe_markets(
                            self.markets, capacity=REDIS_QUEUE, name="redis"
                        )
                        await nursery.start(self.redis.run, events)
                    await self._start_api(nursery)
                    await nursery.start(self._run_intake, send_channel)
                    task_status.started(self)
                    await writer_done.wait()
                    await kinds_done.wait()
                    nursery.cancel_scope.cancel(reason="writer drained")
        finally:
            send_channel.close()
            self._kind_sinks.close()
            self.unwritten = self.writer.statistics().buffered
            with trio.move_on_after(CLOSE_DEADLINE_S, shield=True):
                await self._close()
            self.stopped.set()
        if self.stopping:
            logger.info(
                "stopped: {written:,} candles written, {unwritten:,} left unwritten",
                written=self.writer.statistics().written,
                unwritten=self.unwritten,
            )

    async def _start_api(self, nursery: trio.Nursery) -> None:
        where = self.settings.http_host_port
        if where is None:
            logger.info("no API port (KLINETRIO_HTTP_ADDR=off)")
            return
        host, port = where
        app = build_app(
            self.statistics,
            fanout=self.fanout,
            market=MARKET,
            relay_queue=self.settings.relay_queue,
            store=self._reader,
        )
        with logger.contextualize(component="api"):
            self.http_port = await nursery.start(serve_api, app, host, port)
            await nursery.start(self.coverage.run)
        logger.info(
            "API on http://{host}:{port}/health (relay on ws://{host}:{port}/stream)",
            host=host,
            port=self.http_port,
        )

    async def _close(self) -> None:
        """Close every connection. A database closes through the offload that owns its thread,
        so a thread still stuck on a dead peer is waited for, never raced; the caller's bound
        leaves such a thread to the operating system."""
        if self._http_client is not None:
            await self._http_client.aclose()
            await self._bulk.aclose()
        for database, offload in self.writer.lanes:
            await offload(database.close)
        for event_writer in self.event_writers.values():
            await event_writer.offload(event_writer.store.database.close)
        await self._sync_offload(self._sync_db.close)
        await self._reader.aclose()
        if self._http_client is not None:
            await self._trade_offload(self._trade_db.close)

    async def _prepare_database(self) -> SchemaReport:
        backoff = Backoff(initial=0.5, maximum=4.0)
        options = StoreOptions.from_settings(self.settings)
        database, offload = self.writer.lanes[0]
        for attempt in range(1, STARTUP_DB_ATTEMPTS + 1):
            try:
                report: SchemaReport = await offload(database.migrate, options)
                break
            except DatabaseUnavailable:
                if attempt == STARTUP_DB_ATTEMPTS:
                    raise
                delay = backoff.next_delay()
                logger.warning(
                    "database {url} unreachable; retrying in {delay:.1f}s",
                    url=redact_url(self.database_url),
                    delay=delay,
                )
                await trio.sleep(delay)
        logger.info(
            "database ready: {url} ({kind})",
            url=redact_url(self.database_url),
            kind="hypertable" if report.hypertable else "plain table",
        )
        return report

    async def _resolve_symbols(self) -> None:
        """Resolve ``KLINETRIO_SYMBOLS`` (an unknown symbol stops the start; an unreachable
        exchange does not) and give each market's streams their series."""
        collected = await self.universe.start()
        for market, symbols in collected.items():
            keys = [
                k
                for s in symbols
                for k in stream_keys_of(market, s, self.settings.intervals, self.settings.streams)
            ]
            self.fanout.collect(market, [k.stream_name for k in keys])
            self.streams[market].add(keys)
            if self.redis is not None:
                self.redis.set_active(market, symbols)
            if self.futures_stats is not None:
                self.futures_stats.set_symbols(market, symbols)

    async def _run_writer(
        self,
        receive_channel: trio.MemoryReceiveChannel[Sequence[Candle]],
        done: trio.Event,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            with self._writer_scope, logger.contextualize(component="writer"):
                await self.writer.run(receive_channel, task_status=task_status)
            if self._writer_scope.cancelled_caught:
                logger.error(
                    "{count:,} candles left unwritten; the next start refills them from REST",
                    count=self.writer.statistics().buffered,
                )
        finally:
            done.set()

    async def _run_event_writers(
        self, done: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The writers of the other kinds: they end when the streams' channels close, within
        the same drain deadline as the candle writer."""
        try:
            with self._kinds_scope, logger.contextualize(component="writer"):
                async with trio.open_nursery() as nursery:
                    for kind, event_writer in self.event_writers.items():
                        await nursery.start(event_writer.run, self._kind_receives[kind])
                    task_status.started()
            if self._kinds_scope.cancelled_caught:
                logger.error(
                    "{count:,} rows of other kinds left unwritten",
                    count=sum(w.statistics().buffered for w in self.event_writers.values()),
                )
        finally:
            done.set()

    async def _run_intake(
        self,
        send_channel: trio.MemorySendChannel[Sequence[Candle]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        with send_channel, self._kind_sinks:
            self._intake_running = True
            with self._intake_scope:
                async with trio.open_nursery() as intake:
                    await intake.start(self.syncer.run, send_channel.clone())
                    trades = self._kind_sinks.channels.get("aggTrade")
                    if trades is not None:
                        await intake.start(self.trade_syncer.run, trades.clone())
                    # Only kline series are synced from klines; trades heal by agg id.
                    keys = [k for k in self.keys if k.is_kline]
                    await self.syncer.preload(keys)
                    for key in keys:
                        self.syncer.request_sync(key, None)
                    for group in self.streams.values():
                        intake.start_soon(group.run, send_channel.clone())
                    logger.info(
                        "collecting {streams} streams over {connections} connection(s)",
                        streams=len(self.keys),
                        connections=sum(len(g.connections) for g in self.streams.values()),
                    )
                    task_status.started()
            self._intake_running = False
        # The producers' ends are closed: the writer commits what it holds, within a deadline.
        self._writer_scope.deadline = trio.current_time() + DRAIN_DEADLINE_S
        self._kinds_scope.deadline = trio.current_time() + DRAIN_DEADLINE_S


# What statistics() says of the parts run() has not built yet.
_NO_SYNC = SyncStatistics()
_NO_REST = RestStatistics(0, 0, 0, 0, 0, 0, 0)


@asynccontextmanager
async def open_collector(
    settings: Settings, *, database_url: str | None = None
) -> AsyncIterator[Collector]:
    """Start the collector inside the block (everything in order: database, writer, upkeep,
    observers, API, intake) and stop it in order when the block ends::

        async with klinetrio.open_collector(settings) as collector:
            with collector.subscribe(["btcusdt@kline_1m"]) as events:
                async for event in events:
                    ...

    ``database_url`` overrides ``settings.database_url``; with neither, the embedded PostgreSQL
    in ``settings.data_dir`` is started (and stopped again by the last klinetrio process using
    it), as ``klinetrio serve`` does. Failures at start-up (a bad symbol, no database) raise
    here, before the block runs.
    """
    if database_url is not None:
        settings = _with_database(settings, database_url)
    location = database_for(settings)
    url = await trio.to_thread.run_sync(location.__enter__, abandon_on_cancel=True)
    try:
        async with trio.open_nursery() as nursery:
            collector = Collector(settings, database_url=url)
            await nursery.start(collector.run)
            try:
                yield collector
            finally:
                collector.stop("the embedding program's block ended")
    finally:
        with trio.move_on_after(30, shield=True):
            await trio.to_thread.run_sync(location.__exit__, None, None, None)


def _with_database(settings: Settings, url: str) -> Settings:
    return msgspec.structs.replace(settings, database_url=url)


async def _stop_on_signals(collector: Collector) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            if not collector.stopping:
                collector.stop(reason=f"received {name}")
            else:
                logger.warning("received {name} again: stopping without draining", name=name)
                collector.abort()


async def serve(
    settings: Settings,
    *,
    database_url: str,
    task_status: trio.TaskStatus[Collector] = trio.TASK_STATUS_IGNORED,
) -> int:
    """Run the collector until SIGINT/SIGTERM, then stop in order. The CLI's ``serve``.

    Returns how many candles were left unwritten (0 after a complete drain).
    """
    collector = Collector(settings, database_url=database_url)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signals, collector)
        await nursery.start(_collect, collector, nursery.cancel_scope)
        # What start-up built (series, shards, the fan-out's table, the writer's index: hundreds
        # of thousands of objects for 24,000 streams) lives as long as the process. Out of the
        # garbage collector's reach, a full collection walks only what came after: walking it
        # all took 35-110 ms each time, a stall of the one Trio thread that reads every frame.
        gc.freeze()
        task_status.started(collector)
    return collector.unwritten


async def _collect(
    collector: Collector,
    done: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[Collector] = trio.TASK_STATUS_IGNORED,
) -> None:
    await collector.run(task_status=task_status)
    done.cancel()


__all__ = ["CLOSE_DEADLINE_S", "DRAIN_DEADLINE_S", "Collector", "open_collector", "serve"]
