"""What the faces of the fake exchange share: its counters, and the ``Exchange`` they serve.

The faces (REST, streams, archives) are given the ``Simulator`` as an ``Exchange``: this
protocol is all they may use of it, and it keeps them from importing the module that builds them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from klinetrio.simulate.clock import ExchangeClock
from klinetrio.simulate.config import SimulatorConfig
from klinetrio.simulate.market import Market

if TYPE_CHECKING:
    from klinetrio.simulate.venues import Venue


@dataclass(slots=True)
class SimulatorStatistics:
    """Counters since start (a snapshot from ``Simulator.statistics()``)."""

    connections_total: int = 0
    connections_open: int = 0
    streams_subscribed: int = 0
    frames_sent: int = 0  # frames of every kind, garbage and duplicates included
    closed_frames_sent: int = 0
    garbage_frames: int = 0
    duplicate_frames: int = 0
    dropped_connections: int = 0  # --drop-after
    shutdown_closes: int = 0  # --close-after
    pong_timeouts: int = 0
    message_rate_closes: int = 0
    rest_requests: int = 0
    rest_429: int = 0
    rest_418: int = 0
    rest_injected_errors: int = 0
    futures_data_requests: int = 0  # /futures/data/... (their refusals count in rest_429/418)
    futures_data_refused: int = 0
    archive_requests: int = 0
    archive_files_served: int = 0
    archive_not_found: int = 0
    archive_corrupted: int = 0  # --archive-corrupt: files chosen to be served damaged
    # Frames sent of the kinds beside klines: aggTrade, bookTicker, ticker, depth.
    kind_frames_sent: dict[str, int] = field(default_factory=dict)


class Exchange(Protocol):
    config: SimulatorConfig
    counters: SimulatorStatistics
    sent: list[str]  # lines for --sent-log

    @property
    def market(self) -> Market:
        """Spot's candles."""

    @property
    def venues(self) -> Mapping[str, Venue]:
        """Every market by name: ``spot``, ``usdm``, ``coinm``."""

    @property
    def clock(self) -> ExchangeClock: ...


__all__ = ["Exchange", "SimulatorStatistics"]
