"""``klinetrio backfill``: history on demand, idempotent, with progress.

The same parts as ``serve`` minus the streams: the syncer finds what the table lacks in the range
and fetches only that from REST, the writer commits it. Running it twice fetches nothing the
second time; candles the exchange does not have (halts) are remembered as holes.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

import trio
from loguru import logger

from klinetrio.binance.rest import RestClient, check_symbols, make_http_client
from klinetrio.core.models import Candle, StreamKey, format_ms
from klinetrio.net.tls import client_context
from klinetrio.settings import Settings, dead_letter_dir
from klinetrio.store.database import READ_TIMEOUT_S, WRITE_TIMEOUT_S, Database
from klinetrio.store.deadletters import DeadLetters
from klinetrio.store.writer import CandleWriter
from klinetrio.sync import Progress, Syncer

CONCURRENT_SERIES = 4
# Enough to keep the database busy while REST fetches the next pages; more only costs memory.
BACKFILL_BUFFER = 50_000
# Closing a connection is quick; one whose thread is stuck on a dead peer is left to the OS.
CLOSE_DEADLINE_S = 2.0


class TerminalProgress(Progress):
    """A progress bar on a terminal; one line per series, redrawn in place."""

    def log(self) -> None:
        width = 30
        share = self.done / self.total if self.total else 1.0
        bar = "#" * int(width * share) + "-" * (width - int(width * share))
        end = "\n" if self.done >= self.total else ""
        sys.stderr.write(f"\r{self.label}: [{bar}] {self.done:,}/{self.total:,} candles{end}")
        sys.stderr.flush()

    def advance(self, count: int) -> None:
        self.done += count
        self.log()

    def finish(self) -> None:
        if self.done < self.total:
            sys.stderr.write("\n")


@dataclass(frozen=True, slots=True)
class BackfillReport:
    fetched: int
    written: int
    duplicates: int
    series: int


async def backfill(
    settings: Settings,
    *,
    database_url: str,
    keys: Sequence[StreamKey],
    start_ms: int,
    end_ms: int | None = None,
    progress_bar: bool = False,
) -> BackfillReport:
    """Fill ``[start_ms, end_ms)`` (end: the exchange's now) of every series in ``keys``."""
    database = Database(database_url, statement_timeout_s=WRITE_TIMEOUT_S)
    # A second writer lane: formatting the next batch overlaps inserting the last one.
    second = Database(database_url, statement_timeout_s=WRITE_TIMEOUT_S)
    sync_db = Database(database_url, statement_timeout_s=READ_TIMEOUT_S)
    try:
        await trio.to_thread.run_sync(database.migrate, abandon_on_cancel=True)
        ssl_context = await client_context()
        async with make_http_client(ssl_context=ssl_context) as http:
            rest = RestClient(http, settings.rest_url)
            await check_symbols(rest, sorted({k.symbol for k in keys}))
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
            logger.info(
                "backfill done: {fetched:,} candles fetched, {written:,} new, {dupes:,} already stored ({start} to {end})",
                fetched=fetched,
                written=stats.written,
                dupes=stats.duplicates,
                start=format_ms(start_ms),
                end="now" if end_ms is None else format_ms(end_ms),
            )
            return BackfillReport(fetched, stats.written, stats.duplicates, len(keys))
    finally:
        with trio.move_on_after(CLOSE_DEADLINE_S, shield=True):
            for db in (database, second, sync_db):
                await trio.to_thread.run_sync(db.close, abandon_on_cancel=True)
