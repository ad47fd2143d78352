"""Futures statistics: long/short ratios and open interest of the collected futures symbols.

With ``KLINETRIO_FUTURES_STATS=on`` every collected USD-M and COIN-M symbol gets four series per
``KLINETRIO_FUTURES_STATS_PERIOD`` (default ``5m``): the top traders' long/short position and
account ratios, everyone's account ratio (``long_short_ratios``, by ``kind``) and the open
interest (``open_interest``), from Binance's ``/futures/data/*`` endpoints.

Binance keeps 30 days of them, so what matters is not to fall behind for longer than that. At
start each series reads what the table holds of its window (the last 30 days, within the sync
look-back) and asks for every range it lacks; after that each poll, just after a period ends,
asks for what came since the newest row. A poll that fails leaves its range to the next one, so a
restart after twenty minutes or an hour without the exchange heals itself; what fell out of the
30 days stays a hole. Requests go through the REST client's own budget for these endpoints
(1000 per 5 minutes per IP): with many symbols the polls simply take longer, and the klines'
weight is never touched.

COIN-M statistics are per pair: ``BTCUSD_PERP`` is asked as pair ``BTCUSD``, contract type
``PERPETUAL`` for open interest; delivery contracts (``BTCUSD_211231``) are not polled.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import trio
from loguru import logger

from klinetrio.binance.wire import OpenInterestRow, RatioRow
from klinetrio.core.gaps import missing_ranges
from klinetrio.core.intervals import Interval
from klinetrio.core.models import format_ms, plural
from klinetrio.errors import DatabaseUnavailable, ExchangeError
from klinetrio.store.database import Database
from klinetrio.store.futures_stats import (
    KINDS,
    OPEN_INTEREST,
    RATIO_KINDS,
    save_open_interest,
    save_ratios,
    stored_runs,
)
from klinetrio.threads import Offload, thread_offload

DAY_MS = 86_400_000
KEEP_MS = 30 * DAY_MS  # what Binance keeps of these statistics
PAGE = 500  # the most rows one request returns
# A period's statistics appear shortly after it ends: poll this long after each boundary.
SETTLE_MS = 10_000
# The exchange's clock rate is measured over at least this many local seconds.
RATE_BASELINE_S = 5.0
RETRY_S = 60.0


class StatisticsSource(Protocol):
    """What the poller needs of a futures market's REST client."""

    async def server_time(self) -> int: ...

    async def futures_data(
        self, endpoint: str, params: Mapping[str, str]
    ) -> list[RatioRow] | list[OpenInterestRow]: ...


@dataclass(frozen=True, slots=True)
class Series:
    market: str
    symbol: str
    kind: str  # top_position, top_account, global_account or open_interest

    def params(self, period: str) -> dict[str, str]:
        if self.market != "coinm":
            return {"symbol": self.symbol, "period": period}
        pair = self.symbol.partition("_")[0]
        if self.kind == OPEN_INTEREST:
            return {"pair": pair, "contractType": "PERPETUAL", "period": period}
        return {"pair": pair, "period": period}

    @property
    def endpoint(self) -> str:
        return "openInterestHist" if self.kind == OPEN_INTEREST else RATIO_KINDS[self.kind]

    def __str__(self) -> str:
        return f"{self.market}:{self.symbol} {self.kind}"


@dataclass(slots=True)
class FuturesStatsStatistics:
    series: int = 0
    polls: int = 0
    requests: int = 0
    rows: int = 0
    written: int = 0
    failures: int = 0
    pending_ranges: int = 0  # ranges still to ask for (a failed request leaves its range)
    lost: int = 0  # periods that fell out of Binance's 30 days before they could be fetched


@dataclass(slots=True)
class _State:
    pending: list[tuple[int, int]]  # [start, end) ranges of period times still to ask for
    newest: int | None = None  # the newest time stored or asked for up to


