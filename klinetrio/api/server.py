"""Serving the ASGI app with hypercorn's Trio worker, inside the caller's nursery.

The listening socket is bound here, before hypercorn starts, so a busy port is one clear
``SettingsError`` instead of an error deep inside hypercorn's task group. Idle keep-alive
connections close after ``KEEP_ALIVE_S``, a request must arrive within ``READ_TIMEOUT_S``,
WebSocket clients are pinged, and past ``MAX_CONNECTIONS`` open connections new ones get 503 (a
WebSocket: close code 1013, try again later).

A client that stops reading (or whose host vanished) must not hold a task forever: hypercorn
writes to a socket inside an unbounded shield, so a send to a full socket cannot be cancelled.
The listening socket therefore carries ``TCP_USER_TIMEOUT`` (inherited by every accepted
connection): when what we sent stays unacknowledged, or the peer's window stays shut, for
``STALLED_CLIENT_S``, the kernel aborts the connection and the stuck send fails. That bounds
both a relay client that fell behind and a stop that waits for the API's tasks.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import trio
from hypercorn.config import Config, Sockets
from hypercorn.trio.run import worker_serve
from hypercorn.typing import ASGIFramework
from hypercorn.utils import wrap_app

from klinetrio.errors import SettingsError

KEEP_ALIVE_S = 30.0
READ_TIMEOUT_S = 30
WEBSOCKET_PING_S = 20.0
MAX_CONNECTIONS = 1_000
GRACEFUL_S = 1.0
STALLED_CLIENT_S = 10.0


class ConnectionLimit:
    """ASGI middleware: at most ``limit`` HTTP requests and WebSocket sessions at once."""

    def __init__(self, app: ASGIFramework, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.open = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if self.open >= self.limit:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1013, "reason": "too many clients"})
            else:
                await send(
                    {
                        "type": "http.response.start",
                        "status": 503,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send({"type": "http.response.body", "body": b'{"error":"too many clients"}'})
            return
        self.open += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.open -= 1


def _config(host: str, port: int) -> Config:
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.keep_alive_timeout = KEEP_ALIVE_S
    config.read_timeout = READ_TIMEOUT_S
    config.websocket_ping_interval = WEBSOCKET_PING_S
    config.graceful_timeout = GRACEFUL_S
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.include_server_header = False
    return config


def bind(
    host: str, port: int, *, stalled_client_s: float = STALLED_CLIENT_S
) -> tuple[Config, Sockets, int]:
    """The config and its bound socket; a port in use (or not ours to take) is a one-line
    ``SettingsError``."""
    config = _config(host, port)
    try:
        sockets = config.create_sockets()
    except OSError as exc:
        raise SettingsError(
            f"cannot listen on {host}:{port} (KLINETRIO_HTTP_ADDR): {exc.strerror}"
        ) from None
    for sock in sockets.insecure_sockets:
        if hasattr(socket, "TCP_USER_TIMEOUT"):  # Linux; elsewhere keepalives alone
            sock.setsockopt(
                socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, round(stalled_client_s * 1000)
            )
        sock.listen(config.backlog)
    bound = sockets.insecure_sockets[0].getsockname()[1]
    return config, sockets, int(bound)


async def serve_api(
    app: ASGIFramework,
    host: str,
    port: int,
    *,
    max_connections: int = MAX_CONNECTIONS,
    stalled_client_s: float = STALLED_CLIENT_S,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``host:port`` until cancelled; ``started`` with the bound port."""
    config, sockets, bound = bind(host, port, stalled_client_s=stalled_client_s)
    try:
        limited = ConnectionLimit(app, max_connections)
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: worker_serve(
                    wrap_app(limited, config.wsgi_max_body_size, "asgi"),
                    config,
                    sockets=sockets,
                    task_status=task_status,
                )
            )
            task_status.started(bound)
    finally:
        for sock in sockets.insecure_sockets:
            sock.close()


__all__ = ["ConnectionLimit", "bind", "serve_api"]
