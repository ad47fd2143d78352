"""What the collector tells the world about itself: one frozen snapshot of every component.

``Collector.statistics()`` builds it; the API (``/health``, ``/ready``, ``/metrics``) and an
embedding program read it. It lives in a module of its own so that neither needs to import
the composition root. Each part is the component's own snapshot (see its ``statistics()``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from klinetrio.binance.rest import RestStatistics
from klinetrio.binance.stream import ConnectionStatistics
from klinetrio.fanout import FanoutStatistics
from klinetrio.futures_stats import FuturesStatsStatistics
from klinetrio.outputs.redis import RedisStatistics
from klinetrio.store.coverage_monitor import CoverageSummary
from klinetrio.store.events_writer import EventWriterStatistics
from klinetrio.store.upkeep import UpkeepStatistics
from klinetrio.store.writer import WriterStatistics
from klinetrio.sync import SyncStatistics
from klinetrio.trade_sync import TradeSyncStatistics
from klinetrio.universe import UniverseStatistics


@dataclass(frozen=True, slots=True)
class CollectorStatistics:
    """The collector at one moment (``taken_at`` and ``started_at`` in Trio's clock)."""

    taken_at: float
    started_at: float
    ready: bool
    stopping: bool
    writer_buffer_limit: int
    writer: WriterStatistics
    connections: tuple[ConnectionStatistics, ...]
    sync: SyncStatistics
    rest: RestStatistics  # every market's client together
    fanout: FanoutStatistics
    upkeep: UpkeepStatistics
    redis: RedisStatistics | None = None
    rest_by_market: dict[str, RestStatistics] = field(default_factory=dict)
    universe: UniverseStatistics = field(default_factory=UniverseStatistics)
    futures_stats: FuturesStatsStatistics | None = None  # None: KLINETRIO_FUTURES_STATS off
    coverage: CoverageSummary | None = None  # of the collected series over the look-back
    # The other kinds (KLINETRIO_STREAMS): one writer per table, and the trade syncer.
    events: tuple[EventWriterStatistics, ...] = ()
    trade_sync: TradeSyncStatistics | None = None

    @property
    def uptime_s(self) -> float:
        return self.taken_at - self.started_at

    @property
    def all_subscribed(self) -> bool:
        return all(c.subscribed for c in self.connections)


__all__ = ["CollectorStatistics"]
