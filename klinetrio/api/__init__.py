"""klinetrio's API: health, metrics and the WebSocket relay as one ASGI app on hypercorn."""

from klinetrio.api.app import build_app
from klinetrio.api.server import serve_api

__all__ = ["build_app", "serve_api"]
