"""The composition root: builds every component, wires the channels, and owns the shutdown order.

::

    serve(settings)                 signals → Service.stop()
    └── Service.run                 root nursery
        ├── writer                  channel → batches → PostgreSQL (worker thread)
        ├── http                    /live /ready /health /metrics
        └── intake                  one cancel scope: stop() cancels it
            ├── syncer              gaps → REST → channel
            └── streams             WebSocket connections → channel

Every producer owns a clone of the channel's send end and closes it when it ends. Stopping
cancels the intake scope only; the producers' ends close, the writer's intake sees the channel
close, the writer commits what it holds (within ``DRAIN_DEADLINE_S``) and returns, and only then
is the rest of the tree cancelled. Nothing already received is dropped on an orderly stop.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence

import trio
from loguru import logger

from klinetrio.binance.archive import ArchiveClient
from klinetrio.binance.rest import RestClient, check_symbols, make_http_client
from klinetrio.binance.stream import StreamGroup
from klinetrio.core.backoff import Backoff
from klinetrio.core.models import Candle
from klinetrio.errors import DatabaseUnavailable, ExchangeUnavailable, SettingsError
from klinetrio.history import ArchiveFiller
from klinetrio.http import Endpoints
from klinetrio.settings import Settings, redact_url
from klinetrio.store.bulk import BulkStore, BulkWriter
from klinetrio.store.database import Database
from klinetrio.store.writer import CandleWriter
from klinetrio.sync import Syncer

DRAIN_DEADLINE_S = 8.0
STARTUP_DB_ATTEMPTS = 4
# The writer's intake empties the channel at memory speed; this only absorbs bursts (the
# closing second of a minute on thousands of streams) while the intake is being scheduled.
CHANNEL_CAPACITY = 4096


class Service:
    """klinetrio's collector. ``await nursery.start(service.run)``; ``service.stop()`` to end it."""

    def __init__(self, settings: Settings, *, database_url: str) -> None:
        self.settings = settings
        self.database_url = database_url
        self.keys = settings.stream_keys
        self._http_client = make_http_client()
        self.rest = RestClient(self._http_client, settings.rest_url)
        self._writer_db = Database(database_url)
        self._sync_db = Database(database_url)
        # Start-up sync with a look-back of more than 2 days takes whole days and months from
        # the archives, through a bulk connection of its own (opened only when first used).
        self._bulk = BulkWriter([BulkStore(database_url)])
        self.archives = ArchiveFiller(
            ArchiveClient(self._http_client, settings.archive_url), self._bulk, self.rest
        )
        self.endpoints: Endpoints
        self.writer = CandleWriter(
            self._writer_db,
            batch_size=settings.writer_batch,
            flush_interval=settings.writer_flush_s,
            buffer_limit=settings.writer_buffer,
            on_batch=lambda count, latency: self.endpoints.observe_batch(count, latency),
            on_dropped=lambda key, open_time: self.syncer.request_sync(key, open_time),
        )
        self.syncer = Syncer(
            self.rest,
            self._sync_db,
            lookback_ms=settings.sync_lookback_ms,
            archives=self.archives,
        )
        self.streams = StreamGroup(
            settings.ws_url,
            self.keys,
            streams_per_connection=settings.streams_per_connection,
            stall_timeout=settings.stall_timeout_s,
            syncer=self.syncer,
        )
        self.endpoints = Endpoints(self)
        self.http_port: int | None = None
        self.started_at = 0.0
        self.stopping = False
        self._intake_scope = trio.CancelScope()
        self._writer_scope = trio.CancelScope()
        self._root_scope = trio.CancelScope()
        self._intake_running = False
        self.stopped = trio.Event()  # set when run() has returned, drained or not

    @property
    def ready(self) -> bool:
        return (
            self._intake_running
            and not self.stopping
            and self.writer.statistics().healthy
            and self.streams.all_subscribed
        )

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

    async def run(
        self, *, task_status: trio.TaskStatus[Service] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self.started_at = trio.current_time()
        send_channel, receive_channel = trio.open_memory_channel[Sequence[Candle]](CHANNEL_CAPACITY)
        try:
            with self._root_scope, logger.contextualize(component="service"):
                # Bad input fails here, before any task starts, as a plain exception.
                await self._prepare_database()
                await self._check_symbols()
                async with trio.open_nursery() as nursery:
                    writer_done = trio.Event()
                    await nursery.start(self._run_writer, receive_channel, writer_done)
                    host, port = self.settings.http_host_port
                    try:
                        self.http_port = await nursery.start(self.endpoints.serve, host, port)
                    except OSError as exc:
                        raise SettingsError(
                            f"cannot listen on {host}:{port}: {exc.strerror}"
                        ) from exc
                    logger.info(
                        "health and metrics on http://{host}:{port}/health",
                        host=host,
                        port=self.http_port,
                    )
                    await nursery.start(self._run_intake, send_channel)
                    task_status.started(self)
                    await writer_done.wait()
                    nursery.cancel_scope.cancel(reason="writer drained")
        finally:
            send_channel.close()
            with trio.CancelScope(shield=True):
                await self._http_client.aclose()
                await trio.to_thread.run_sync(self._writer_db.close)
                await trio.to_thread.run_sync(self._sync_db.close)
                await self._bulk.aclose()
            self.stopped.set()
        if self.stopping:
            stats = self.writer.statistics()
            logger.info(
                "stopped: {written:,} candles written, {buffered:,} left unwritten",
                written=stats.written,
                buffered=stats.buffered,
            )

    async def _prepare_database(self) -> None:
        backoff = Backoff(initial=0.5, maximum=4.0)
        for attempt in range(1, STARTUP_DB_ATTEMPTS + 1):
            try:
                report = await trio.to_thread.run_sync(self._writer_db.migrate)
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

    async def _check_symbols(self) -> None:
        """An unknown symbol is a user error worth stopping for; an unreachable exchange is not."""
        try:
            await check_symbols(self.rest, self.settings.symbols)
        except ExchangeUnavailable as exc:
            logger.warning("cannot reach the exchange's REST API ({error}); continuing", error=exc)

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
                    "writer did not drain within {deadline:.0f}s: {count:,} candles unwritten (sync refills them at the next start)",
                    deadline=DRAIN_DEADLINE_S,
                    count=self.writer.statistics().buffered,
                )
        finally:
            done.set()

    async def _run_intake(
        self,
        send_channel: trio.MemorySendChannel[Sequence[Candle]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        with send_channel:
            self._intake_running = True
            with self._intake_scope:
                async with trio.open_nursery() as intake:
                    await intake.start(self.syncer.run, send_channel.clone())
                    for key in self.keys:
                        self.syncer.request_sync(key, None)
                    intake.start_soon(self.streams.run, send_channel.clone())
                    logger.info(
                        "collecting {streams} streams over {connections} connection(s)",
                        streams=len(self.keys),
                        connections=len(self.streams.connections),
                    )
                    task_status.started()
            self._intake_running = False
        # The producers' ends are closed: the writer commits what it holds, within a deadline.
        self._writer_scope.deadline = trio.current_time() + DRAIN_DEADLINE_S


async def _stop_on_signals(service: Service) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            if not service.stopping:
                service.stop(reason=f"received {name}")
            else:
                logger.warning("received {name} again: stopping without draining", name=name)
                service.abort()


async def serve(
    settings: Settings,
    *,
    database_url: str,
    task_status: trio.TaskStatus[Service] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the collector until SIGINT/SIGTERM, then stop in order. The CLI's ``serve``."""
    service = Service(settings, database_url=database_url)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signals, service)
        await service.run(task_status=task_status)
        nursery.cancel_scope.cancel()
