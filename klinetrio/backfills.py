"""``klinetrio backfill`` and ``klinetrio.backfill``: history on demand, idempotent, with progress.

The module is ``backfills`` so that ``klinetrio.backfill`` stays the function whatever is imported.

Two passes over what the table lacks in the range. With ``source`` ``auto`` (the default) or
``archive``, the archive pass first loads the whole months and days the public archives hold
(:mod:`klinetrio.history`, through the bulk path). Then, with ``auto`` or ``rest``, the REST
pass — the same parts as ``serve`` minus the streams — finds what is *still* missing (the recent
days, files the archives lack or that failed their checksum) and fetches only that. Running it
twice fetches nothing the second time; candles the exchange does not have (halts) are remembered
as holes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import httpx
import trio
from loguru import logger

from klinetrio.binance.archive import ArchiveClient
from klinetrio.binance.markets import MARKETS
from klinetrio.binance.rest import RestClient, check_symbols
from klinetrio.binance.rest_http import make_http_client
from klinetrio.core.gaps import missing_ranges
from klinetrio.core.intervals import Interval
from klinetrio.core.models import Candle, StreamKey, format_ms, plural
from klinetrio.core.planner import Mode
from klinetrio.history import ArchiveFiller, FillReport
from klinetrio.net.tls import client_context
from klinetrio.progress import FileProgress, Progress, TerminalFileProgress, TerminalProgress
from klinetrio.settings import Settings, dead_letter_dir
from klinetrio.store.bulk import BulkStore, BulkWriter
from klinetrio.store.database import READ_TIMEOUT_S, WRITE_TIMEOUT_S, Database
from klinetrio.store.deadletters import DeadLetters
from klinetrio.store.writer import CandleWriter
from klinetrio.sync import Syncer
from klinetrio.threads import thread_offload

CONCURRENT_SERIES = 4
# Enough to keep the database busy while REST fetches the next pages; more only costs memory.
BACKFILL_BUFFER = 50_000
# Bulk connections of the archive pass: one COPY runs while the next batch is read.
BULK_LANES = 2
# Closing a connection is quick; one whose thread is stuck on a dead peer is left to the OS.
CLOSE_DEADLINE_S = 2.0


@dataclass(frozen=True, slots=True)
class BackfillReport:
    fetched: int
    """Candles fetched from REST."""
    written: int
    """Of those, candles new to the table."""
    duplicates: int
    series: int
    archived: int = 0
    """Candles read from archive files."""
    archive_written: int = 0
    """Of those, candles new to the table."""
    archive_files: int = 0


async def backfill(
    settings: Settings,
    *,
    database_url: str,
    keys: Sequence[StreamKey],
    start_ms: int,
    end_ms: int | None = None,
    progress_bar: bool = False,
    source: Mode = "auto",
) -> BackfillReport:
    """Fill ``[start_ms, end_ms)`` (end: the exchange's now) of every series in ``keys``.

    ``source``: ``auto`` archives, then REST for the rest; ``archive`` or ``rest`` only.
    """
    markets = [name for name in MARKETS if any(k.market == name for k in keys)]
    database = Database(database_url, statement_timeout_s=WRITE_TIMEOUT_S)
    # A second writer lane: formatting the next batch overlaps inserting the last one.
    second = Database(database_url, statement_timeout_s=WRITE_TIMEOUT_S)
    sync_db = Database(database_url, statement_timeout_s=READ_TIMEOUT_S)
    try:
        await trio.to_thread.run_sync(database.migrate, abandon_on_cancel=True)
        ssl_context = await client_context()
        async with make_http_client(ssl_context=ssl_context) as http:
            rest = {
                name: RestClient(http, settings.rest_url_of(name), market=MARKETS[name])
                for name in markets
            }
            for name, client in rest.items():
                await check_symbols(client, sorted({k.symbol for k in keys if k.market == name}))
            archived = FillReport()
            if source != "rest":
                archived = await _from_archives(
                    settings, http, rest, sync_db, keys, start_ms, end_ms, source, progress_bar
                )
            if source == "archive":
                logger.info(
                    "backfill done: {rows:,} candles from {files}, {new:,} new ({start} to {end})",
                    rows=archived.rows,
                    files=plural(archived.files, "archive file"),
                    new=archived.written,
                    start=format_ms(start_ms),
                    end="now" if end_ms is None else format_ms(end_ms),
                )
                return BackfillReport(
                    0, 0, 0, len(keys), archived.rows, archived.written, archived.files
                )
            writer = CandleWriter(
                [database, second],
                batch_size=settings.writer_batch,
                flush_interval=settings.writer_flush_s,
                buffer_limit=BACKFILL_BUFFER,
                backpressure=True,
                dead_letters=DeadLetters(dead_letter_dir(settings)),
            )
            syncer = Syncer(rest, sync_db, lookback_ms=settings.sync_lookback_ms)
            send_channel, receive_channel = trio.open_memory_channel[Sequence[Candle]](16)
            fetched = 0

            async def fill(
                key: StreamKey,
                limiter: trio.CapacityLimiter,
                out: trio.MemorySendChannel[Sequence[Candle]],
            ) -> None:
                nonlocal fetched
                with out:
                    async with limiter:
                        label = f"{key.symbol} {key.interval}"
                        if key.market != "spot":
                            label = f"{key.market}:{label}"
                        count = await syncer.sync(
                            key,
                            start_ms,
                            end_ms,
                            out,
                            progress=TerminalProgress if progress_bar else Progress,
                            label=label,
                        )
                        fetched += count  # after the await: other series add meanwhile

            async def fill_all(out: trio.MemorySendChannel[Sequence[Candle]]) -> None:
                with out:
                    limiter = trio.CapacityLimiter(CONCURRENT_SERIES)
                    async with trio.open_nursery() as fills:
                        for key in keys:
                            fills.start_soon(fill, key, limiter, out.clone())
                    # A range found empty once is read again a minute later before it is
                    # recorded as a hole (a transient empty answer must not become one).
                    await syncer.confirm_suspects(out)

            async with trio.open_nursery() as nursery:
                await nursery.start(writer.run, receive_channel)
                nursery.start_soon(fill_all, send_channel)
            stats = writer.statistics()
            fetched += archived.rest_fetched
            logger.info(
                "backfill done: {fetched:,} candles fetched, {written:,} new, {dupes:,} already stored ({start} to {end})",
                fetched=fetched,
                written=stats.written + archived.rest_written,
                dupes=stats.duplicates + archived.rest_fetched - archived.rest_written,
                start=format_ms(start_ms),
                end="now" if end_ms is None else format_ms(end_ms),
            )
            if source == "auto":
                logger.info(
                    "sources: {archived:,} candles from {files} ({new:,} new), {fetched:,} from REST"
                    "{mismatches}",
                    archived=archived.rows,
                    files=plural(archived.files, "archive file"),
                    new=archived.written,
                    fetched=fetched,
                    mismatches=(
                        f"; {plural(archived.mismatches, 'file')} failed its checksum and came"
                        " from REST"
                        if archived.mismatches
                        else ""
                    ),
                )
            return BackfillReport(
                fetched,
                stats.written + archived.rest_written,
                stats.duplicates + archived.rest_fetched - archived.rest_written,
                len(keys),
                archived.rows,
                archived.written,
                archived.files,
            )
    finally:
        with trio.move_on_after(CLOSE_DEADLINE_S, shield=True):
            for db in (database, second, sync_db):
                await trio.to_thread.run_sync(db.close, abandon_on_cancel=True)


async def _from_archives(
    settings: Settings,
    http: httpx.AsyncClient,
    rest: Mapping[str, RestClient],
    database: Database,
    keys: Sequence[StreamKey],
    start_ms: int,
    end_ms: int | None,
    mode: Mode,
    progress_bar: bool,
) -> FillReport:
    """The archive pass: what the table lacks of each series, from the archives where they can."""
    offload = thread_offload(trio.CapacityLimiter(1))
    now_of = {name: await client.server_time() for name, client in rest.items()}
    bulk = BulkWriter([BulkStore(database.url) for _ in range(BULK_LANES)])
    fillers = {
        name: ArchiveFiller(
            ArchiveClient(http, settings.archive_url, market=name),
            bulk,
            client if mode == "auto" else None,
        )
        for name, client in rest.items()
    }
    progress = (TerminalFileProgress if progress_bar else FileProgress)("archives")
    total = FillReport()
    left = 0

    async def one(key: StreamKey, limiter: trio.CapacityLimiter) -> None:
        nonlocal left
        async with limiter:
            interval = Interval.parse(key.interval)
            now = now_of[key.market]
            end = interval.floor(now)
            if end_ms is not None:
                end = min(interval.ceil(end_ms), end)
            start = interval.ceil(start_ms)
            if start >= end:
                return
            runs = await offload(database.stored_runs, key, start, end, interval.fixed_ms)
            holes = await offload(database.holes, key, start, end)
            gaps = missing_ranges(interval, start, end, runs, holes)
            if not gaps:
                return
            report = await fillers[key.market].fill(key, gaps, now, mode=mode, progress=progress)
            for hole_start, hole_end in report.holes:
                await offload(database.add_hole, key, hole_start, hole_end)
            total.merge(report)
            if mode == "archive":
                unfilled = sum(interval.count(p.start, p.end) for p in report.rest)
                left += unfilled + report.absent

    try:
        async with trio.open_nursery() as nursery:
            limiter = trio.CapacityLimiter(CONCURRENT_SERIES)
            for key in keys:
                nursery.start_soon(one, key, limiter)
        progress.finish()
    finally:
        await bulk.aclose()
    if left:
        logger.warning(
            "{left} of the range are in no archive file (--source auto takes them from REST)",
            left=plural(left, "candle"),
        )
    return total
