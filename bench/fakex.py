"""The fake exchange for the backfill benchmark: klinetrio's own ``Simulator``, fed a market that
is computed before the clock starts.

Why not plain ``klinetrio simulate``: its ``SyntheticMarket`` spends ~50 µs of Python on every
candle it invents (13 octaves of value noise), so one core of simulator serves ~19,000 candles a
second — below the 40,000/s the backfill must reach, and it would be the simulator that we measure.
Here every candle of the range exists before the first request (a ``ReplayMarket``, the one
``--data`` uses), so a ``/api/v3/klines`` page costs a bisect, dict lookups and one msgspec
encode. The HTTP server, routing, weight accounting and JSON are the simulator's own.

Run as ``python bench/fakex.py --port P --symbols A,B --interval 1m --from-ms X --to-ms Y``;
it prints ``ready <port>`` on stdout once it listens. ``--rest-delay-ms`` holds every REST
answer back that long, for a round trip to an exchange that is not on this machine (the
archive face is not delayed: its rate is bound by the bytes, not the round trip).
"""

from __future__ import annotations

import argparse
import random
import sys
import time

import trio

from klinetrio.core.intervals import Interval
from klinetrio.simulate import Bar, ReplayMarket, Simulator, SimulatorConfig
from klinetrio.simulate.market import format_units
from klinetrio.simulate.web import Request, Response


def synthetic_series(
    symbol: str, interval: str, start_ms: int, end_ms: int, seed: int
) -> list[Bar]:
    """A random walk of realistic-looking candles (8-decimal strings, like Binance's)."""
    rng = random.Random(f"{seed}:{symbol}:{interval}")
    iv = Interval(interval)
    price = rng.randrange(100_000_000, 5_000_000_000_000)  # 1 .. 50,000 in 1e-8 units
    tick = 10_000  # 0.0001
    bars: list[Bar] = []
    t = iv.ceil(start_ms)
    while t < end_ms:
        nxt = iv.next_open(t)
        o = price
        c = max(tick, o + (rng.randrange(-200, 201) * o // 100_000) // tick * tick)
        h = max(o, c) + rng.randrange(0, 50) * tick
        lo = max(tick, min(o, c) - rng.randrange(0, 50) * tick)
        volume = rng.randrange(1_000_000, 100_000_000_000)
        quote = volume * ((h + lo) // 2) // 100_000_000
        taker = volume * rng.randrange(30, 70) // 100
        trades = rng.randrange(1, 5000)
        bars.append(
            Bar(
                symbol=symbol,
                interval=interval,
                open_time=t,
                close_time=nxt - 1,
                open=format_units(o),
                high=format_units(h),
                low=format_units(lo),
                close=format_units(c),
                volume=format_units(volume),
                quote_volume=format_units(quote),
                trades=trades,
                taker_buy_volume=format_units(taker),
                taker_buy_quote_volume=format_units(taker * ((h + lo) // 2) // 100_000_000),
                first_trade_id=t // 10,
            )
        )
        price = c
        t = nxt
    return bars


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--symbols", required=True)
    parser.add_argument("--interval", default="1m")
    parser.add_argument("--from-ms", type=int, required=True)
    parser.add_argument("--to-ms", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rest-delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    symbols = [s.strip().upper() for s in args.symbols.split(",") if s.strip()]
    series = {
        (s, args.interval): synthetic_series(s, args.interval, args.from_ms, args.to_ms, args.seed)
        for s in symbols
    }
    market = ReplayMarket(series, "bench")
    config = SimulatorConfig(
        port=args.port,
        symbols=tuple(symbols),
        start_ms=int(time.time() * 1000),
        weight_limit=2**62,
        updates_per_second=0,
    )
    simulator = Simulator(config, market=market)
    if args.rest_delay_ms > 0:
        answer = simulator._rest.handle

        async def delayed(request: Request) -> Response:
            await trio.sleep(args.rest_delay_ms / 1000)
            return await answer(request)

        simulator._rest.handle = delayed  # type: ignore[method-assign]

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(simulator.serve)
            print(f"ready {port}", flush=True)

    try:
        trio.run(run)
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
