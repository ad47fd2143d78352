"""Deep history from the public archives: plan, download, verify, load; REST gets the rest.

``ArchiveFiller.fill(key, ranges, now)`` takes the ranges a series lacks, asks the planner
(:mod:`klinetrio.core.planner`) which whole months and days the archives can give, and loads
those files: each is downloaded and checked against its CHECKSUM (:mod:`klinetrio.binance.
archive`), read in chunks of whole rows in a worker thread, and committed through the bulk path
(:mod:`klinetrio.store.bulk`) while the next chunk is read and other files download. A month the
archive lacks is tried day by day; whatever no file gives — the recent days, 404s, bad checksums,
unreadable files — is returned as REST pieces for the caller's ordinary REST pass.

A candle missing inside a published file (a trading halt) is asked of REST once: if REST has it,
it is stored (``source = 'rest'``); if REST has nothing either, the range is returned in
``FillReport.holes``. The archive's absence and REST's empty answer are the two reads the project
requires before the caller records a hole. In ``archive`` mode nothing is asked of REST.

Backpressure: at most ``files_in_flight`` files are being fetched, read or written at once
(taken oldest first), and a file's reader is at most one chunk ahead of its writes; the bulk
writer's lanes bound the rest.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import trio
from loguru import logger

from klinetrio.binance.archive import ArchiveClient
from klinetrio.binance.vision import ChunkReader, KlineChunk
from klinetrio.binance.wire import RestKline
from klinetrio.core.gaps import empty_ranges
from klinetrio.core.intervals import Interval
from klinetrio.core.models import StreamKey, format_ms, plural
from klinetrio.core.planner import Mode, Piece, fallback, period_span, plan
from klinetrio.errors import (
    ArchiveError,
    ArchiveFormatError,
    ChecksumMismatch,
    ExchangeError,
    ExchangeUnavailable,
)
from klinetrio.progress import FileProgress
from klinetrio.store.bulk import BatchRejected, BulkBatch, BulkWriter
from klinetrio.threads import Offload, in_thread

_T = TypeVar("_T")

FILES_IN_FLIGHT = 6
# Closing a file reader on the way out: quick, bounded all the same.
CLOSE_DEADLINE_S = 2.0
# After this many files in a row could not be reached, the archive is taken to be down for the
# rest of the run: every further range goes straight to REST instead of waiting out retries.
UNREACHABLE_AFTER = 3


class KlinePages(Protocol):
    """What the filler needs of the REST client of its market: one page of klines."""

    @property
    def page_limit(self) -> int: ...

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
class FillReport:
    """What one fill did, series by series summed with ``merge``."""

    files: int = 0
    """Archive files loaded."""
    rows: int = 0
    """Candles read from them (within the wanted ranges)."""
    written: int = 0
    """Of those, candles the table did not have yet."""
    not_published: int = 0
    mismatches: int = 0
    failed: int = 0
    rest_fetched: int = 0
    """Candles REST gave for rows missing inside published files."""
    rest_written: int = 0
    absent: int = 0
    """Candles missing inside published files that nobody asked REST about (archive mode)."""
    holes: list[tuple[int, int]] = field(default_factory=list)
    """Ranges neither the archive nor REST has: the caller records them as holes."""
    rest: list[Piece] = field(default_factory=list)
    """What the archives could not give, for the caller's REST pass."""

    def merge(self, other: FillReport) -> None:
        self.files += other.files
        self.rows += other.rows
        self.written += other.written
        self.not_published += other.not_published
        self.mismatches += other.mismatches
        self.failed += other.failed
        self.rest_fetched += other.rest_fetched
        self.rest_written += other.rest_written
        self.absent += other.absent
        self.holes.extend(other.holes)
        self.rest.extend(other.rest)


@dataclass(slots=True)
class _Job:
    key: StreamKey
    interval: Interval
    now: int
    mode: Mode
    report: FillReport
    progress: FileProgress | None


def rest_csv(rows: Sequence[RestKline]) -> bytes:
    """REST rows in the archives' CSV form, for the bulk path (strings kept as sent)."""
    return "".join(
        f"{r.open_time},{r.open},{r.high},{r.low},{r.close},{r.volume},{r.close_time},"
        f"{r.quote_volume},{r.trades},{r.taker_buy_volume},{r.taker_buy_quote_volume},{r.ignore}\n"
        for r in rows
    ).encode()


