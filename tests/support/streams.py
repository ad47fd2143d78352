"""Helpers of the stream tests: a StreamGroup run into a list against the simulator, and the
invariants every run must keep (see ``component/test_stream.py``)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from klinetrio.binance.stream import StreamGroup
from klinetrio.core.connect_budget import ConnectBudget
from klinetrio.core.models import Candle, StreamKey
from klinetrio.simulate import Simulator, SimulatorConfig

START = 1_704_067_230_000  # 2024-01-01T00:00:30Z, mid-way through a 1m candle
MINUTE = 60_000
KEYS = [StreamKey("BTCUSDT", "1m"), StreamKey("ETHUSDT", "1m")]


class RecordingSyncer:
    """Records what the stream asks for; filling gaps is the syncer's job, not tested here."""

    def __init__(self) -> None:
        self.requests: list[tuple[StreamKey, int | None]] = []

    def request_sync(self, key: StreamKey, start_ms: int | None) -> None:
        self.requests.append((key, start_ms))

    def starts(self, key: StreamKey) -> list[int | None]:
        return [start for k, start in self.requests if k == key]


class RecordingBudget(ConnectBudget):
    """The real budget, remembering when it granted each attempt."""

    def __init__(self, limit: int, window: float) -> None:
        super().__init__(limit, window)
        self.granted: list[float] = []

    def try_acquire(self, now: float) -> float:
        wait = super().try_acquire(now)
        if wait == 0.0:
            self.granted.append(now)
        return wait


@dataclass
class Run:
    group: StreamGroup
    syncer: RecordingSyncer
    candles: list[Candle] = field(default_factory=list)

    def open_times(self, key: StreamKey) -> list[int]:
        return [
            c.open_time
            for c in self.candles
            if (c.symbol, c.interval) == (key.symbol, key.interval)
        ]

    def live(self, shard: int = 0) -> Any:
        """The shard's counters, read afresh at every attribute access (``statistics()`` is a
        snapshot), so a test can wait on them and assert on their latest values."""
        group = self.group

        class Live:
            def __getattr__(self, name: str) -> Any:
                return getattr(group.statistics()[shard], name)

        return Live()

    async def wait_for(self, predicate: Any, poll: float = 0.01) -> None:
        # Statistics are plain counters with no event to wait on: a test polls them.
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(poll)


def sim_config(**overrides: Any) -> SimulatorConfig:
    values: dict[str, Any] = {
        "port": 0,
        "start_ms": START,
        "speed": 600.0,
        "seed": 7,
        "updates_per_second": 0.0,
    }
    values.update(overrides)
    return SimulatorConfig(**values)


@asynccontextmanager
async def serving(sim: Simulator) -> AsyncIterator[str]:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(sim.serve)
        yield f"ws://127.0.0.1:{port}"
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def streaming(
    url: str, keys: Sequence[StreamKey] = KEYS, *, started: bool = True, **options: Any
) -> AsyncIterator[Run]:
    """Run a StreamGroup into a list; on exit cancel it and check what it leaves behind."""
    syncer = RecordingSyncer()
    options.setdefault("streams_per_connection", len(keys))
    group = StreamGroup(url, keys, syncer=syncer, **options)
    run = Run(group, syncer)
    send_channel, receive_channel = trio.open_memory_channel[Sequence[Candle]](100_000)
    scope = trio.CancelScope()
    ended = trio.Event()

    async def consume() -> None:
        async with receive_channel:
            async for batch in receive_channel:
                run.candles.extend(batch)
        ended.set()

    async def run_group(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            await group.run(send_channel, task_status=task_status)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        if started:
            await nursery.start(run_group)
        else:
            nursery.start_soon(run_group)
        yield run
        scope.cancel()
    # The consumer saw the end of the channel: the group and every connection closed their ends.
    assert ended.is_set()
    for stats in group.statistics() + group.retired_statistics():
        assert stats.state == "stopped"
        assert not stats.subscribed
        assert stats.open_connections == 0
    assert not group.all_subscribed
    every = group.statistics() + group.retired_statistics()
    assert sum(s.closed_candles for s in every) == len(run.candles)


def assert_contiguous(open_times: list[int], step: int = MINUTE) -> None:
    """Every candle between the first and the last, once. Order is not checked: during a
    rotation's hand-off the old session may bring a candle after the new one brought a later
    one (the writer does not care)."""
    assert open_times, "no candle arrived"
    assert len(open_times) == len(set(open_times)), "a candle was forwarded twice"
    ordered = sorted(open_times)
    assert ordered == list(range(ordered[0], ordered[-1] + step, step))


def hole_starts(times: list[int], step: int = MINUTE) -> list[int]:
    """The first open time of every run of candles missing between the first and the last."""
    have = set(times)
    return [t for t in range(min(times), max(times), step) if t not in have and t - step in have]


def assert_sync_asked_exactly_for_the_holes(times: list[int], starts: list[int | None]) -> None:
    """Every run of missing candles was asked for from its first open time, and nothing else
    was asked for but the candle right after a (re)subscription, which may have come live."""
    asked = {s for s in starts if s is not None}
    holes = set(hole_starts(times))
    assert holes <= asked, f"never asked for {sorted(holes - asked)}"
    assert asked <= holes | set(times) | {max(times) + MINUTE}, sorted(asked - holes)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
