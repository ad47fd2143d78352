"""``/metrics``: Prometheus's text format, every series under ``klinetrio_``, rendered from one
``CollectorStatistics`` snapshot (and the relay's counters).

The registry belongs to the app (never prometheus_client's global one), so two collectors in one
process, or one per test, do not collide.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from klinetrio.api.relay import RelayStatistics
from klinetrio.snapshot import CollectorStatistics

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"klinetrio_{name}", doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"klinetrio_{name}", doc, value=value)


_PER_CONNECTION = (
    ("frames", "WebSocket frames received", "frames"),
    ("closed_candles", "Closed candles received live", "closed_candles"),
    ("decode_errors", "Frames that could not be decoded", "decode_errors"),
    ("reconnects", "WebSocket reconnects", "reconnects"),
    ("stream_gaps", "Live streams that skipped a candle", "gaps_detected"),
    (
        "sync_requests_saved",
        "Skipped candles that all came late within the grace: REST requests not sent",
        "sync_requests_saved",
    ),
    (
        "late_candles",
        "Closed candles that came after a newer one, within the grace",
        "late_candles",
    ),
    ("rotations", "Planned reconnects (24-hour limit, serverShutdown)", "rotations"),
    (
        "stream_subscribes",
        "Streams SUBSCRIBEd on a running connection (new listings)",
        "subscribes",
    ),
    (
        "stream_unsubscribes",
        "Streams UNSUBSCRIBEd from a running connection (delistings)",
        "unsubscribes",
    ),
    (
        "event_frames",
        "Frames of the other kinds (aggTrade, bookTicker, ticker, depth20)",
        "event_frames",
    ),
    (
        "event_duplicates",
        "Events of the other kinds already handed on (rotations)",
        "event_duplicates",
    ),
    ("trade_gaps", "Jumps in aggregate trade ids on the stream (filled from REST)", "trade_gaps"),
    ("connect_attempts", "WebSocket connection attempts", "connect_attempts"),
    ("connect_budget_waits", "Waits for the shared connection budget", "budget_waits"),
    ("pong_timeouts", "Pings left unanswered", "pong_timeouts"),
    ("stalls", "Connections replaced for silence", "stalls"),
)


_PER_EVENT_TABLE = (
    ("event_rows_written", "Rows of the other kinds newly written", "written", "counter"),
    ("event_rows_duplicate", "Rows the table already had", "duplicates", "counter"),
    ("event_rows_dropped", "Rows dropped from a full writer buffer", "dropped", "counter"),
    ("event_rows_rejected", "Rows the database rejected as data", "rejected", "counter"),
    ("event_database_errors", "Failed writes of the other kinds", "errors", "counter"),
    ("event_writer_buffer", "Rows received, not yet committed", "buffered", "gauge"),
    ("event_database_up", "1 when the writer's last write succeeded", "healthy", "gauge"),
)


@dataclass(eq=False, slots=True)
class _Snapshots(Collector):
    statistics: Callable[[], CollectorStatistics]
    relay: Callable[[], RelayStatistics] | None

    def collect(self) -> Iterator[Metric]:
        stats = self.statistics()
        yield from self._connections(stats)
        yield from self._writer(stats)
        yield from self._sync_and_rest(stats)
        yield from self._events(stats)
        yield from self._markets(stats)
        yield from self._observers(stats)

    def _connections(self, stats: CollectorStatistics) -> Iterator[Metric]:
        for name, doc, attr in _PER_CONNECTION:
            family = CounterMetricFamily(f"klinetrio_{name}", doc, labels=["connection"])
            for c in stats.connections:
                family.add_metric([c.name], getattr(c, attr))
            yield family
        up = GaugeMetricFamily(
            "klinetrio_connection_up", "1 when the connection is subscribed", labels=["connection"]
        )
        for c in stats.connections:
            up.add_metric([c.name], 1.0 if c.subscribed else 0.0)
        yield up

    def _writer(self, stats: CollectorStatistics) -> Iterator[Metric]:
        w = stats.writer
        yield _counter("rows_written", "Candles newly written to the database", w.written)
        yield _counter("rows_duplicate", "Candles the database already had", w.duplicates)
        yield _counter("candles_dropped", "Candles dropped from a full writer buffer", w.dropped)
        yield _counter(
            "rows_rejected",
            "Candles the database rejected as data (kept in the dead-letter file)",
            w.rejected,
        )
        yield _counter("database_errors", "Failed database operations", w.errors)
        yield _counter("database_outages", "Outages of the database seen by the writer", w.outages)
        yield _gauge("writer_buffer", "Candles received, not yet committed", w.buffered)
        yield _gauge(
            "database_up", "1 when the last database operation succeeded", 1.0 if w.healthy else 0.0
        )
        latency = HistogramMetricFamily(
            "klinetrio_writer_latency_seconds", "From receipt of a candle to its commit"
        )
        latency.add_metric(
            [],
            [("+Inf" if b == float("inf") else repr(b), n) for b, n in w.latency.cumulative()],
            w.latency.total,
        )
        yield latency

    def _events(self, stats: CollectorStatistics) -> Iterator[Metric]:
        """The writers of the other kinds, by table, and the trade syncer."""
        if not stats.events:
            return
        for name, doc, attr, kind in _PER_EVENT_TABLE:
            family = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(
                f"klinetrio_{name}", doc, labels=["table"]
            )
            for w in stats.events:
                family.add_metric([w.table], float(getattr(w, attr)))
            yield family
        t = stats.trade_sync
        if t is not None:
            yield _counter("trade_sync_requests", "Ranges of agg ids asked for again", t.requests)
            yield _counter("trades_filled", "Aggregate trades fetched to fill gaps", t.filled)
            yield _counter(
                "trades_from_archives", "Of them, from daily aggTrades files", t.from_archives
            )
            yield _counter("trade_sync_errors", "Failed trade pages (retried)", t.errors)
            yield _gauge("trade_sync_pending", "Ranges of agg ids waiting to be filled", t.pending)

    def _sync_and_rest(self, stats: CollectorStatistics) -> Iterator[Metric]:
        s = stats.sync
        yield _counter("sync_fetched", "Candles fetched from REST to fill gaps", s.fetched)
        yield _counter("sync_gaps", "Gaps found in the database", s.gaps_found)
        yield _counter("sync_errors", "Failed sync passes", s.errors)
        yield _gauge("sync_pending", "Series waiting for a sync pass, or in one", s.pending)
        yield _counter(
            "sync_holes", "Ranges recorded as holes (found empty twice)", s.holes_recorded
        )
        yield _gauge(
            "sync_holes_suspected",
            "Ranges found empty once, waiting for their second read",
            s.holes_suspected,
        )
        r = stats.rest
        yield _counter("rest_requests", "REST requests sent", r.requests)
        yield _counter("rest_kline_requests", "REST klines requests sent", r.kline_requests)
        yield _counter("rest_rate_limited", "HTTP 429 answers", r.rate_limited)
        yield _counter("rest_banned", "HTTP 418 answers", r.banned)
        yield _gauge(
            "rest_weight_used", "Exchange-reported weight used this minute", r.server_used_weight
        )

    def _markets(self, stats: CollectorStatistics) -> Iterator[Metric]:
        """Per market: its REST client and its symbols; the universe; futures statistics."""
        requests = CounterMetricFamily(
            "klinetrio_market_rest_requests", "REST requests sent, per market", labels=["market"]
        )
        weight = GaugeMetricFamily(
            "klinetrio_market_rest_weight_used",
            "Exchange-reported weight used this minute, per market",
            labels=["market"],
        )
        limited = CounterMetricFamily(
            "klinetrio_market_rest_rate_limited", "HTTP 429 and 418 answers", labels=["market"]
        )
        for market, r in stats.rest_by_market.items():
            requests.add_metric([market], r.requests)
            weight.add_metric([market], r.server_used_weight)
            limited.add_metric([market], r.rate_limited + r.banned)
        yield from (requests, weight, limited)
        u = stats.universe
        collected = GaugeMetricFamily(
            "klinetrio_symbols_collected", "Symbols collected now, per market", labels=["market"]
        )
        for market, count in u.collected.items():
            collected.add_metric([market], count)
        yield collected
        yield _counter("symbol_refreshes", "Readings of the markets' listings", u.refreshes)
        yield _counter("symbol_refresh_failures", "Listings that could not be read", u.failures)
        yield _counter("symbols_listed", "Symbols added by a refresh (new listings)", u.listed)
        yield _counter(
            "symbols_delisted", "Symbols removed by a refresh (stopped trading)", u.delisted
        )
        f = stats.futures_stats
        if f is not None:
            yield _gauge("futures_stats_series", "Futures statistics series polled", f.series)
            yield _counter("futures_stats_requests", "/futures/data requests sent", f.requests)
            yield _counter(
                "futures_stats_written", "Futures statistics rows new to the store", f.written
            )
            yield _counter(
                "futures_stats_failures", "Failed futures statistics requests", f.failures
            )
            yield _gauge(
                "futures_stats_pending",
                "Ranges of futures statistics still to fetch",
                f.pending_ranges,
            )

    def _observers(self, stats: CollectorStatistics) -> Iterator[Metric]:
        fan = stats.fanout
        delivered = CounterMetricFamily(
            "klinetrio_observer_delivered", "Events handed to an observer", labels=["observer"]
        )
        dropped = CounterMetricFamily(
            "klinetrio_observer_dropped",
            "Events an observer was too far behind to take",
            labels=["observer"],
        )
        for name in sorted(fan.delivered_by_name):
            delivered.add_metric([name], fan.delivered_by_name[name])
            dropped.add_metric([name], fan.dropped_by_name.get(name, 0))
        yield delivered
        yield dropped
        yield _gauge("observers", "Observers of live events now", len(fan.observers))
        if stats.redis is not None:
            redis = stats.redis
            yield _counter("redis_published", "Events published to Redis", redis.published)
            yield _counter("redis_dropped", "Events dropped while Redis was away", redis.dropped)
            yield _counter(
                "redis_undecodable",
                "Kline frames in progress not published: they did not decode in full",
                redis.undecodable,
            )
            yield _counter("redis_outages", "Times Redis became unavailable", redis.outages)
            yield _gauge("redis_up", "1 while connected to Redis", 1.0 if redis.connected else 0.0)
        if self.relay is not None:
            relay = self.relay()
            yield _gauge("relay_clients", "Relay clients connected now", relay.clients)
            yield _counter("relay_connections", "Relay clients accepted", relay.accepted)
            yield _counter("relay_frames", "Frames sent to relay clients", relay.frames_sent)
            yield _counter(
                "relay_too_slow", "Relay clients closed for falling behind", relay.closed_too_slow
            )
            yield _counter(
                "relay_too_many_messages",
                "Relay clients closed for sending more than 5 messages a second",
                relay.closed_too_many_messages,
            )


def metrics_registry(
    statistics: Callable[[], CollectorStatistics],
    relay: Callable[[], RelayStatistics] | None = None,
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshots(statistics, relay))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


__all__ = ["CONTENT_TYPE", "metrics_registry", "render"]
