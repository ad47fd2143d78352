"""StreamGroup against the in-process simulator (and one small fake server) on 127.0.0.1.

The simulator runs at ``speed=600``: a 1m candle closes every 0.1 s of real time, so a test
sees tens of candles per stream in a second or two. Candles reach a list through a real memory
channel; sync requests reach a recording fake. After every run the group is cancelled and the
invariants are checked: the channel's receive side sees the end (every send clone was closed),
every connection is stopped, unsubscribed and holds no open socket.

Tests that only need refused connections (the attempt budget, the backoff schedule) run on
Trio's autojump clock: a connect to a closed port on 127.0.0.1 fails at once, so no real I/O has
to complete while virtual time jumps.
"""

from __future__ import annotations

import itertools
import math
import random

import msgspec
import pytest
import trio
import trio.testing
from support.streams import (
    KEYS,
    MINUTE,
    START,
    RecordingBudget,
    assert_contiguous,
    assert_sync_asked_exactly_for_the_holes,
    free_port,
    hole_starts,
    serving,
    sim_config,
    streaming,
)

from klinetrio.core.models import StreamKey
from klinetrio.simulate import Simulator
from klinetrio.simulate.web import Request, Response, WebSocket, WebSocketClosed, serve_http

# --- the hot path ------------------------------------------------------------------------------


