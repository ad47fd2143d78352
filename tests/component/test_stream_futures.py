"""The collector's StreamGroup against the simulator's futures bases (``/usdm``, ``/coinm``),
and a listing on the simulator's schedule reaching a running connection."""

from __future__ import annotations

import trio
import trio.testing
from support.streams import MINUTE, START, assert_contiguous, serving, sim_config, streaming

from klinetrio.binance.markets import COINM, USDM
from klinetrio.core.models import StreamKey
from klinetrio.simulate import ListingChange, Simulator

BTC = StreamKey("BTCUSDT", "1m", "usdm")
ETH = StreamKey("ETHUSDT", "1m", "usdm")
SOL = StreamKey("SOLUSDT", "1m", "usdm")
LISTED_AT = START + 330_000  # 2024-01-01T00:06:00Z


async def test_usdm_streams_and_a_listing_on_the_simulators_schedule(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = sim_config(
        symbols=("BTCUSDT", "usdm:BTCUSDT", "usdm:ETHUSDT"),
        listings=(ListingChange(market="usdm", symbol="SOLUSDT", at_ms=LISTED_AT),),
    )
    with trio.fail_after(20):
        sim = Simulator(config)
        async with (
            serving(sim) as url,
            streaming(f"{url}/usdm", [BTC, ETH], market=USDM, streams_per_connection=3) as run,
        ):
            await run.wait_for(lambda: len(run.open_times(BTC)) >= 2)
            assert run.group.add([SOL]) == [SOL]  # subscribed before it trades
            await run.wait_for(lambda: len(run.open_times(SOL)) >= 3)
            stats = run.group.statistics()
        assert (stats[0].connects, stats[0].reconnects, stats[0].subscribes) == (1, 0, 1)
        assert min(run.open_times(SOL)) == LISTED_AT  # its candles from the first one
        assert {c.market for c in run.candles} == {"usdm"}
        for key in (BTC, ETH, SOL):
            assert_contiguous(run.open_times(key))
        bar = sim.market_of("usdm").bar("BTCUSDT", "1m", START - 30_000)
        candle = next(
            c for c in run.candles if (c.symbol, c.open_time) == ("BTCUSDT", START - 30_000)
        )
        assert bar is not None
        assert (str(candle.open), str(candle.close)) == (bar.open, bar.close)
        spot = sim.market.bar("BTCUSDT", "1m", START - 30_000)
        assert spot is not None
        assert spot.close != bar.close  # another market, other candles


async def test_coinm_streams(autojump_clock: trio.testing.MockClock) -> None:
    keys = [StreamKey("BTCUSD_PERP", "1m", "coinm"), StreamKey("BTCUSD_240329", "5m", "coinm")]
    config = sim_config(symbols=("coinm:BTCUSD_PERP", "coinm:BTCUSD_240329"))
    with trio.fail_after(20):
        sim = Simulator(config)
        async with (
            serving(sim) as url,
            streaming(f"{url}/coinm", keys, market=COINM) as run,
        ):
            await run.wait_for(lambda: len(run.open_times(keys[1])) >= 2)
        assert {c.market for c in run.candles} == {"coinm"}
        assert_contiguous(run.open_times(keys[0]))
        assert_contiguous(run.open_times(keys[1]), 5 * MINUTE)
        assert all(str(c.volume).isdigit() for c in run.candles)  # whole contracts
