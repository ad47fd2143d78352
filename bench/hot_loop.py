"""The reading task's CPU per frame, without sockets, simulator or database: a repeatable A/B
figure for changes to the hot loop, beside the end-to-end ``bench/run.py`` (whose µs per frame
moves by ±0.5 with what else runs on the 2 cores).

One shard of 1,000 streams (1s … 1M of the first symbols, as the full load's first connection)
in a fan-out that collects the full load's 24,000 streams; reads of 50 frames, one in eight a
closed 1s candle (the full load's share), the rest in-progress updates, in the simulator's byte
layout. Two figures, each the best of ``--repeat`` runs (process CPU time): ``split`` — the
encoded WebSocket stream cut by ``net.frames.FrameSplitter`` in 64 KiB reads; ``read`` —
``Shard.read`` over those reads (glance, claims, the batch send), through a fake transport.

    .venv/bin/python bench/hot_loop.py [--reads 4000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time
from collections import deque
from collections.abc import Sequence

import trio
from common import ALL_INTERVALS, symbol_names

from klinetrio.binance.shard import Shard
from klinetrio.binance.shard_types import ConnectionStatistics, Session
from klinetrio.core.intervals import Interval
from klinetrio.core.models import Candle, StreamKey
from klinetrio.fanout import Fanout
from klinetrio.net.frames import FrameSplitter

FRAMES_PER_READ = 50
CLOSED_EVERY = 8
SHARD_STREAMS = 1_000
KLINE = (
    b'{"t":%d,"T":%d,"s":"%s","i":"%s","f":100,"L":200,"o":"16541.77000000",'
    b'"c":"16529.67000000","h":"16545.70000000","l":"16508.39000000","v":"4.36483570",'
    b'"n":101,"x":%s,"q":"72146.29358672","V":"2.17994772","Q":"36032.35287035","B":"0"}'
)


class _End(Exception):
    pass


class FakeTransport:
    """The reads, one ``get_messages`` each (or one message per ``get_message``, as the loop
    before issue 16 read them, for the before figures)."""

    def __init__(self, reads: list[list[bytes]]) -> None:
        self._reads = iter(reads)
        self._left: deque[bytes] = deque()

    async def send_message(self, message: str) -> None:
        pass

    async def get_message(self) -> str | bytes:
        if not self._left:
            self._left.extend(await self.get_messages())
        return self._left.popleft()

    async def get_messages(self) -> Sequence[str | bytes]:
        for read in self._reads:
            return read
        raise _End

    async def ping(self, payload: bytes | None = None) -> None:
        pass


def frames(keys: list[StreamKey], reads: int) -> list[list[bytes]]:
    """``reads`` reads of in-progress updates over ``keys``, every ``CLOSED_EVERY``-th frame a
    closed candle of the next 1s stream (consecutive candles, so each is claimed)."""
    second = Interval.parse("1s")
    ones = [k for k in keys if k.interval == "1s"]
    next_open = dict.fromkeys(ones, 1_700_000_000_000)
    out: list[list[bytes]] = []
    n = 0
    now = 1_700_000_000_000
    for _ in range(reads):
        read = []
        for _ in range(FRAMES_PER_READ):
            n += 1
            now += 2
            if n % CLOSED_EVERY == 0:
                key = ones[(n // CLOSED_EVERY) % len(ones)]
                t = next_open[key]
                next_open[key] = second.next_open(t)
                closed = b"true"
            else:
                key = keys[n % len(keys)]
                t = Interval.parse(key.interval).floor(now)
                closed = b"false"
            close = Interval.parse(key.interval).close_time(t)
            k = KLINE % (t, close, key.symbol.encode(), key.interval.encode(), closed)
            read.append(
                b'{"stream":"%s","data":{"e":"kline","E":%d,"s":"%s","k":%s}}'
                % (key.stream_name.encode(), now, key.symbol.encode(), k)
            )
        out.append(read)
    return out


def ws_bytes(reads: list[list[bytes]]) -> list[bytes]:
    """The reads as a server sends them (unmasked final text frames), cut in 64 KiB chunks."""
    parts = []
    for read in reads:
        for payload in read:
            n = len(payload)
            header = bytes([0x81, n]) if n < 126 else bytes([0x81, 126]) + n.to_bytes(2, "big")
            parts.append(header + payload)
    stream = b"".join(parts)
    return [stream[i : i + 65_536] for i in range(0, len(stream), 65_536)]


def time_split(chunks: list[bytes]) -> float:
    splitter = FrameSplitter(4 * 1024 * 1024)
    started = time.process_time()
    for chunk in chunks:
        splitter.feed(chunk)
    return time.process_time() - started


def time_read(keys: list[StreamKey], everything: list[str], reads: list[list[bytes]]) -> float:
    fanout = Fanout({"spot": everything})
    shard = Shard(
        keys,
        ConnectionStatistics("ws-1", len(keys)),
        syncer=None,
        watching=fanout.watching("spot"),
    )

    async def main() -> float:
        send, receive = trio.open_memory_channel[Sequence[Candle]](math.inf)
        started = time.process_time()
        with contextlib.suppress(_End):
            await shard.read(FakeTransport(reads), Session(1), send)
        spent = time.process_time() - started
        receive.close()
        return spent

    return trio.run(main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=4_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    intervals = ALL_INTERVALS.split(",")
    symbols = symbol_names(1_500)
    everything = [StreamKey(s, i) for s in symbols for i in intervals]
    keys = everything[:SHARD_STREAMS]
    reads = frames(keys, args.reads)
    count = args.reads * FRAMES_PER_READ
    chunks = ws_bytes(reads)
    names = [k.stream_name for k in everything]
    split = min(time_split(chunks) for _ in range(args.repeat))
    read = min(time_read(keys, names, reads) for _ in range(args.repeat))
    print(
        f"{count:,} frames ({100 / CLOSED_EVERY:.1f} % closed), best of {args.repeat}:"
        f" split {split / count * 1e6:.2f} µs/frame, read {read / count * 1e6:.2f} µs/frame,"
        f" together {(split + read) / count * 1e6:.2f}"
    )


if __name__ == "__main__":
    main()
