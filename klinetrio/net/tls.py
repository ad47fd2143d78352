"""The TLS context every client connection shares (REST and WebSocket).

Building one loads the system's CA certificates from disk (tens of milliseconds of blocking
file I/O), so it is built once per process component tree, in a worker thread, by the
composition root, and handed to whoever opens connections.
"""

from __future__ import annotations

import ssl

import trio


async def client_context() -> ssl.SSLContext:
    """A verifying client context with the system's CA store, built off the Trio loop."""
    return await trio.to_thread.run_sync(ssl.create_default_context)


__all__ = ["client_context"]