@dataclass(frozen=True, slots=True)
class Loaded:
    """What :func:`load_chunks` committed of one file."""

    open_times: list[int]
    """Open times of the rows within the range, ascending."""
    rows: int
    written: int


async def load_chunks(
    reader: ChunkReader,
    bulk: BulkWriter,
    key: StreamKey,
    start: int,
    end: int,
    *,
    offload: Offload = in_thread,
    progress: FileProgress | None = None,
    source: str = "archive",
) -> Loaded:
    """Commit the rows of ``reader`` that open in ``[start, end)``, chunk by chunk; close it.

    The next chunk is read (worker thread) while the last one is written, one chunk ahead.
    """
    got: list[int] = []
    written = 0
    send, receive = trio.open_memory_channel[KlineChunk](1)

    async def read_chunks() -> None:
        async with send:
            while (chunk := await offload(reader.read)) is not None:
                await send.send(chunk)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_chunks)
            async with receive:
                async for chunk in receive:
                    wanted = [t for t in chunk.open_times if start <= t < end]
                    batch = BulkBatch(
                        key.market,
                        key.symbol,
                        key.interval,
                        start,
                        end,
                        chunk.csv,
                        chunk.rows,
                        source,
                    )
                    written += await bulk.write(batch)
                    got.extend(wanted)
                    if progress is not None:
                        progress.advance(len(wanted))
    finally:
        with trio.move_on_after(CLOSE_DEADLINE_S, shield=True):
            await offload(reader.close)
    got.sort()
    return Loaded(got, len(got), written)