async def test_forwards_closed_candles_once_and_exactly_as_the_exchange_serves_them(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(10):
        sim = Simulator(sim_config(updates_per_second=40.0))
        async with serving(sim) as url, streaming(url) as run:
            await trio.sleep(1.2)
        for key in KEYS:
            times = run.open_times(key)
            assert len(times) >= 8
            assert_contiguous(times)
        for candle in run.candles:
            bar = sim.market.bar(candle.symbol, candle.interval, candle.open_time)
            assert bar is not None
            assert (candle.close, candle.volume, candle.trades) == (
                bar.close,
                bar.volume,
                bar.trades,
            )
            assert candle.source == "ws"
        stats = run.live()
        # In-progress updates were read (and dropped): many more frames than closed candles.
        assert stats.frames > 2 * stats.closed_candles
        assert stats.decode_errors == stats.reconnects == stats.rotations == 0
        # One sync request per stream at the first subscription ("from the newest stored").
        assert sorted(run.syncer.requests) == sorted((key, None) for key in KEYS)


async def test_duplicate_closed_frames_are_forwarded_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(10):
        sim = Simulator(sim_config(duplicates=0.5))
        async with serving(sim) as url, streaming(url) as run:
            await trio.sleep(1.0)
        assert sim.statistics().duplicate_frames >= 3
        for key in KEYS:
            assert_contiguous(run.open_times(key))
        assert run.group.statistics()[0].decode_errors == 0


# --- bad frames --------------------------------------------------------------------------------


async def test_garbage_frames_are_counted_skipped_and_their_candles_synced(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(10):
        sim = Simulator(sim_config(garbage=0.2, updates_per_second=20.0))
        async with serving(sim) as url, streaming(url) as run:
            await trio.sleep(1.5)
        stats = run.live()
        garbage = sim.statistics().garbage_frames
        # A frame garbled while SUBSCRIBE was still unanswered is dropped uncounted.
        assert 5 <= stats.decode_errors <= garbage
        assert stats.decode_errors >= garbage - 3
        assert stats.reconnects == 0
        for key in KEYS:
            times = run.open_times(key)
            assert len(times) == len(set(times))
            # Every closed candle whose frame was garbled is a hole that sync is asked to fill,
            # from exactly its first missing candle; nothing else is asked for.
            starts = [s for s in run.syncer.starts(key) if s is not None]
            assert sorted(set(starts)) == hole_starts(times)
        assert stats.gaps_detected >= 1


async def test_a_run_of_malformed_frames_forces_a_reconnect(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(10):
        sim = Simulator(sim_config(garbage=1.0, updates_per_second=200.0))
        async with (
            serving(sim) as url,
            streaming(url, backoff_initial=0.1, backoff_maximum=0.2) as run,
        ):
            stats = run.live()
            await run.wait_for(lambda: stats.reconnects >= 1 and stats.subscribed)
        assert stats.last_error is not None
        assert "malformed frames in a row" in stats.last_error
        assert stats.decode_errors >= 50
        assert run.candles == []


# --- reconnects --------------------------------------------------------------------------------


async def test_reconnects_after_a_drop_and_asks_sync_for_every_stream_of_the_shard(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(15):
        # Closed frames only: 2 per 0.1 s, so the simulator drops each connection after ~1 s.
        sim = Simulator(sim_config(drop_after=20))
        async with serving(sim) as url, streaming(url) as run:
            stats = run.live()
            await run.wait_for(lambda: stats.state == "backoff", poll=0.002)
            dropped_at = trio.current_time()
            await run.wait_for(lambda: stats.connects >= 2)
            back_after = trio.current_time() - dropped_at
            await trio.sleep(0.3)
        assert sim.statistics().dropped_connections >= 1
        # The first backoff delay is 1 s with equal jitter: [0.5, 1] s, plus the handshake.
        assert 0.45 <= back_after <= 1.5
        assert stats.last_error is not None
        assert stats.last_error.startswith("closed by server")
        for key in KEYS:
            times = run.open_times(key)
            assert len(times) == len(set(times))
            holes = hole_starts(times)
            assert holes, "the backoff should have left a hole"
            # After each reconnect: one request per stream, from the candle after the last one
            # forwarded, which is the first missing one.
            starts = run.syncer.starts(key)
            assert_sync_asked_exactly_for_the_holes(times, starts)
            assert holes[0] in starts


async def test_a_stalled_connection_is_replaced(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(10):
        # Binance accepts a stream it does not serve and then sends nothing: a silent socket.
        sim = Simulator(sim_config())
        silent = [StreamKey("NOSUCHCOIN", "1m")]
        async with (
            serving(sim) as url,
            streaming(url, silent, stall_timeout=0.3, backoff_initial=0.1) as run,
        ):
            stats = run.live()
            await run.wait_for(lambda: stats.stalls >= 2)
        assert stats.last_error is not None
        assert "stalled" in stats.last_error
        # Each stalled session was replaced by a new one (the last one while backing off).
        assert stats.reconnects >= 1
        assert stats.connects >= 2


async def test_a_server_that_stops_answering_pings_is_replaced_in_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ping_interval, pong_timeout = 0.3, 0.2
    with trio.fail_after(10):
        sim = Simulator(sim_config(no_pong=True))
        async with (
            serving(sim) as url,
            streaming(url, ping_interval=ping_interval, pong_timeout=pong_timeout) as run,
        ):
            subscribed_at = trio.current_time()
            stats = run.live()
            await run.wait_for(lambda: stats.pong_timeouts >= 1, poll=0.005)
            detected_after = trio.current_time() - subscribed_at
            await run.wait_for(lambda: stats.connects >= 2)
        assert ping_interval + pong_timeout - 0.05 <= detected_after
        assert detected_after <= ping_interval + pong_timeout + 0.1
        assert stats.last_error is not None
        assert "no pong" in stats.last_error
        # Frames kept flowing all along: only our ping exposed the dead peer.
        assert stats.stalls == 0


# --- rotation ----------------------------------------------------------------------------------


async def test_rotates_before_max_age_without_missing_or_repeating_a_candle(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(10):
        sim = Simulator(sim_config(updates_per_second=10.0))
        async with (
            serving(sim) as url,
            streaming(url, streams_per_connection=1, max_connection_age=0.45) as run,
        ):
            await trio.sleep(2.0)
        shards = run.group.statistics()
        assert len(shards) == 2
        for stats in shards:
            assert stats.rotations >= 3
            assert stats.reconnects == 0
        assert sim.statistics().connections_total == 2 + sum(s.rotations for s in shards)
        for key in KEYS:
            assert_contiguous(run.open_times(key))
        # Each new session was up before the old one closed: no sync beyond the first.
        assert sorted(run.syncer.requests) == sorted((key, None) for key in KEYS)


class LaggingServer:
    """Every connection sends the same global sequence of closed 1m candles, one per ``tick``;
    the first connection sends each ``lag`` seconds late (a loaded machine, a slow route).

    When the client rotates, its new session is therefore ahead of the old one: its first
    candle jumps over the ones the old session still has in flight. Those are holes for the old
    session to fill during the hand-off, not gaps for REST, and the old session's candles for
    them are no duplicates.
    """

    def __init__(self, lag: float, tick: float = 0.1) -> None:
        self.lag = lag
        self.tick = tick
        self.origin = 0.0
        self.connections = 0

    async def handle(self, request: Request, ws: WebSocket) -> None:
        await ws.accept()
        self.connections += 1
        lag = self.lag if self.connections == 1 else 0.0
        try:
            message = await ws.receive()
            assert message is not None
            subscribe = msgspec.json.decode(message)
            # The reply and the first candle leave together, as they often do on a busy
            # connection: the new session reads that candle the moment it is subscribed.
            streams: list[str] = subscribe["params"]
            index = math.ceil((trio.current_time() - lag - self.origin) / self.tick)
            await ws.send_many(
                [msgspec.json.encode({"result": None, "id": subscribe["id"]})]
                + [AnnouncingServer.kline_frame(stream, index) for stream in streams]
            )
            while True:
                index += 1
                await trio.sleep_until(self.origin + index * self.tick + lag)
                await ws.send_many([AnnouncingServer.kline_frame(st, index) for st in streams])
        except WebSocketClosed:
            pass

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        async def no_http(request: Request) -> Response:
            return Response.text("404\n", 404)

        self.origin = trio.current_time()
        await serve_http(
            no_http, "127.0.0.1", 0, websocket_handler=self.handle, task_status=task_status
        )


@pytest.mark.parametrize("seed", range(16))
async def test_rotation_hands_off_the_old_sessions_backlog(
    autojump_clock: trio.testing.MockClock, seed: int
) -> None:
    """The old session is 0.3 s (3 candles) behind when the new one subscribes. It must read
    its backlog before it is closed: no gap, no REST sync, no candle dropped as a duplicate.
    (Seeds vary the wake-up order of the tasks: Trio's scheduler shuffles it.)"""
    random.seed(seed)
    keys = [StreamKey(f"C{i}USDT", "1m") for i in range(20)]
    with trio.fail_after(30):
        server = LaggingServer(lag=0.3)
        async with trio.open_nursery() as nursery:
            port = await nursery.start(server.serve)
            async with streaming(f"ws://127.0.0.1:{port}", keys, max_connection_age=1.05) as run:
                stats = run.live()
                await run.wait_for(lambda: stats.rotations >= 1 and stats.state == "live")
                await trio.sleep(0.5)
            nursery.cancel_scope.cancel()
    assert stats.gaps_detected == 0
    assert stats.reconnects == 0
    # One request per stream, at the first subscription (from the newest stored candle, or
    # from the next one when its first frame came with the answer to SUBSCRIBE); none later.
    assert sorted(k for k, _ in run.syncer.requests) == sorted(keys)
    for key in keys:
        times = run.open_times(key)
        assert_contiguous(times)
        (start,) = run.syncer.starts(key)
        assert start is None or start == min(times) + MINUTE


async def test_server_shutdown_then_close_rotates_at_once_and_syncs_the_moment_between(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The simulator closes right after its ``serverShutdown``: no overlap is possible, so the
    rotation (no backoff, not a failure) is followed by a sync request."""
    with trio.fail_after(10):
        sim = Simulator(sim_config(close_after=0.5))
        async with serving(sim) as url, streaming(url) as run:
            stats = run.live()
            await run.wait_for(lambda: stats.rotations >= 2 and stats.connects >= 3)
        assert sim.statistics().shutdown_closes >= 2
        assert stats.reconnects == 0
        for key in KEYS:
            times = run.open_times(key)
            assert len(times) == len(set(times))
            starts = run.syncer.starts(key)
            assert len([s for s in starts if s is not None]) >= 2
            assert_sync_asked_exactly_for_the_holes(times, starts)


class AnnouncingServer:
    """What Binance does and the simulator does not: ``serverShutdown`` some time *before*
    closing. Every connection sends the same global sequence of closed 1m candles, one per
    ``tick`` seconds, so two overlapping connections deliver duplicates."""

    def __init__(self, announce_after: float, grace: float, tick: float = 0.02) -> None:
        self.announce_after = announce_after
        self.grace = grace
        self.tick = tick
        self.origin = 0.0
        self.open = 0
        self.max_open = 0
        self.connections = 0

    def kline(self, stream: str, index: int) -> bytes:
        return self.kline_frame(stream, index)

    @staticmethod
    def kline_frame(stream: str, index: int) -> bytes:
        """The closed 1m candle number ``index`` (from START) of ``stream``."""
        symbol = stream.partition("@")[0].upper()
        t = START - START % MINUTE + index * MINUTE
        k = {"t": t, "T": t + MINUTE - 1, "s": symbol, "i": "1m", "o": "1.0", "c": "2.0",
             "h": "3.0", "l": "0.5", "v": "10", "n": 1, "x": True, "q": "20", "V": "5",
             "Q": "10"}  # fmt: skip
        event = {"e": "kline", "E": t + MINUTE, "s": symbol, "k": k}
        return msgspec.json.encode({"stream": stream, "data": event})

    async def handle(self, request: Request, ws: WebSocket) -> None:
        await ws.accept()
        self.connections += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        accepted = trio.current_time()
        try:
            message = await ws.receive()
            assert message is not None
            subscribe = msgspec.json.decode(message)
            await ws.send_text(msgspec.json.encode({"result": None, "id": subscribe["id"]}))
            streams: list[str] = subscribe["params"]
            index = int((trio.current_time() - self.origin) / self.tick)
            announced = False
            while True:
                index += 1
                await trio.sleep_until(self.origin + index * self.tick)
                now = trio.current_time()
                await ws.send_many([self.kline(stream, index - 1) for stream in streams])
                if not announced and now >= accepted + self.announce_after:
                    announced = True
                    shutdown = {"e": "serverShutdown", "E": START + index * MINUTE}
                    await ws.send_text(
                        msgspec.json.encode({"stream": "serverShutdown", "data": shutdown})
                    )
                if now >= accepted + self.announce_after + self.grace:
                    await ws.close(1000, "server shutdown")
                    return
        except WebSocketClosed:
            pass
        finally:
            self.open -= 1

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        async def no_http(request: Request) -> Response:
            return Response.text("404\n", 404)

        self.origin = trio.current_time()
        await serve_http(
            no_http, "127.0.0.1", 0, websocket_handler=self.handle, task_status=task_status
        )


async def test_server_shutdown_is_make_before_break(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(10):
        server = AnnouncingServer(announce_after=0.4, grace=0.3)
        async with trio.open_nursery() as nursery:
            port = await nursery.start(server.serve)
            async with streaming(f"ws://127.0.0.1:{port}") as run:
                stats = run.live()
                await run.wait_for(lambda: stats.rotations >= 3)
                await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
        # The new connection was open while the old one still was, and closing it was ours.
        assert server.max_open == 2
        assert stats.reconnects == 0
        for key in KEYS:
            assert_contiguous(run.open_times(key))
        assert sorted(run.syncer.requests) == sorted((key, None) for key in KEYS)


# --- attempts: backoff and the shared budget (autojump clock) ----------------------------------


async def test_refused_connections_back_off_exponentially(
    autojump_clock: trio.testing.MockClock,
) -> None:
    budget = RecordingBudget(limit=1000, window=300.0)
    url = f"ws://127.0.0.1:{free_port()}"
    with trio.fail_after(200):
        async with streaming(
            url, KEYS[:1], started=False, connect_budget=budget, backoff_maximum=8.0
        ) as run:
            await trio.sleep(40)
            stats = run.live()
            assert not stats.subscribed
            assert stats.state == "backoff"
    gaps = [b - a for a, b in itertools.pairwise(budget.granted)]
    caps = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]
    assert len(gaps) >= 6
    for gap, cap in zip(gaps, caps, strict=False):
        assert cap / 2 <= gap <= cap + 0.01
    assert stats.connect_attempts == len(budget.granted)
    assert stats.reconnects == stats.connect_attempts - 1
    assert stats.last_error is not None
    assert "cannot reach" in stats.last_error or "handshake" in stats.last_error


async def test_all_connections_share_one_attempt_budget(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limit, window, duration = 3, 10.0, 60.0
    budget = RecordingBudget(limit=limit, window=window)
    url = f"ws://127.0.0.1:{free_port()}"
    with trio.fail_after(200):
        async with streaming(
            url,
            KEYS,
            started=False,
            streams_per_connection=1,
            connect_budget=budget,
            backoff_initial=0.2,
            backoff_maximum=0.5,
        ) as run:
            await trio.sleep(duration)
    shards = run.group.statistics()
    assert len(shards) == 2
    granted = budget.granted
    for i, start in enumerate(granted):
        assert len([t for t in granted[i:] if t < start + window]) <= limit
    # The budget, not the backoff (which alone would allow ~4 attempts a second), set the pace:
    assert limit * duration / window - limit <= len(granted) <= limit * (duration / window + 1)
    assert sum(s.connect_attempts for s in shards) == len(granted)
    assert all(s.budget_waits >= 1 and s.connect_attempts >= 2 for s in shards)


# --- grace before a skipped candle becomes a sync request --------------------------------------


class ScriptedServer:
    """Closed 1m candles in a scripted order of indices (from START), one every ``tick``
    seconds, with the event time of each candle's own close: a late candle comes after a
    newer one, a missing one never comes. After the script, the server goes quiet."""

    def __init__(self, script: list[int], tick: float = 0.02) -> None:
        self.script = script
        self.tick = tick
        self.done = trio.Event()

    async def handle(self, request: Request, ws: WebSocket) -> None:
        await ws.accept()
        try:
            message = await ws.receive()
            assert message is not None
            subscribe = msgspec.json.decode(message)
            await ws.send_text(msgspec.json.encode({"result": None, "id": subscribe["id"]}))
            streams: list[str] = subscribe["params"]
            for index in self.script:
                await trio.sleep(self.tick)
                await ws.send_many([AnnouncingServer.kline_frame(s, index) for s in streams])
            self.done.set()
            await trio.sleep_forever()
        except WebSocketClosed:
            pass

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        async def no_http(request: Request) -> Response:
            return Response.text("404\n", 404)

        await serve_http(
            no_http, "127.0.0.1", 0, websocket_handler=self.handle, task_status=task_status
        )


async def test_a_late_closed_frame_within_the_grace_cancels_the_sync_request_a_real_gap_does_not(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Candle 3 comes right after 4 (within the grace: no REST); candle 7 never comes (a gap,
    # asked from REST once a frame shows the grace has passed); candle 11 comes after 13, two
    # minutes of exchange time too late: by then it was asked from REST, and the frame is not
    # sent on twice.
    script = [0, 1, 2, 4, 3, 5, 6, 8, 9, 10, 12, 13, 11, 14, 15]
    t0 = START - START % MINUTE
    with trio.fail_after(10):
        server = ScriptedServer(script)
        async with trio.open_nursery() as nursery:
            port = await nursery.start(server.serve)
            async with streaming(f"ws://127.0.0.1:{port}") as run:
                await server.done.wait()
                await trio.sleep(0.1)
                stats = run.live()  # one shard: both streams' counts
                assert stats.sync_requests_saved == len(KEYS)
                assert stats.late_candles == len(KEYS)
                assert stats.gaps_detected == 2 * len(KEYS)
            nursery.cancel_scope.cancel()
        for key in KEYS:
            times = run.open_times(key)
            assert sorted(times) == [t0 + i * MINUTE for i in sorted(set(script) - {11})]
            assert len(times) == len(set(times))
            # The start-up request, then exactly the two real gaps: nothing for candle 3.
            assert run.syncer.starts(key) == [None, t0 + 7 * MINUTE, t0 + 11 * MINUTE]


async def test_a_skip_still_in_its_grace_goes_to_sync_when_the_connection_stops(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = [0, 1, 3]  # candle 2 missing, and nothing after 3 shows the grace has passed
    t0 = START - START % MINUTE
    with trio.fail_after(10):
        server = ScriptedServer(script)
        async with trio.open_nursery() as nursery:
            port = await nursery.start(server.serve)
            async with streaming(f"ws://127.0.0.1:{port}") as run:
                await server.done.wait()
                await trio.sleep(0.1)
                for key in KEYS:
                    assert run.syncer.starts(key) == [None]
            nursery.cancel_scope.cancel()
        for key in KEYS:
            assert run.syncer.starts(key) == [None, t0 + 2 * MINUTE]
        assert run.group.statistics()[0].gaps_detected == len(KEYS)
