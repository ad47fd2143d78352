"""A bystander WebSocket client of the simulator: how late do closed frames leave the exchange?

It subscribes a few streams on a connection of its own and, for every closed kline frame, notes
(wall time of receipt) - (close time + 1 ms), corrected by the exchange-clock offset it is given.
The serve process gets the same frames from the same simulator, so this is the share of the
closed-candle latency that is spent before serve could read the frame: the simulator's own
lateness under load plus loopback TCP. Run with ``python bench/probe.py URL OFFSET_MS SECONDS
STREAM...``; prints one JSON object.
"""

from __future__ import annotations

import json
import sys
import time

import msgspec
import trio
import trio_websocket


class _K(msgspec.Struct):
    T: int
    x: bool


class _Data(msgspec.Struct):
    E: int
    k: _K


class _Env(msgspec.Struct):
    data: _Data


async def probe(
    url: str, offset_ms: float, seconds: float, streams: list[str]
) -> dict[str, object]:
    decode = msgspec.json.Decoder(_Env).decode
    late: list[float] = []
    gaps: list[float] = []
    with trio.move_on_after(seconds):
        async with trio_websocket.open_websocket_url(
            f"{url}/stream?streams={'/'.join(streams)}"
        ) as ws:
            while True:
                message = await ws.get_message()
                now_ms = time.time() * 1000
                try:
                    env = decode(message)
                except msgspec.DecodeError:
                    continue
                if env.data.k.x:
                    late.append(now_ms + offset_ms - (env.data.k.T + 1))
                    gaps.append(env.data.E - (env.data.k.T + 1))
    late.sort()

    def pct(q: float) -> float | None:
        return round(late[min(len(late) - 1, int(q * len(late)))], 1) if late else None

    return {
        "count": len(late),
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "max_ms": round(late[-1], 1) if late else None,
        "event_time_lag_p50_ms": sorted(gaps)[len(gaps) // 2] if gaps else None,
    }


def main() -> None:
    url, offset, seconds, *streams = sys.argv[1:]
    print(json.dumps(trio.run(probe, url, float(offset), float(seconds), streams)), flush=True)


if __name__ == "__main__":
    main()
