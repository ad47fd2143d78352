"""The fake exchange as one object: its markets (spot, USD-M, COIN-M), clock and counters, and
the faces it serves (REST, WebSocket streams, the ``/data/...`` archives) on one port."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from functools import partial

import trio
from loguru import logger

from klinetrio.core.intervals import DAY_MS, Interval
from klinetrio.core.models import format_ms
from klinetrio.simulate.archives import ArchiveFace
from klinetrio.simulate.clock import ExchangeClock
from klinetrio.simulate.config import SimulatorConfig
from klinetrio.simulate.listings import ScheduledMarket, windows_of
from klinetrio.simulate.market import SYNTHETIC_LISTING_MS, Market, SyntheticMarket
from klinetrio.simulate.replay import load_replay
from klinetrio.simulate.rest import RestFace
from klinetrio.simulate.state import SimulatorStatistics
from klinetrio.simulate.streams import StreamFace
from klinetrio.simulate.venues import MARKET_NAMES, MarketStatistics, Venue, make_venue
from klinetrio.simulate.web import Request, Response, serve_http


class Simulator:
    """The fake exchange. ``serve()`` runs it until cancelled; ``statistics()`` counts.

    Tests can pass their own ``market`` (spot's candles) or ``markets`` (by market name);
    otherwise ``serve()`` builds each market's synthetic candles, or loads its replay directory
    (``config.data_dir_of``) in a worker thread.
    """

    def __init__(
        self,
        config: SimulatorConfig,
        market: Market | None = None,
        *,
        markets: Mapping[str, Market] | None = None,
    ) -> None:
        self.config = config
        self._given: dict[str, Market] = dict(markets or {})
        if market is not None:
            self._given["spot"] = market
        self._venues: dict[str, Venue] = {}
        self._clock: ExchangeClock | None = None
        self.counters = SimulatorStatistics()
        self.sent: list[str] = []  # lines for --sent-log, written out by _write_sent_log
        self._rest = RestFace(self)
        self._streams = StreamFace(self)
        self._archives = ArchiveFace(self)

    def statistics(self) -> SimulatorStatistics:
        return replace(self.counters, kind_frames_sent=dict(self.counters.kind_frames_sent))

    def market_statistics(self, name: str) -> MarketStatistics:
        """The REST counters of market ``name`` (``spot``, ``usdm``, ``coinm``)."""
        return replace(self.venues[name].counters)

    @property
    def market(self) -> Market:
        """Spot's candles."""
        return self.venues["spot"].candles

    @property
    def venues(self) -> Mapping[str, Venue]:
        if not self._venues:
            raise RuntimeError("the simulator is not serving yet")
        return self._venues

    def market_of(self, name: str) -> Market:
        """The candles of market ``name`` (``spot``, ``usdm``, ``coinm``)."""
        return self.venues[name].candles

    async def _build_markets(self) -> int:
        """Every market's candles and listing windows; the exchange time to start at."""
        config = self.config
        start_ms = config.start_ms
        candles: dict[str, Market] = dict(self._given)
        firsts: list[int] = []
        for name in MARKET_NAMES:
            directory = config.data_dir_of(name)
            if name in candles or directory is None:
                continue
            replay = await trio.to_thread.run_sync(load_replay, directory)
            candles[name] = replay
            if replay.first_open_ms is not None:
                firsts.append(replay.first_open_ms)
        if start_ms is None and firsts:
            start_ms = min(firsts) + DAY_MS
        if start_ms is None:
            start_ms = int(time.time() * 1000)  # the one read of the local clock
        listing = min(SYNTHETIC_LISTING_MS, Interval("1d").floor(start_ms) - 30 * DAY_MS)
        for index, name in enumerate(MARKET_NAMES):
            windows = windows_of(config.listings, name, start_ms)
            # Spot keeps the configured seed (its candles are what older tests know);
            # the futures markets get their own, so a symbol differs between markets.
            seed = config.seed + index * 1_000_003
            if name not in candles:
                symbols = tuple(dict.fromkeys((*config.symbols_of(name), *windows)))
                candles[name] = SyntheticMarket(symbols, seed, listing, style=name)
            market = candles[name]
            if windows:
                market = ScheduledMarket(market, windows)
            self._venues[name] = make_venue(
                name, config, market, windows, seed=seed, listing_ms=listing
            )
        return start_ms

    @property
    def clock(self) -> ExchangeClock:
        if self._clock is None:
            raise RuntimeError("the simulator is not serving yet")
        return self._clock

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, call ``task_status.started(port)`` with the bound port, serve until cancelled."""
        config = self.config
        start_ms = await self._build_markets()
        self._clock = ExchangeClock(start_ms, config.speed, trio.current_time())
        serve = partial(
            serve_http,
            self._handle,
            config.host,
            config.port,
            websocket_handler=self._streams.handle,
        )
        with logger.contextualize(component="simulate"):
            async with trio.open_nursery() as nursery:
                port: int = await nursery.start(serve)
                logger.info(
                    "simulator listening on {host}:{port} (speed x{speed:g}, {source}); "
                    "exchange time {now}",
                    host=config.host,
                    port=port,
                    speed=config.speed,
                    source="; ".join(
                        f"{name}: {venue.candles.describe()}"
                        for name, venue in self._venues.items()
                        if venue.candles.symbols
                    ),
                    now=format_ms(start_ms),
                )
                for name, venue in self._venues.items():
                    replayed = venue.trades.replayed_symbols
                    if replayed:
                        logger.info(
                            "{market}: trades of {symbols} replayed as recorded, others derived",
                            market=name,
                            symbols=" ".join(replayed),
                        )
                logger.info(
                    "derived trades: {rate:g} a second per symbol; bookTicker {book:g}/s, "
                    "depth {depth:g}/s",
                    rate=config.trade_rate,
                    book=config.book_rate,
                    depth=config.depth_rate,
                )
                if config.sent_log is not None:
                    nursery.start_soon(self._write_sent_log, config.sent_log)
                task_status.started(port)

    async def _handle(self, request: Request) -> Response:
        if request.path.startswith("/data/"):
            return await self._archives.handle(request)
        return await self._rest.handle(request)

    async def _write_sent_log(self, path: str) -> None:
        """Append the recorded send times to ``path`` from a worker thread, twice a second."""

        def append(lines: list[str]) -> None:
            with open(path, "a", encoding="ascii") as file:
                file.writelines(lines)

        try:
            while True:
                await trio.sleep(0.5)
                if self.sent:
                    lines, self.sent = self.sent, []
                    await trio.to_thread.run_sync(append, lines)
        finally:
            if self.sent:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(append, self.sent)
                self.sent = []


async def serve_simulator(
    config: SimulatorConfig, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run the fake exchange until cancelled; ``task_status.started()`` gets the bound port."""
    await Simulator(config).serve(task_status=task_status)