@dataclass(slots=True)
class _Backlog:
    """What the series new to one pass lacked, for one line instead of one per series."""

    series: int = 0
    periods: int = 0
    since: int | None = None

    def add(self, periods: int, state: _State) -> None:
        self.series += 1
        self.periods += periods
        first = state.pending[0][0]
        self.since = first if self.since is None else min(self.since, first)


def pollable(market: str, symbol: str) -> bool:
    """USD-M symbols and COIN-M perpetuals have statistics (see the module doc)."""
    return market == "usdm" or (market == "coinm" and symbol.endswith("_PERP"))


class FuturesStatistics:
    """Keeps ``long_short_ratios`` and ``open_interest`` current (see the module doc)."""

    def __init__(
        self,
        rest: Mapping[str, StatisticsSource],
        database: Database,
        *,
        period: str,
        lookback_ms: int,
        offload: Offload | None = None,
    ) -> None:
        self._rest = rest
        self._db = database
        self.period = period
        self._step = Interval.parse(period)
        self._lookback_ms = lookback_ms
        self._offload = offload or thread_offload(trio.CapacityLimiter(1))
        self._symbols: dict[str, tuple[str, ...]] = {}
        self._states: dict[Series, _State] = {}
        self._stats = FuturesStatsStatistics()
        self._changed = trio.Event()
        self._failing = False
        self._first_reading: dict[str, tuple[float, int]] = {}
        self._backlog = _Backlog()
        if lookback_ms > KEEP_MS:
            logger.info(
                "futures statistics reach back 30 days (all Binance keeps), not the whole"
                " look-back of KLINETRIO_SYNC_LOOKBACK"
            )

    def statistics(self) -> FuturesStatsStatistics:
        return replace(
            self._stats,
            series=len(self._states),
            pending_ranges=sum(len(s.pending) for s in self._states.values()),
        )

    def set_symbols(self, market: str, symbols: Sequence[str]) -> None:
        """The symbols of ``market`` to poll from now on (the universe's collected ones)."""
        if market not in self._rest:
            return
        chosen = tuple(s for s in symbols if pollable(market, s))
        self._symbols[market] = chosen
        wanted = {Series(market, s, k) for s in chosen for k in KINDS}
        for series in [s for s in self._states if s.market == market and s not in wanted]:
            del self._states[series]
        self._changed.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Poll until cancelled: a pass over every series, then wait for the next period."""
        task_status.started()
        with logger.contextualize(component="futures-stats"):
            while True:
                wait = await self.poll()
                with trio.move_on_after(wait):
                    await self._changed.wait()
                self._changed = trio.Event()

    async def poll(self) -> float:
        """One pass: every series asks for what it lacks. Returns the seconds to the next."""
        self._stats.polls += 1
        was_failing = self._failing
        self._backlog = _Backlog()
        failed = False
        next_wait = (self._step.fixed_ms or 3_600_000) / 1000
        for market, symbols in self._symbols.items():
            if not symbols:
                continue
            try:
                now = await self._rest[market].server_time()
                rate = self._clock_rate(market, now)
            except ExchangeError as exc:
                failed = self._failed(f"{market} server time", exc) or failed
                continue
            for symbol in symbols:
                for kind in KINDS:
                    try:
                        await self._catch_up(Series(market, symbol, kind), now)
                    except (ExchangeError, DatabaseUnavailable) as exc:
                        failed = self._failed(f"{market}:{symbol} {kind}", exc) or failed
            boundary = self._step.next_open(self._step.floor(now))
            wait = max(0, boundary + SETTLE_MS - now) / 1000 / rate
            next_wait = min(next_wait, 1.0 if math.isinf(rate) else wait)
        backlog = self._backlog
        if backlog.since is not None:
            logger.info(
                "futures statistics {period}: {periods} missing in {series} series since {since},"
                " asked for",
                period=self.period,
                periods=plural(backlog.periods, "period"),
                series=f"{backlog.series:,}",
                since=format_ms(backlog.since),
            )
        if was_failing and not failed:
            logger.info("futures statistics answer again")
        self._failing = failed
        return RETRY_S if failed else next_wait

    def _clock_rate(self, market: str, now_ms: int) -> float:
        """Exchange milliseconds per local millisecond, measured since the first reading (1 on
        Binance; the simulator's clock may run faster): the wait for the next period is on the
        exchange's clock."""
        local = trio.current_time()
        first = self._first_reading.setdefault(market, (local, now_ms))
        elapsed = local - first[0]
        if elapsed < RATE_BASELINE_S:
            return math.inf  # not measured yet: look again within a second
        return min(max((now_ms - first[1]) / 1000 / elapsed, 1.0), 100_000.0)

    def _failed(self, what: str, exc: Exception) -> bool:
        self._stats.failures += 1
        if not self._failing:
            logger.warning(
                "futures statistics: {what} failed ({error}); the range is asked for again"
                " at the next poll",
                what=what,
                error=exc,
            )
        self._failing = True  # one warning per outage, not one per series
        return True

    def _window(self, now: int) -> tuple[int, int]:
        """``[start, end)`` of the period times worth asking for now."""
        end = self._step.floor(now)  # the period in progress has no row yet
        start = self._step.ceil(max(now - KEEP_MS, now - self._lookback_ms))
        return start, end

    async def _catch_up(self, series: Series, now: int) -> None:
        start, end = self._window(now)
        state = self._states.get(series)
        if state is None:
            runs = await self._offload(
                self._db.call,
                "reading futures statistics",
                stored_runs,
                series.market,
                series.symbol,
                self.period,
                series.kind,
                self._step.fixed_ms or DAY_MS,
                start,
                end,
            )
            state = _State(missing_ranges(self._step, start, end, runs))
            state.newest = end
            self._states[series] = state
            if state.pending:
                self._backlog.add(sum(self._step.count(a, b) for a, b in state.pending), state)
        elif state.newest is not None and state.newest < end:
            state.pending.append((state.newest, end))
            state.newest = end
        # What fell out of Binance's 30 days cannot be asked for any more: a hole, said once.
        lost = sum(self._step.count(a, min(b, start)) for a, b in state.pending if a < start)
        if lost:
            self._stats.lost += lost
            logger.warning(
                "futures statistics {series} {period}: {count} fell out of the 30 days Binance"
                " keeps before they could be fetched; they stay missing",
                series=str(series),
                period=self.period,
                count=plural(lost, "period"),
            )
        state.pending = [(max(a, start), b) for a, b in state.pending if b > start]
        while state.pending:
            a, b = state.pending[0]
            page_end = min(b, a + PAGE * (self._step.fixed_ms or DAY_MS))
            await self._fetch(series, a, page_end)
            if page_end >= b:
                state.pending.pop(0)
            else:
                state.pending[0] = (page_end, b)

    async def _fetch(self, series: Series, start: int, end: int) -> None:
        params = series.params(self.period)
        params.update({"startTime": str(start), "endTime": str(end - 1), "limit": str(PAGE)})
        answer = await self._rest[series.market].futures_data(series.endpoint, params)
        self._stats.requests += 1
        rows: list[RatioRow | OpenInterestRow] = [r for r in answer if start <= r.timestamp < end]
        if not rows:
            return
        self._stats.rows += len(rows)
        if series.kind == OPEN_INTEREST:
            written = await self._offload(
                self._db.call,
                "saving open interest",
                save_open_interest,
                series.market,
                series.symbol,
                self.period,
                [r for r in rows if isinstance(r, OpenInterestRow)],
            )
        else:
            written = await self._offload(
                self._db.call,
                "saving long/short ratios",
                save_ratios,
                series.market,
                series.symbol,
                self.period,
                series.kind,
                [r for r in rows if isinstance(r, RatioRow)],
            )
        self._stats.written += written


__all__ = ["FuturesStatistics", "FuturesStatsStatistics", "Series", "StatisticsSource", "pollable"]
