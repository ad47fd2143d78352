"""Embedding klinetrio's collector in another Trio program.

``klinetrio.open_collector`` starts the collector for the duration of a block; beside it, our
own tasks: one prints every closed candle of the streams we subscribe to, the other the
collector's numbers every few seconds. After ``--seconds`` (or at Ctrl-C / SIGTERM) the block
ends and the collector stops in order: the intake closes first, the writer commits everything
it holds, and only then does the block exit.

Settings come from ``KLINETRIO_*`` variables and ``.env``, exactly as for ``klinetrio serve``;
with no ``KLINETRIO_DATABASE_URL`` the embedded PostgreSQL in ``KLINETRIO_DATA_DIR`` is used.
Against the local simulator::

    klinetrio simulate --port 9650 --speed 60 &
    KLINETRIO_WS_URL=ws://127.0.0.1:9650 KLINETRIO_REST_URL=http://127.0.0.1:9650 \\
        python examples/embed.py --seconds 20 --every 5
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

import trio

import klinetrio


def describe(stats: klinetrio.CollectorStatistics) -> str:
    """One line of what ``/health`` shows, read from one ``statistics()`` snapshot."""
    writer = stats.writer
    subscribed = sum(c.subscribed for c in stats.connections)
    return (
        f"ready={stats.ready} written={writer.written:,} duplicates={writer.duplicates:,} "
        f"buffered={writer.buffered:,} dropped={writer.dropped:,} "
        f"subscribed={subscribed}/{len(stats.connections)}"
    )


async def print_closed(events: klinetrio.Subscription) -> None:
    """Our own consumer of live events: every closed candle, as it closes."""
    async for event in events:
        if event.closed:
            print(f"closed {event.symbol} {event.interval} {event.open_time} close={event.close}")


async def print_numbers(collector: klinetrio.Collector, every: float) -> None:
    while True:
        await trio.sleep(every)
        print(describe(collector.statistics()), flush=True)


async def wait_for_stop(seconds: float) -> None:
    """Return after ``seconds`` (0: never) or at the first SIGINT/SIGTERM."""
    with (
        trio.move_on_after(seconds if seconds > 0 else float("inf")),
        trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals,
    ):
        async for signum in signals:
            print(f"received {signal.Signals(signum).name}", flush=True)
            return


async def run(settings: klinetrio.Settings, *, seconds: float, every: float) -> None:
    async with klinetrio.open_collector(settings) as collector:
        streams = [key.stream_name for key in settings.stream_keys]
        print(f"collecting {len(streams)} stream(s); API on port {collector.http_port}")
        with collector.subscribe(streams, capacity=1_000, name="embed") as events:
            async with trio.open_nursery() as ours:
                ours.start_soon(print_closed, events)
                ours.start_soon(print_numbers, collector, every)
                await wait_for_stop(seconds)
                ours.cancel_scope.cancel()
            print(f"events dropped by our subscription: {events.statistics().dropped}")
    # The block has ended: the collector stopped, and everything received is committed.
    print(f"stopped: {describe(collector.statistics())}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=30.0, help="run time; 0: until Ctrl-C")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between reports")
    args = parser.parse_args(argv)
    try:
        settings = klinetrio.load_settings()
        trio.run(lambda: run(settings, seconds=args.seconds, every=args.every))
    except klinetrio.KlinetrioError as exc:
        print(f"embed.py: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
