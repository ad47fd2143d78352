"""The read API alone, as ``klinetrio serve`` builds it (for bench/api.py):
``python bench/api_server.py DATABASE_URL PORT_FILE`` serves on 127.0.0.1:<free port>, writes
the port to PORT_FILE and runs until SIGTERM."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import trio

from klinetrio.api import build_app, serve_api
from klinetrio.store.reader import StoreReader


def no_statistics() -> Any:
    raise RuntimeError("the bench's API has no collector")


async def main(url: str, port_file: Path) -> None:
    reader = StoreReader(url)
    app = build_app(no_statistics, store=reader)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_api, app, "127.0.0.1", 0)
        await trio.Path(port_file).write_text(str(port))
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break
    await reader.aclose()


if __name__ == "__main__":
    trio.run(main, sys.argv[1], Path(sys.argv[2]))
