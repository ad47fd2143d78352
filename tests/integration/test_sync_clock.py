"""The syncer on Trio's autojump clock, against a real PostgreSQL (calls inline, through the
``offload`` seam) and an exchange that is a plain function of the exchange clock.

What it must never do: skip a range that a failed pass did not fill, or record a hole that
only one read found empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
import trio
import trio.testing
from support import eventually

from klinetrio.binance.wire import RestKline
from klinetrio.core.models import Candle, StreamKey
from klinetrio.errors import ExchangeError
from klinetrio.store.database import Database
from klinetrio.store.writer import CandleWriter
from klinetrio.sync import HOLE_CONFIRM_MS, Syncer

KEY = StreamKey("BTCUSDT", "1m")
MINUTE = 60_000
T0 = 1_704_067_200_000  # 2024-01-01T00:00Z: the exchange clock at virtual time 0


async def inline(fn: Any, *args: Any) -> Any:
    return fn(*args)


class Exchange:
    """A 1m series that exists at every minute but ``halted``, on a clock tied to Trio's."""

    def __init__(self, halted: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        self.halted = set(halted)
        self.empty_once: set[int] = set()  # page starts answered empty the first time
        self.fail_once: list[Exception] = []
        self.requests: list[int] = []
        self.on_request: Any = None

    page_limit = 1000

    async def server_time(self) -> int:
        return T0 + round(trio.current_time() * 1000)

    async def klines(
        self,
        symbol: str,
        interval: str,
        *,
        start_ms: int,
        end_ms: int | None = None,
        limit: int | None = None,
    ) -> list[RestKline]:
        limit = self.page_limit if limit is None else limit
        self.requests.append(start_ms)
        if self.on_request is not None:
            self.on_request(start_ms)
        if self.fail_once:
            raise self.fail_once.pop()
        if start_ms in self.empty_once:
            self.empty_once.discard(start_ms)
            return []
        now = await self.server_time()
        last = now if end_ms is None else min(end_ms, now)
        t = start_ms - start_ms % MINUTE + (MINUTE if start_ms % MINUTE else 0)
        rows = []
        while t <= last and len(rows) < limit:
            if t not in self.halted:
                rows.append(
                    RestKline(t, "1", "2", "0.5", "1.5", "3", t + MINUTE - 1, "4", 5, "1", "2")
                )
            t += MINUTE
        return rows


def stored(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT (extract(epoch FROM time) * 1000)::bigint FROM candles ORDER BY time"
        )
        return [int(r[0]) for r in rows]  # type: ignore[call-overload]


def holes(url: str) -> list[tuple[int, int]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT (extract(epoch FROM start_time) * 1000)::bigint,"
            " (extract(epoch FROM end_time) * 1000)::bigint FROM candle_holes ORDER BY 1"
        )
        return [(int(a), int(b)) for a, b in rows]  # type: ignore[call-overload]


async def run(
    database_url: str, exchange: Exchange, *, lookback_ms: int, until: Any, after: Any = None
) -> Syncer:
    Database(database_url).migrate()
    syncer = Syncer(exchange, Database(database_url), lookback_ms=lookback_ms, offload=inline)
    writer = CandleWriter(Database(database_url), flush_interval=0.01, offload=inline)
    send, receive = trio.open_memory_channel[Sequence[Candle]](64)
    with trio.fail_after(3600):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run, receive)
            async with trio.open_nursery() as intake:
                await intake.start(syncer.run, send)
                if after is not None:
                    await after(syncer)
                else:
                    syncer.request_sync(KEY, None)
                await eventually(lambda: until(syncer, writer), poll=0.5)
                intake.cancel_scope.cancel()
    return syncer


