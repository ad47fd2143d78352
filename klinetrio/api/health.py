"""``/health`` and ``/ready``: what a person or a load balancer needs to know, computed from one
``CollectorStatistics`` snapshot (pure: no component is asked anything at request time)."""

from __future__ import annotations

import msgspec

from klinetrio.core.models import format_ms
from klinetrio.outputs.redis import RedisStatistics
from klinetrio.snapshot import CollectorStatistics
from klinetrio.store.backups import BackupStatistics
from klinetrio.store.coverage_monitor import CoverageSummary
from klinetrio.store.events_writer import EventWriterStatistics
from klinetrio.store.retention import RetentionStatistics
from klinetrio.store.sizes import TableSize
from klinetrio.trade_sync import TradeSyncStatistics

# The writer's buffer this full while the database is down: data is about to be dropped.
UNHEALTHY_BUFFER_SHARE = 0.9


class ConnectionHealth(msgspec.Struct):
    name: str
    state: str
    streams: int
    subscribed: bool
    frames: int
    closed_candles: int
    reconnects: int
    decode_errors: int
    seconds_since_last_frame: float | None
    last_error: str | None


class ObserverHealth(msgspec.Struct):
    """The consumers of live events: relay clients, subscriptions, Redis."""

    observers: int
    delivered: dict[str, int]
    dropped: dict[str, int]


class Health(msgspec.Struct):
    status: str
    uptime_s: float
    ready: bool
    database: str
    connections: list[ConnectionHealth]
    candles_written: int
    candles_dropped: int
    candles_rejected: int
    buffer_size: int
    errors: dict[str, int]
    last_errors: dict[str, str]
    last_candle: dict[str, str]
    observers: ObserverHealth
    redis: RedisStatistics | None = None
    # The store: table sizes (before/after compression where TimescaleDB knows), the last
    # daily backup, retention by serve; null where not configured.
    tables: list[TableSize] = msgspec.field(default_factory=list)
    tables_measured_at: str | None = None
    backup: BackupStatistics | None = None
    retention: RetentionStatistics | None = None
    # The collected series over the look-back: expected, present, holes, missing, complete %.
    coverage: CoverageSummary | None = None
    # The other kinds (KLINETRIO_STREAMS): rows written, dropped, buffered per table.
    events: list[EventWriterStatistics] = msgspec.field(default_factory=list)
    trade_sync: TradeSyncStatistics | None = None


def status_of(stats: CollectorStatistics) -> str:
    """``healthy``, ``degraded`` or ``unhealthy`` (see the README's Health and metrics)."""
    writer = stats.writer
    connections = stats.connections
    subscribed = sum(c.subscribed for c in connections)
    if not writer.healthy:
        if writer.buffered >= UNHEALTHY_BUFFER_SHARE * stats.writer_buffer_limit:
            return "unhealthy"
        if connections and subscribed == 0:
            return "unhealthy"
        return "degraded"
    if connections and subscribed == 0:
        return "degraded"
    if subscribed < len(connections) or writer.dropped:
        return "degraded"
    if any(not e.healthy or e.dropped for e in stats.events):
        return "degraded"
    if stats.redis is not None and not stats.redis.connected and stats.redis.outages:
        return "degraded"
    return "healthy"


def health(stats: CollectorStatistics) -> Health:
    writer = stats.writer
    sync = stats.sync
    store = stats.upkeep
    connections = [
        ConnectionHealth(
            name=c.name,
            state=c.state,
            streams=c.streams,
            subscribed=c.subscribed,
            frames=c.frames,
            closed_candles=c.closed_candles,
            reconnects=c.reconnects,
            decode_errors=c.decode_errors,
            seconds_since_last_frame=None
            if c.last_frame_at is None
            else round(stats.taken_at - c.last_frame_at, 3),
            last_error=c.last_error,
        )
        for c in stats.connections
    ]
    last_errors = {
        k: v
        for k, v in {
            "database": writer.last_error,
            "sync": sync.last_error,
            "redis": None if stats.redis is None else stats.redis.last_error,
        }.items()
        if v is not None
    }
    return Health(
        status=status_of(stats),
        uptime_s=round(stats.uptime_s, 3),
        ready=stats.ready,
        database="up" if writer.healthy else "down",
        connections=connections,
        candles_written=writer.written,
        candles_dropped=writer.dropped,
        candles_rejected=writer.rejected,
        buffer_size=writer.buffered,
        errors={
            "database": writer.errors,
            "decode": sum(c.decode_errors for c in connections),
            "reconnects": sum(c.reconnects for c in connections),
            "sync": sync.errors,
        },
        last_errors=last_errors,
        last_candle={str(k): format_ms(t) for k, t in sorted(writer.last_open_time.items())},
        observers=ObserverHealth(
            len(stats.fanout.observers),
            stats.fanout.delivered_by_name,
            stats.fanout.dropped_by_name,
        ),
        redis=stats.redis,
        tables=list(store.tables),
        tables_measured_at=store.tables_measured_at,
        backup=store.backup,
        retention=store.retention,
        coverage=stats.coverage,
        events=list(stats.events),
        trade_sync=stats.trade_sync,
    )


def not_ready_reasons(stats: CollectorStatistics) -> list[str]:
    reasons = []
    if not stats.writer.healthy:
        reasons.append("database unreachable")
    if not stats.all_subscribed:
        reasons.append("not every stream is subscribed")
    if stats.stopping:
        reasons.append("stopping")
    return reasons


__all__ = ["ConnectionHealth", "Health", "health", "not_ready_reasons", "status_of"]