class ArchiveFiller:
    """Fills ranges of series from archive files. ``rest`` None: never ask REST (archive mode)."""

    def __init__(
        self,
        archives: ArchiveClient,
        bulk: BulkWriter,
        rest: KlinePages | None,
        *,
        files_in_flight: int = FILES_IN_FLIGHT,
        offload: Offload | None = None,
    ) -> None:
        self._archives = archives
        self._bulk = bulk
        self._rest = rest
        self._in_flight = trio.CapacityLimiter(files_in_flight)
        self._offload: Offload = offload or in_thread
        self._unreachable = 0

    async def fill(
        self,
        key: StreamKey,
        ranges: Sequence[tuple[int, int]],
        now_ms: int,
        *,
        mode: Mode = "auto",
        progress: FileProgress | None = None,
    ) -> FillReport:
        """Load what the archives hold of ``ranges``; report the rest (see the module doc)."""
        interval = Interval.parse(key.interval)
        job = _Job(key, interval, now_ms, mode, FillReport(), progress)
        pieces = plan(interval, ranges, now_ms, mode)
        files = [p for p in pieces if p.is_archive]
        job.report.rest.extend(p for p in pieces if not p.is_archive)
        if progress is not None and files:
            progress.planned(len(files))
        async with trio.open_nursery() as nursery:
            await self._start_in_order(nursery, job, files)
        job.report.rest.sort(key=lambda p: p.start)
        job.report.holes.sort()
        if files:
            report = job.report
            logger.info(
                "{key}: {files} from the archives, {rows} ({written:,} new); {left} for REST",
                key=key,
                files=plural(report.files, "file"),
                rows=plural(report.rows, "candle"),
                written=report.written,
                left=plural(sum(interval.count(p.start, p.end) for p in report.rest), "candle"),
            )
        return job.report

    async def _start_in_order(
        self, nursery: trio.Nursery, job: _Job, pieces: Sequence[Piece]
    ) -> None:
        """Start a task per piece, each once it holds a slot: files go out oldest first."""
        for piece in pieces:
            slot = object()
            await self._in_flight.acquire_on_behalf_of(slot)
            nursery.start_soon(self._piece, job, piece, slot)

    async def _piece(self, job: _Job, piece: Piece, slot: object) -> None:
        try:
            outcome, absences = await self._load(job, piece)
        finally:
            self._in_flight.release_on_behalf_of(slot)
        if outcome == "done":
            if absences and job.mode == "auto" and self._rest is not None:
                await self._confirm(job, absences)
            else:
                job.report.absent += sum(job.interval.count(a, b) for a, b in absences)
            return
        if outcome == "missing":
            replacement = fallback(piece, job.now, job.mode)
        else:
            replacement = [Piece("rest", piece.start, piece.end)]
        days = [p for p in replacement if p.is_archive]
        job.report.rest.extend(p for p in replacement if not p.is_archive)
        if job.progress is not None:
            job.progress.planned(len(days) - 1)
        if days:
            async with trio.open_nursery() as nursery:
                await self._start_in_order(nursery, job, days)

    async def _load(self, job: _Job, piece: Piece) -> tuple[str, list[tuple[int, int]]]:
        """``done`` (with the ranges the file lacks), ``missing`` (not published) or ``failed``
        (its range goes to REST). The caller holds a slot for it."""
        key = job.key
        where = "its candles come from REST" if job.mode == "auto" else "its candles are skipped"
        if self._unreachable >= UNREACHABLE_AFTER:
            return "failed", []
        try:
            verified = await self._archives.fetch(
                "monthly" if piece.source == "monthly" else "daily",
                key.symbol,
                key.interval,
                piece.period,
            )
        except ChecksumMismatch as exc:
            job.report.mismatches += 1
            logger.warning("{error}; {where}", error=exc, where=where)
            return "failed", []
        except ExchangeUnavailable as exc:
            job.report.failed += 1
            self._unreachable += 1
            if self._unreachable == UNREACHABLE_AFTER:
                logger.warning(
                    "the archives are unreachable ({error}); no more files are tried", error=exc
                )
            return "failed", []
        except ArchiveError as exc:
            job.report.failed += 1
            logger.warning("archive file unusable ({error}); {where}", error=exc, where=where)
            return "failed", []
        self._unreachable = 0
        if verified is None:
            job.report.not_published += 1
            logger.debug("{key}: no archive file for {period}", key=key, period=piece.period)
            return "missing", []
        with verified:
            try:
                reader: ChunkReader = await self._offload(
                    functools.partial(
                        ChunkReader,
                        verified.file,
                        verified.name,
                        interval=job.interval,
                        span=period_span(piece.period),
                    )
                )
                loaded = await load_chunks(
                    reader,
                    self._bulk,
                    key,
                    piece.start,
                    piece.end,
                    offload=self._offload,
                    progress=job.progress,
                )
            except (ArchiveFormatError, BatchRejected) as exc:
                job.report.failed += 1
                logger.warning(
                    "{name}: {error}; {where}", name=verified.name, error=exc, where=where
                )
                return "failed", []
        job.report.files += 1
        job.report.rows += loaded.rows
        job.report.written += loaded.written
        if job.progress is not None:
            job.progress.file_done()
        return "done", empty_ranges(job.interval, piece.start, piece.end, loaded.open_times)

    async def _confirm(self, job: _Job, absences: list[tuple[int, int]]) -> None:
        """Ask REST once for candles a published file lacks; what REST lacks too is a hole."""
        assert self._rest is not None
        key, interval = job.key, job.interval
        page_limit = self._rest.page_limit
        for start, end in absences:
            cursor = start
            while cursor < end:
                try:
                    rows = await self._rest.klines(
                        key.symbol, key.interval, start_ms=cursor, end_ms=end - 1, limit=page_limit
                    )
                except ExchangeError as exc:
                    logger.warning(
                        "{key}: cannot ask REST for candles the archive lacks ({error})",
                        key=key,
                        error=exc,
                    )
                    return
                page = [r for r in rows if cursor <= r.open_time < end and r.close_time < job.now]
                if page:
                    batch = BulkBatch(
                        key.market,
                        key.symbol,
                        key.interval,
                        cursor,
                        end,
                        rest_csv(page),
                        len(page),
                        "rest",
                    )
                    job.report.rest_written += await self._bulk.write(batch)
                    job.report.rest_fetched += len(page)
                page_end = end if len(rows) < page_limit else interval.next_open(rows[-1].open_time)
                for hole_start, hole_end in empty_ranges(
                    interval, cursor, min(page_end, end), [r.open_time for r in page]
                ):
                    job.report.holes.append((hole_start, hole_end))
                    logger.info(
                        "{key}: neither the archive nor the exchange has candles from {start} to"
                        " {end}; remembered as a hole",
                        key=key,
                        start=format_ms(hole_start),
                        end=format_ms(hole_end),
                    )
                if len(rows) < page_limit:
                    break
                cursor = page_end


__all__ = ["ArchiveFiller", "FillReport", "KlinePages", "Loaded", "load_chunks", "rest_csv"]
