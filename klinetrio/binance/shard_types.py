"""The types a shard, its connection and the streams component share.

``binance.shard`` (the hot loop), ``binance.connection`` (sessions, rotation, reconnects) and
``binance.stream`` (the component) speak of the same few things: what a connection needs of a
WebSocket library (``Transport``) and of whoever fills gaps (``SyncRequester``), a shard's
counters (``ConnectionStatistics``), what the shard remembers per stream (``Series``) and what
it knows of one WebSocket connection (``Session``). They live here, beside no behaviour, so
the hot loop's module holds only the loop and what it keeps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import trio

from klinetrio.core.intervals import Interval
from klinetrio.core.models import StreamKey
from klinetrio.errors import StreamError

NEVER = 2**63  # no grace pending (``Series.late_deadline``)


class SyncRequester(Protocol):
    """Who fills gaps: told when a series may have missed candles (see ``sync.Syncer``)."""

    def request_sync(self, key: StreamKey, start_ms: int | None) -> None: ...


class Transport(Protocol):
    """The little a connection needs from a WebSocket library (so a thinner one can replace it).

    ``ping`` sends a ping and returns when its pong arrives; callers put a deadline around it.
    Errors of the library must surface as ``StreamError``.
    """

    async def send_message(self, message: str) -> None: ...

    async def get_message(self) -> str | bytes: ...

    async def get_messages(self) -> Sequence[str | bytes]:
        """Every message received and not yet returned, at least one."""
        ...

    async def ping(self, payload: bytes | None = None) -> None: ...


@dataclass(slots=True)
class ConnectionStatistics:
    """Counters of one shard (all its sessions); read at request time as a snapshot.

    ``reconnects`` counts connection attempts made because a session or an attempt failed;
    ``rotations`` counts planned replacements (connection age, ``serverShutdown``), which are
    not failures. ``open_connections`` is 2 while a rotation overlaps, 0 once stopped.
    ``subscribes``/``unsubscribes`` count streams added to or removed from a live session.
    """

    name: str
    streams: int
    market: str = "spot"
    state: str = "starting"
    frames: int = 0
    closed_candles: int = 0
    decode_errors: int = 0
    reconnects: int = 0
    rotations: int = 0
    connect_attempts: int = 0
    connects: int = 0
    budget_waits: int = 0
    pong_timeouts: int = 0
    stalls: int = 0
    gaps_detected: int = 0
    # Skips whose every candle came late within the grace: REST requests not sent.
    sync_requests_saved: int = 0
    late_candles: int = 0
    open_connections: int = 0
    subscribes: int = 0
    unsubscribes: int = 0
    # The other kinds (see kind_streams.KindStatistics), copied in by the snapshot.
    event_frames: int = 0
    event_duplicates: int = 0
    trade_gaps: int = 0
    last_frame_at: float | None = None
    last_event_ms: int | None = None
    last_error: str | None = None
    subscribed: bool = False


@dataclass(slots=True)
class Series:
    """Per stream, shared by every session of the shard: what was last sent on."""

    key: StreamKey
    interval: Interval
    last_closed: int | None = None
    # The newest event time handed to observers: during a rotation both sessions deliver the
    # same updates, and an observer sees each once.
    observed_ms: int = -1
    # During a rotation's hand-off: open times the new session jumped over, which the old
    # session, still reading its backlog, is expected to bring.
    holes: set[int] = field(default_factory=set)
    # Open times skipped on the stream, waiting out the grace (see ``binance.shard.Shard._skipped``), and the
    # exchange time (ms) at which they go to sync.
    late: set[int] = field(default_factory=set)
    late_deadline: int = NEVER


@dataclass(slots=True, eq=False)
class Session:
    """One WebSocket connection of a shard, as the shard's loop sees it.

    ``changed`` is set when the shard must act: the server announced a shutdown, or the session
    ended. ``scope`` is the session's own cancel scope: cancelling it retires the session.
    ``subscribed`` is what this session asked the server for; ``requests`` the commands still
    waiting for an answer (id → method and stream names).
    """

    number: int
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    changed: trio.Event = field(default_factory=trio.Event)
    connected_at: float = math.inf
    subscribed_at: float = math.inf
    last_frame_at: float = 0.0
    last_event_ms: int = 0
    last_sent_at: float = -math.inf
    ended_at: float | None = None
    shutdown_announced: bool = False
    error: StreamError | None = None
    subscribed: set[str] = field(default_factory=set)
    requests: dict[int, tuple[str, list[str]]] = field(default_factory=dict)
    next_id: int = 1

    def fail(self, error: StreamError) -> None:
        if self.error is None:
            self.error = error


__all__ = [
    "NEVER",
    "ConnectionStatistics",
    "Series",
    "Session",
    "SyncRequester",
    "Transport",
]