async def test_a_halt_becomes_a_hole_only_after_a_second_read_a_minute_later(
    autojump_clock: trio.testing.MockClock, database_url: str
) -> None:
    await trio.sleep(3 * 3600)  # the exchange clock reads 03:00
    halt = {T0 + 60 * MINUTE, T0 + 61 * MINUTE}
    exchange = Exchange(halted=halt)
    first_holes: list[list[tuple[int, int]]] = []

    async def start(syncer: Syncer) -> None:
        syncer.request_sync(KEY, None)
        await syncer.wait_idle()
        first_holes.append(holes(database_url))
        assert syncer.statistics().holes_suspected == 1

    syncer = await run(
        database_url,
        exchange,
        lookback_ms=3 * 3600_000,
        after=start,
        until=lambda s, w: s.statistics().holes_recorded == 1 and not s.statistics().pending,
    )
    assert first_holes == [[]]  # one read is not enough
    assert holes(database_url) == [(T0 + 60 * MINUTE, T0 + 62 * MINUTE)]
    assert syncer.statistics().holes_suspected == 0
    # Asked twice, the second time at least a minute (exchange time) after the first.
    halted_reads = [t for t in exchange.requests if t <= T0 + 60 * MINUTE]
    assert len(halted_reads) >= 2
    assert trio.current_time() * 1000 >= 3 * 3600_000 + HOLE_CONFIRM_MS
    expected = [T0 + m * MINUTE for m in range(180) if T0 + m * MINUTE not in halt]
    assert stored(database_url)[: len(expected)] == expected


async def test_a_transient_empty_page_is_never_a_hole(
    autojump_clock: trio.testing.MockClock, database_url: str
) -> None:
    await trio.sleep(3 * 3600)
    exchange = Exchange()
    exchange.empty_once = {T0}  # the first page (the whole range) answered empty, once
    syncer = await run(
        database_url,
        exchange,
        lookback_ms=3 * 3600_000,
        until=lambda s, w: len(stored(database_url)) >= 180 and not s.statistics().pending,
    )
    assert holes(database_url) == []
    assert syncer.statistics().holes_recorded == 0
    assert stored(database_url)[:180] == [T0 + m * MINUTE for m in range(180)]


async def test_a_failed_pass_leaves_its_range_to_be_asked_again(
    autojump_clock: trio.testing.MockClock, database_url: str
) -> None:
    await trio.sleep(3600)
    exchange = Exchange()
    asked: list[int] = []

    def another_request_arrives(start_ms: int) -> None:
        # A reconnect asks for a sync while the first pass is still fetching.
        if not asked:
            asked.append(start_ms)
            syncer_ref[0].request_sync(KEY, None)

    syncer_ref: list[Syncer] = []

    async def start(syncer: Syncer) -> None:
        syncer_ref.append(syncer)
        exchange.on_request = another_request_arrives
        exchange.fail_once = [ExchangeError("the exchange said something we cannot use")]
        syncer.request_sync(KEY, None)

    await run(
        database_url,
        exchange,
        lookback_ms=3600_000,
        after=start,
        until=lambda s, w: len(stored(database_url)) >= 60 and not s.statistics().pending,
    )
    # The failed pass covered nothing: the request that came meanwhile fetched the whole hour.
    assert stored(database_url)[:60] == [T0 + m * MINUTE for m in range(60)]


async def test_a_later_start_asked_meanwhile_does_not_shadow_the_start_up_sync(
    autojump_clock: trio.testing.MockClock, database_url: str
) -> None:
    await trio.sleep(2 * 3600)

    async def start(syncer: Syncer) -> None:
        # Start-up asks from the newest stored candle; before a worker takes it, a stream
        # that already saw a live candle asks from the one after it.
        syncer.request_sync(KEY, None)
        syncer.request_sync(KEY, T0 + 119 * MINUTE)

    await run(
        database_url,
        Exchange(),
        lookback_ms=2 * 3600_000,
        after=start,
        until=lambda s, w: len(stored(database_url)) >= 120 and not s.statistics().pending,
    )
    assert stored(database_url)[:120] == [T0 + m * MINUTE for m in range(120)]
