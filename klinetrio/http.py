"""Health, readiness and metrics over HTTP: ``/live``, ``/ready``, ``/health``, ``/metrics``.

Everything here reads the components' ``statistics()`` at request time; no component knows it
is observed. Metrics use a registry owned by this object (never prometheus_client's global one),
so two services in one process, or one per test, do not collide.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec
import trio
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from klinetrio.core.models import format_ms
from klinetrio.store.backups import BackupStatistics
from klinetrio.store.retention import RetentionStatistics
from klinetrio.store.sizes import TableSize
from klinetrio.web import Request, Response, serve_http

if TYPE_CHECKING:
    from klinetrio.service import Service


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
    # The store: table sizes (before/after compression where TimescaleDB knows), the last
    # daily backup, retention by serve; null where not configured.
    tables: list[TableSize] = msgspec.field(default_factory=list)
    tables_measured_at: str | None = None
    backup: BackupStatistics | None = None
    retention: RetentionStatistics | None = None


@dataclass(eq=False, slots=True)
class _Collector(Collector):
    service: Service

    def collect(self) -> Iterator[Metric]:
        streams = self.service.streams.statistics()
        writer = self.service.writer.statistics()
        sync = self.service.syncer.statistics()
        rest = self.service.rest.statistics()

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(f"klinetrio_{name}", doc, value=value)

        def per_connection(name: str, doc: str, attr: str) -> CounterMetricFamily:
            family = CounterMetricFamily(f"klinetrio_{name}", doc, labels=["connection"])
            for c in streams:
                family.add_metric([c.name], getattr(c, attr))
            return family

        yield per_connection("frames", "WebSocket frames received", "frames")
        yield per_connection("closed_candles", "Closed candles received live", "closed_candles")
        yield per_connection("decode_errors", "Frames that could not be decoded", "decode_errors")
        yield per_connection("reconnects", "WebSocket reconnects", "reconnects")
        yield per_connection("stream_gaps", "Live streams that skipped a candle", "gaps_detected")
        yield per_connection(
            "rotations", "Planned reconnects (24-hour limit, serverShutdown)", "rotations"
        )
        yield per_connection(
            "connect_attempts", "WebSocket connection attempts", "connect_attempts"
        )
        yield per_connection(
            "connect_budget_waits", "Waits for the shared connection budget", "budget_waits"
        )
        yield per_connection("pong_timeouts", "Pings left unanswered", "pong_timeouts")
        yield per_connection("stalls", "Connections replaced for silence", "stalls")
        connected = GaugeMetricFamily(
            "klinetrio_connection_up", "1 when the connection is subscribed", labels=["connection"]
        )
        for c in streams:
            connected.add_metric([c.name], 1.0 if c.subscribed else 0.0)
        yield connected
        yield counter("rows_written", "Candles newly written to the database", writer.written)
        yield counter("rows_duplicate", "Candles the database already had", writer.duplicates)
        yield counter(
            "candles_dropped", "Candles dropped from a full writer buffer", writer.dropped
        )
        yield counter(
            "rows_rejected",
            "Candles the database rejected as data (kept in the dead-letter file)",
            writer.rejected,
        )
        yield counter("database_errors", "Failed database operations", writer.errors)
        yield counter(
            "database_outages", "Outages of the database seen by the writer", writer.outages
        )
        yield GaugeMetricFamily(
            "klinetrio_writer_buffer", "Candles received, not yet committed", value=writer.buffered
        )
        yield GaugeMetricFamily(
            "klinetrio_database_up",
            "1 when the last database operation succeeded",
            value=1.0 if writer.healthy else 0.0,
        )
        yield counter("sync_fetched", "Candles fetched from REST to fill gaps", sync.fetched)
        yield counter("sync_gaps", "Gaps found in the database", sync.gaps_found)
        yield counter("sync_errors", "Failed sync passes", sync.errors)
        yield counter(
            "sync_holes", "Ranges recorded as holes (found empty twice)", sync.holes_recorded
        )
        yield GaugeMetricFamily(
            "klinetrio_sync_holes_suspected",
            "Ranges found empty once, waiting for their second read",
            value=sync.holes_suspected,
        )
        yield counter("rest_requests", "REST requests sent", rest.requests)
        yield counter("rest_rate_limited", "HTTP 429 answers", rest.rate_limited)
        yield counter("rest_banned", "HTTP 418 answers", rest.banned)
        yield GaugeMetricFamily(
            "klinetrio_rest_weight_used",
            "Exchange-reported weight used this minute",
            value=rest.server_used_weight or 0,
        )


class Endpoints:
    """The HTTP handler of a running ``Service``."""

    def __init__(self, service: Service) -> None:
        self._service = service
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(service))
        self.write_latency = Histogram(
            "klinetrio_writer_latency_seconds",
            "From receipt of a candle to its commit",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )

    def observe_batch(self, count: int, latency_s: float) -> None:
        self.write_latency.observe(latency_s)

    def health(self) -> Health:
        service = self._service
        writer = service.writer.statistics()
        sync = service.syncer.statistics()
        now = trio.current_time()
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
                else round(now - c.last_frame_at, 3),
                last_error=c.last_error,
            )
            for c in service.streams.statistics()
        ]
        subscribed = sum(c.subscribed for c in connections)
        if not writer.healthy or (connections and subscribed == 0):
            status = (
                "unhealthy"
                if not writer.healthy and writer.buffered >= 0.9 * service.settings.writer_buffer
                else "degraded"
            )
            if connections and subscribed == 0 and not writer.healthy:
                status = "unhealthy"
        elif subscribed < len(connections) or writer.dropped:
            status = "degraded"
        else:
            status = "healthy"
        last_errors = {
            k: v
            for k, v in {"database": writer.last_error, "sync": sync.last_error}.items()
            if v is not None
        }
        store = service.upkeep.statistics()
        return Health(
            status=status,
            uptime_s=round(now - service.started_at, 3),
            ready=service.ready,
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
            tables=list(store.tables),
            tables_measured_at=store.tables_measured_at,
            backup=store.backup,
            retention=store.retention,
        )

    async def handle(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return Response.text("method not allowed\n", 405)
        route: dict[str, Callable[[], Response]] = {
            "/live": lambda: Response.text("ok\n"),
            "/ready": self._ready,
            "/health": self._health,
            "/metrics": self._metrics,
        }
        endpoint = route.get(request.path.rstrip("/") or "/")
        if endpoint is None:
            return Response.text("not found: try /health, /ready, /live or /metrics\n", 404)
        return endpoint()

    def _ready(self) -> Response:
        service = self._service
        if service.ready:
            return Response.json({"ready": True})
        reasons = []
        if not service.writer.statistics().healthy:
            reasons.append("database unreachable")
        if not service.streams.all_subscribed:
            reasons.append("not every stream is subscribed")
        if service.stopping:
            reasons.append("stopping")
        return Response.json({"ready": False, "reasons": reasons}, status=503)

    def _health(self) -> Response:
        health = self.health()
        return Response.json(health, status=200 if health.status != "unhealthy" else 503)

    def _metrics(self) -> Response:
        return Response(
            200, generate_latest(self.registry), "text/plain; version=0.0.4; charset=utf-8"
        )

    async def serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        await serve_http(self.handle, host, port, task_status=task_status)
