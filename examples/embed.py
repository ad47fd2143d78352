"""Embedding klinetrio's collector in another Trio program.

The collector (``Service.run``) runs in a nursery of ours, beside a task of our own that prints
the writer's numbers every few seconds. After ``--seconds`` (or at Ctrl-C / SIGTERM) our task
ends and ``service.stop()`` stops the collector in order: the intake closes first, the writer
commits everything it holds, and only then does ``Service.run`` return.

Settings come from ``KLINETRIO_*`` variables and ``.env``, exactly as for ``klinetrio serve``;
with no ``KLINETRIO_DATABASE_URL`` the embedded PostgreSQL in ``KLINETRIO_DATA_DIR`` is used.
Against the local simulator::

    klinetrio simulate --port 9650 --speed 60 &
    KLINETRIO_WS_URL=ws://127.0.0.1:9650 KLINETRIO_REST_URL=http://127.0.0.1:9650 \\
        python examples/embed.py --seconds 20 --every 5
"""

from __future__ import annotations

import argparse
import functools
import signal
import sys
from collections.abc import Sequence

import trio

import klinetrio
from klinetrio.core.models import format_ms
from klinetrio.errors import KlinetrioError
from klinetrio.service import Service
from klinetrio.settings import Settings


def describe(service: Service) -> str:
    """One line of the numbers ``/health`` shows, read from the components' ``statistics()``."""
    writer = service.writer.statistics()
    newest = max(writer.last_open_time.values(), default=None)
    connections = service.streams.statistics()
    return (
        f"ready={service.ready} written={writer.written:,} duplicates={writer.duplicates:,} "
        f"buffered={writer.buffered:,} dropped={writer.dropped:,} "
        f"subscribed={sum(c.subscribed for c in connections)}/{len(connections)} "
        f"newest={'-' if newest is None else format_ms(newest)}"
    )


async def print_numbers(service: Service, every: float) -> None:
    """Our own task: runs until its nursery is cancelled."""
    while True:
        await trio.sleep(every)
        print(describe(service), flush=True)


async def wait_for_stop(seconds: float) -> None:
    """Return after ``seconds`` (0: never) or at the first SIGINT/SIGTERM."""
    with (
        trio.move_on_after(seconds if seconds > 0 else float("inf")),
        trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals,
    ):
        async for signum in signals:
            print(f"received {signal.Signals(signum).name}", flush=True)
            return


async def run(settings: Settings, database_url: str, *, seconds: float, every: float) -> None:
    service = Service(settings, database_url=database_url)
    async with trio.open_nursery() as nursery:
        # Returns once the database is migrated and the streams are started.
        await nursery.start(service.run)
        print(f"collecting {len(service.keys)} stream(s); health on port {service.http_port}")
        async with trio.open_nursery() as ours:
            ours.start_soon(print_numbers, service, every)
            await wait_for_stop(seconds)
            ours.cancel_scope.cancel()
        service.stop(reason="the embedding program is done")
    # Service.run has returned: everything received is committed.
    print(f"stopped: {describe(service)}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=30.0, help="run time; 0: until Ctrl-C")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between reports")
    args = parser.parse_args(argv)
    try:
        settings = klinetrio.load_settings()
        collect = functools.partial(run, settings, seconds=args.seconds, every=args.every)
        if settings.database_url is not None:
            trio.run(collect, settings.database_url)
        else:
            # Blocking: start (or join) the embedded PostgreSQL outside the Trio loop.
            from klinetrio.store.embedded import EmbeddedPostgres

            with EmbeddedPostgres(settings.data_dir) as pg:
                trio.run(collect, pg.url)
    except KlinetrioError as exc:
        print(f"embed.py: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
