"""The API as one ASGI app (Starlette), built from what it needs and nothing more.

``build_app(statistics, fanout=..., store=...)`` takes a callable returning a
``CollectorStatistics`` snapshot, for the relay the fan-out, and for the read API a read-only
``StoreReader``; it never sees the collector itself. Routes::

    /live /ready /health /metrics           health and metrics (GET, HEAD)
    /ws /ws/<stream>... /stream             the WebSocket relay (see ``relay``)
    /api/v3/klines /fapi/v1/klines ...      Binance-compatible reads (see ``query``)
    /api/candles /api/metadata /api/coverage
    /                                       the dashboard (``static/dashboard.html``)

Bad input never becomes a 500: unknown paths are 404, wrong methods 405, both as JSON.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib import resources

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute

from klinetrio.api import metrics
from klinetrio.api.health import health, not_ready_reasons
from klinetrio.api.query import query_routes
from klinetrio.api.relay import QUEUE, Observable, Relay
from klinetrio.snapshot import CollectorStatistics
from klinetrio.store.reader import StoreReader

JSON = "application/json"
_encoder = msgspec.json.Encoder()


def json_response(body: object, status: int = 200) -> Response:
    return Response(_encoder.encode(body), status, media_type=JSON)


def build_app(
    statistics: Callable[[], CollectorStatistics],
    *,
    fanout: Observable | None = None,
    market: str = "spot",
    relay_queue: int = QUEUE,
    store: StoreReader | None = None,
    now_ms: Callable[[], int] | None = None,
) -> Starlette:
    relay = None if fanout is None else Relay(fanout, market, queue=relay_queue)
    registry = metrics.metrics_registry(statistics, None if relay is None else relay.statistics)

    async def live(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def ready(request: Request) -> Response:
        stats = statistics()
        if stats.ready:
            return json_response({"ready": True})
        return json_response({"ready": False, "reasons": not_ready_reasons(stats)}, 503)

    async def health_endpoint(request: Request) -> Response:
        report = health(statistics())
        return json_response(report, 503 if report.status == "unhealthy" else 200)

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.render(registry), media_type=metrics.CONTENT_TYPE)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        hint = (
            "try /health, /ready, /live, /metrics, /api/candles, /api/metadata or /api/coverage"
            if exc.status_code == 404
            else exc.detail
        )
        return json_response({"error": hint, "status": exc.status_code}, exc.status_code)

    routes: list[Route | WebSocketRoute] = [
        Route("/live", live),
        Route("/ready", ready),
        Route("/health", health_endpoint),
        Route("/metrics", metrics_endpoint),
    ]
    if store is not None:
        routes += query_routes(store, now_ms or _local_now_ms)
        page = (resources.files("klinetrio.api") / "static" / "dashboard.html").read_bytes()

        async def dashboard(request: Request) -> Response:
            return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

        routes.append(Route("/", dashboard))
    if relay is not None:
        routes += [
            WebSocketRoute("/ws", relay.handle),
            WebSocketRoute("/ws/{streams:path}", relay.handle),
            WebSocketRoute("/stream", relay.handle),
        ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    app.state.relay = relay
    return app


def _local_now_ms() -> int:
    return time.time_ns() // 1_000_000


__all__ = ["build_app", "json_response"]
