"""Relay clients for the ``relay`` scenario: many WebSocket clients of serve's relay in one
process, each subscribed to its own streams, noting when every closed kline frame arrived.

Run with ``python bench/relay_clients.py URL SECONDS OUT STREAMS_PER_CLIENT STREAM...``: the
streams are dealt out to clients ``STREAMS_PER_CLIENT`` at a time; for ``SECONDS`` each client
reads, and every closed frame becomes a line ``SYMBOL INTERVAL OPEN_MS RECEIVED_WALL_MS`` in
``OUT`` (joined by the bench with the simulator's sent log). Prints one JSON object of counts.
The clients use klinetrio's own WebSocket client: the cheapest reader at hand, so the clients'
side costs as little of the two shared cores as it can.
"""

from __future__ import annotations

import json
import sys
import time

import msgspec
import trio

from klinetrio.net.websocket import open_websocket


class _K(msgspec.Struct):
    t: int
    s: str
    i: str
    x: bool


class _Data(msgspec.Struct):
    k: _K


class _Env(msgspec.Struct):
    data: _Data


async def client(url: str, streams: list[str], lines: list[str], counts: dict[str, int]) -> None:
    decode = msgspec.json.Decoder(_Env).decode
    async with open_websocket(f"{url}/stream?streams={'/'.join(streams)}") as ws:
        counts["connected"] += 1
        while True:
            message = await ws.get_message()
            received = time.time_ns() // 1_000_000
            counts["messages"] += 1
            try:
                k = decode(message).data.k
            except msgspec.DecodeError:
                continue
            if k.x:
                lines.append(f"{k.s} {k.i} {k.t} {received}\n")


async def main(url: str, seconds: float, per_client: int, streams: list[str]) -> list[str]:
    lines: list[str] = []
    counts = {"connected": 0, "messages": 0, "clients": 0}
    with trio.move_on_after(seconds):
        async with trio.open_nursery() as nursery:
            for start in range(0, len(streams), per_client):
                counts["clients"] += 1
                nursery.start_soon(client, url, streams[start : start + per_client], lines, counts)
                await trio.sleep(0.02)  # connect at a pace
    print(json.dumps({**counts, "closed": len(lines)}), flush=True)
    return lines


if __name__ == "__main__":
    url, seconds, out, per_client, *names = sys.argv[1:]
    received = trio.run(main, url, float(seconds), int(per_client), names)
    with open(out, "w", encoding="ascii") as file:
        file.writelines(received)
