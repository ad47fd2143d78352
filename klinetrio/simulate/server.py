"""The fake exchange as one object: its market, clock and counters, and the faces it serves
(REST, WebSocket streams, the ``/data/...`` archives) on one port."""

from __future__ import annotations

import time
from dataclasses import replace
from functools import partial

import trio
from loguru import logger

from klinetrio.core.intervals import DAY_MS, Interval
from klinetrio.core.models import format_ms
from klinetrio.simulate.archives import ArchiveFace
from klinetrio.simulate.clock import ExchangeClock
from klinetrio.simulate.config import SimulatorConfig
from klinetrio.simulate.market import SYNTHETIC_LISTING_MS, Market, SyntheticMarket
from klinetrio.simulate.replay import load_replay
from klinetrio.simulate.rest import RestFace
from klinetrio.simulate.state import SimulatorStatistics
from klinetrio.simulate.streams import StreamFace
from klinetrio.simulate.web import Request, Response, serve_http


class Simulator:
    """The fake exchange. ``serve()`` runs it until cancelled; ``statistics()`` counts.

    Tests can pass their own ``market``; otherwise ``serve()`` builds the synthetic market, or
    loads ``config.data_dir`` in a worker thread.
    """

    def __init__(self, config: SimulatorConfig, market: Market | None = None) -> None:
        self.config = config
        self._market = market
        self._clock: ExchangeClock | None = None
        self.counters = SimulatorStatistics()
        self.sent: list[str] = []  # lines for --sent-log, written out by _write_sent_log
        self._rest = RestFace(self)
        self._streams = StreamFace(self)
        self._archives = ArchiveFace(self)

    def statistics(self) -> SimulatorStatistics:
        return replace(self.counters)

    @property
    def market(self) -> Market:
        if self._market is None:
            raise RuntimeError("the simulator is not serving yet")
        return self._market

    @property
    def clock(self) -> ExchangeClock:
        if self._clock is None:
            raise RuntimeError("the simulator is not serving yet")
        return self._clock

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, call ``task_status.started(port)`` with the bound port, serve until cancelled."""
        config = self.config
        start_ms = config.start_ms
        if self._market is None:
            if config.data_dir is not None:
                replay = await trio.to_thread.run_sync(load_replay, config.data_dir)
                self._market = replay
                if start_ms is None and replay.first_open_ms is not None:
                    start_ms = replay.first_open_ms + DAY_MS
            else:
                if start_ms is None:
                    start_ms = int(time.time() * 1000)  # the one read of the local clock
                listing = min(SYNTHETIC_LISTING_MS, Interval("1d").floor(start_ms) - 30 * DAY_MS)
                self._market = SyntheticMarket(config.symbols, config.seed, listing)
        if start_ms is None:
            start_ms = int(time.time() * 1000)
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
                    source=self._market.describe(),
                    now=format_ms(start_ms),
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
