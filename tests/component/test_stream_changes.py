"""Streams added to and removed from a running StreamGroup, against the simulator on 127.0.0.1.

A listing must reach a connection with room by SUBSCRIBE on the live session (or a new
connection when none has room), a delisting must UNSUBSCRIBE, and neither may disturb any
other stream: no reconnect, no gap, no duplicate.
"""

from __future__ import annotations

import trio
import trio.testing
from support.streams import (
    KEYS,
    MINUTE,
    assert_contiguous,
    assert_sync_asked_exactly_for_the_holes,
    serving,
    sim_config,
    streaming,
)

from klinetrio.core.models import StreamKey
from klinetrio.simulate import Simulator

SOL = StreamKey("SOLUSDT", "1m")
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


async def test_a_stream_added_to_a_live_connection_flows_without_disturbing_the_others(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(20):
        sim = Simulator(sim_config(symbols=SYMBOLS))
        async with serving(sim) as url, streaming(url, streams_per_connection=3) as run:
            await run.wait_for(lambda: len(run.open_times(KEYS[0])) >= 3)
            before = len(run.syncer.requests)
            assert run.group.add([SOL, KEYS[0]]) == [SOL]  # a stream already collected is no news
            await run.wait_for(lambda: len(run.open_times(SOL)) >= 5)
            stats = run.group.statistics()
            await run.wait_for(lambda: len(run.open_times(KEYS[0])) >= len(run.open_times(SOL)) + 3)
        assert len(stats) == 1, "there was room on the running connection"
        assert (stats[0].connects, stats[0].reconnects, stats[0].subscribes) == (1, 0, 1)
        assert stats[0].streams == 3
        # Once confirmed, the new stream is synced from REST (from its newest stored candle or
        # the look-back), so REST and the stream overlap; the others are not asked again.
        assert run.syncer.requests[before:] == [(SOL, None)]
        for key in (*KEYS, SOL):
            assert_contiguous(run.open_times(key))


async def test_streams_beyond_the_room_of_every_connection_get_a_new_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(20):
        sim = Simulator(sim_config(symbols=SYMBOLS))
        async with serving(sim) as url, streaming(url, streams_per_connection=2) as run:
            await run.wait_for(lambda: len(run.open_times(KEYS[1])) >= 2)
            run.group.add([SOL])
            await run.wait_for(lambda: len(run.open_times(SOL)) >= 3)
            names = [s.name for s in run.group.statistics()]
            first = run.group.statistics()[0]
        assert names == ["ws-1", "ws-2"]
        assert (first.connects, first.reconnects, first.subscribes) == (1, 0, 0)
        assert_contiguous(run.open_times(SOL))


async def test_a_removed_stream_is_unsubscribed_and_falls_silent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    eth = KEYS[1]
    with trio.fail_after(20):
        sim = Simulator(sim_config(symbols=SYMBOLS))
        async with serving(sim) as url, streaming(url, streams_per_connection=2) as run:
            await run.wait_for(lambda: len(run.open_times(eth)) >= 3)
            assert run.group.remove([eth, SOL]) == [eth]
            await run.wait_for(lambda: sim.statistics().streams_subscribed == 1)
            last_eth = max(run.open_times(eth))
            btc_then = max(run.open_times(KEYS[0]))
            await run.wait_for(lambda: max(run.open_times(KEYS[0])) >= btc_then + 5 * MINUTE)
            stats = run.group.statistics()
        # Nothing of ETHUSDT after the unsubscription was answered; BTCUSDT never noticed.
        assert max(run.open_times(eth)) == last_eth
        assert (stats[0].connects, stats[0].reconnects, stats[0].unsubscribes) == (1, 0, 1)
        assert stats[0].streams == 1
        assert run.group.keys == [KEYS[0]]
        assert_contiguous(run.open_times(KEYS[0]))


async def test_a_connection_left_with_no_stream_is_closed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(20):
        sim = Simulator(sim_config(symbols=SYMBOLS))
        async with serving(sim) as url, streaming(url, streams_per_connection=1) as run:
            await run.wait_for(lambda: len(run.open_times(KEYS[1])) >= 2)
            run.group.remove([KEYS[1]])
            await run.wait_for(lambda: sim.statistics().connections_open == 1)
            names = [s.name for s in run.group.statistics()]
        assert names == ["ws-1"]


async def test_changes_during_a_rotation_reach_both_sessions(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A listing that arrives while a shard rotates is subscribed by the new session too:
    whichever session survives serves it."""
    with trio.fail_after(30):
        sim = Simulator(sim_config(symbols=SYMBOLS, close_after=1.0, shutdown_grace=0.5))
        async with serving(sim) as url, streaming(url, streams_per_connection=3) as run:
            await run.wait_for(lambda: run.live().rotations >= 1)
            run.group.add([SOL])
            await run.wait_for(lambda: run.live().rotations >= 3)
            await run.wait_for(lambda: len(run.open_times(SOL)) >= 20)
            stats = run.live()
            assert stats.reconnects == 0
        # The simulator closes right after its notice, so the moments between sessions are
        # left to sync (see test_stream); the new stream is no different from the others.
        for key in (*KEYS, SOL):
            times = run.open_times(key)
            assert len(times) == len(set(times))
            assert_sync_asked_exactly_for_the_holes(times, run.syncer.starts(key))
