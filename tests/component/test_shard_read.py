"""``Shard.read`` a socket read at a time, through a fake transport: the read's closed candles go
to the writer as one batch, in order, each claimed once; candles claimed but not sent when the
session ends (cancelled while the channel is full, or failed on a run of malformed frames) are
asked from REST, from the earliest of each series."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
import trio

from klinetrio.binance import wire
from klinetrio.binance.shard import BAD_FRAMES_BEFORE_RECONNECT, Shard
from klinetrio.binance.shard_types import ConnectionStatistics, Session
from klinetrio.core.models import Candle, StreamKey
from klinetrio.errors import StreamError
from klinetrio.fanout import Observed, Observer
from tests.support.streams import RecordingSyncer

SECOND = StreamKey("BTCUSDT", "1s")
MINUTE = StreamKey("ETHUSDT", "1m")
T0 = 1_700_000_000_000


def frame(key: StreamKey, open_time: int, closed: bool, event_time: int | None = None) -> bytes:
    span = 1_000 if key.interval == "1s" else 60_000
    event_time = open_time + span if event_time is None else event_time
    return (
        f'{{"stream":"{key.stream_name}","data":{{"e":"kline","E":{event_time},'
        f'"s":"{key.symbol}","k":{{"t":{open_time},"T":{open_time + span - 1},'
        f'"s":"{key.symbol}","i":"{key.interval}","f":1,"L":2,"o":"1.5","c":"1.6",'
        f'"h":"1.7","l":"1.4","v":"10","n":2,"x":{str(closed).lower()},"q":"15",'
        f'"V":"5","Q":"7.5","B":"0"}}}}}}'
    ).encode()


class Reads:
    """A transport that hands out the given reads, then waits forever."""

    def __init__(self, reads: list[list[bytes]]) -> None:
        self._reads = list(reads)
        self.done = trio.Event()

    async def send_message(self, message: str) -> None:
        pass

    async def get_message(self) -> str | bytes:
        raise NotImplementedError

    async def get_messages(self) -> Sequence[str | bytes]:
        if self._reads:
            return self._reads.pop(0)
        self.done.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def ping(self, payload: bytes | None = None) -> None:
        pass


def shard(syncer: RecordingSyncer) -> Shard:
    return Shard([SECOND, MINUTE], ConnectionStatistics("ws-1", 2), syncer=syncer, watching={})


async def test_the_closed_candles_of_a_read_go_as_one_batch_in_order() -> None:
    with trio.fail_after(5):
        syncer = RecordingSyncer()
        s = shard(syncer)
        reads = Reads(
            [
                [
                    frame(SECOND, T0, closed=False),
                    frame(SECOND, T0, closed=True),
                    frame(MINUTE, T0, closed=False),
                    frame(SECOND, T0 + 1_000, closed=True),
                    frame(SECOND, T0 + 1_000, closed=True),  # a duplicate: claimed once
                ],
                [frame(SECOND, T0 + 2_000, closed=False)],
            ]
        )
        send, receive = trio.open_memory_channel[Sequence[Candle]](math.inf)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(s.read, reads, Session(1), send)
            await reads.done.wait()
            nursery.cancel_scope.cancel()
        batches = []
        while True:
            try:
                batches.append(receive.receive_nowait())
            except trio.WouldBlock:
                break
        assert [[(c.symbol, c.open_time) for c in b] for b in batches] == [
            [("BTCUSDT", T0), ("BTCUSDT", T0 + 1_000)]
        ]
        stats = s.stats
        assert (stats.frames, stats.closed_candles, stats.decode_errors) == (6, 2, 0)
        assert stats.last_event_ms == T0 + 3_000
        assert syncer.requests == []


async def test_claimed_candles_of_a_cancelled_read_are_asked_from_rest() -> None:
    with trio.fail_after(5):
        syncer = RecordingSyncer()
        s = shard(syncer)
        reads = Reads(
            [
                [
                    frame(SECOND, T0, closed=True),
                    frame(MINUTE, T0, closed=True),
                    frame(SECOND, T0 + 1_000, closed=True),
                ]
            ]
        )
        send, receive = trio.open_memory_channel[Sequence[Candle]](0)  # nobody receives
        with receive, trio.move_on_after(0.5):
            await s.read(reads, Session(1), send)
        assert sorted(syncer.requests) == sorted([(SECOND, T0), (MINUTE, T0)])
        assert s.stats.closed_candles == 0


async def test_a_run_of_malformed_frames_ends_the_read_and_its_claims_go_to_rest() -> None:
    with trio.fail_after(5):
        syncer = RecordingSyncer()
        s = shard(syncer)
        garbage = [b"not json"] * BAD_FRAMES_BEFORE_RECONNECT
        reads = Reads([[frame(MINUTE, T0, closed=True), *garbage]])
        send, receive = trio.open_memory_channel[Sequence[Candle]](math.inf)
        with receive, pytest.raises(StreamError, match="malformed frames in a row"):
            await s.read(reads, Session(1), send)
        assert syncer.requests == [(MINUTE, T0)]
        assert s.stats.decode_errors == BAD_FRAMES_BEFORE_RECONNECT


async def test_observers_get_candles_in_progress_as_frames_and_closed_ones_decoded() -> None:
    with trio.fail_after(5):
        send_seen, seen = trio.open_memory_channel[Observed](math.inf)
        observer = Observer("test", "spot", "drop", send_seen, None)
        s = Shard(
            [SECOND, MINUTE],
            ConnectionStatistics("ws-1", 2),
            syncer=RecordingSyncer(),
            watching={SECOND.stream_name: (observer,)},
        )
        in_progress = frame(SECOND, T0, closed=False, event_time=T0 + 500)
        # A price sent as a number passes the glance, not the full decode.
        bad_price = frame(SECOND, T0 + 1_000, closed=False, event_time=T0 + 1_600)
        bad_price = bad_price.replace(b'"c":"1.6"', b'"c":1.6')
        reads = Reads(
            [
                [
                    in_progress,
                    frame(SECOND, T0, closed=False, event_time=T0 + 400),  # older: not offered
                    frame(MINUTE, T0, closed=False),  # nobody observes it
                    frame(SECOND, T0, closed=True),
                ],
                [bad_price],
            ]
        )
        send, receive = trio.open_memory_channel[Sequence[Candle]](math.inf)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(s.read, reads, Session(1), send)
            await reads.done.wait()
            nursery.cancel_scope.cancel()
        assert [c.open_time for c in receive.receive_nowait()] == [T0]
        first, closed, undecodable = (seen.receive_nowait() for _ in range(3))
        with pytest.raises(trio.WouldBlock):
            seen.receive_nowait()
        assert first.frame == in_progress
        assert first.event is None  # not decoded on the hot loop
        event = first.decoded()
        assert isinstance(event, wire.KlineEvent)
        assert (event.event_time, event.kline.close, event.kline.closed) == (T0 + 500, "1.6", False)
        assert isinstance(closed.event, wire.KlineEvent)
        assert closed.event.kline.closed
        assert closed.decoded() is closed.event
        assert undecodable.frame == bad_price
        assert undecodable.decoded() is None
        assert s.stats.decode_errors == 0
