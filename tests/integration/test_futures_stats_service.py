"""Futures statistics end to end in-process: the fake exchange's /futures/data endpoints, the
collector's poller, a real PostgreSQL. Every 5-minute row of two USD-M symbols lands exactly
once, and a restart after twenty exchange minutes away fills what it missed."""

from __future__ import annotations

import httpx
import psycopg
import trio
from support import eventually

from klinetrio.binance.markets import USDM
from klinetrio.binance.rest import RestClient
from klinetrio.binance.wire import OpenInterestRow, RatioRow
from klinetrio.collector import Collector
from klinetrio.core.models import datetime_to_ms
from klinetrio.settings import Settings, load_settings
from klinetrio.simulate import Simulator, SimulatorConfig
from klinetrio.store.futures_stats import KINDS, RATIO_KINDS

MINUTE_MS = 60_000
PERIOD_MS = 5 * MINUTE_MS
SPEED = 600.0  # five exchange minutes every half second
START_MS = 1_735_689_600_000  # 2025-01-01T00:00Z
SYMBOLS = ("BTCUSDT", "ETHUSDT")


def settings_for(port: int) -> Settings:
    base = f"127.0.0.1:{port}"
    values = {
        "symbols": ",".join(f"usdm:{s}" for s in SYMBOLS),
        "intervals": "1h",
        "usdm_ws_url": f"ws://{base}/usdm",
        "usdm_rest_url": f"http://{base}",
        "http_addr": "off",
        "sync_lookback": "1h",
        "futures_stats": "on",
        "futures_stats_period": "5m",
    }
    return load_settings(values, environ={}, dotenv=None)


def stored(database_url: str) -> dict[tuple[str, str], dict[int, tuple[str, ...]]]:
    """(symbol, kind) → {time: the stored numbers as text}."""
    result: dict[tuple[str, str], dict[int, tuple[str, ...]]] = {}
    with psycopg.connect(database_url) as conn:
        for symbol, kind, t, *values in conn.execute(
            "SELECT symbol, kind, time, long_short_ratio::text, long_share::text,"
            " short_share::text FROM long_short_ratios WHERE market = 'usdm' AND period = '5m'"
        ):
            result.setdefault((str(symbol), str(kind)), {})[datetime_to_ms(t)] = tuple(
                str(v) for v in values
            )
        for symbol, t, *values in conn.execute(
            "SELECT symbol, time, open_interest::text, open_interest_value::text"
            " FROM open_interest WHERE market = 'usdm' AND period = '5m'"
        ):
            result.setdefault((str(symbol), "open_interest"), {})[datetime_to_ms(t)] = tuple(
                str(v) for v in values
            )
    return result


async def exchange_rows(
    base: str, symbol: str, kind: str, start: int, end: int
) -> dict[int, tuple[str, ...]]:
    async with httpx.AsyncClient() as http:
        rest = RestClient(http, base, market=USDM)
        endpoint = "openInterestHist" if kind == "open_interest" else RATIO_KINDS[kind]
        params = {"symbol": symbol, "period": "5m", "startTime": str(start),
                  "endTime": str(end - 1), "limit": "500"}  # fmt: skip
        rows = await rest.futures_data(endpoint, params)
    result: dict[int, tuple[str, ...]] = {}
    for row in rows:
        if isinstance(row, OpenInterestRow):
            result[row.timestamp] = (row.sumOpenInterest, row.sumOpenInterestValue)
        elif isinstance(row, RatioRow):
            result[row.timestamp] = (row.longShortRatio, row.long_share, row.short_share)
    return result


async def exchange_now(base: str) -> int:
    async with httpx.AsyncClient() as http:
        return await RestClient(http, base, market=USDM).server_time()


async def run_until(simulator_port: int, database_url: str, until_ms: int) -> tuple[int, Collector]:
    """Serve until the stored statistics reach ``until_ms``; returns when it stopped."""
    base = f"http://127.0.0.1:{simulator_port}"
    service = Collector(settings_for(simulator_port), database_url=database_url)
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        await eventually(lambda: service.ready)

        def reached() -> bool:
            rows = stored(database_url)
            return len(rows) == 8 and all(max(r) >= until_ms for r in rows.values())

        await eventually(reached, poll=0.05)
        service.stop()
        await service.stopped.wait()
        nursery.cancel_scope.cancel()
    return await exchange_now(base), service


def assert_exact(
    rows: dict[tuple[str, str], dict[int, tuple[str, ...]]],
    want: dict[tuple[str, str], dict[int, tuple[str, ...]]],
    start: int,
    end: int,
) -> None:
    for series, got in rows.items():
        times = sorted(t for t in got if start <= t < end)
        assert times == list(range(start, end, PERIOD_MS)), series
        assert {t: got[t] for t in times} == want[series], series


async def test_every_period_stored_and_a_restart_heals_the_gap(database_url: str) -> None:
    simulator = Simulator(
        SimulatorConfig(
            port=0,
            speed=SPEED,
            start_ms=START_MS,
            updates_per_second=0,
            symbols=tuple(f"usdm:{s}" for s in SYMBOLS),
        )
    )
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(simulator.serve)
            base = f"http://127.0.0.1:{port}"
            # A simulated hour of polling, after the first pass took the hour before it.
            stopped_at, first = await run_until(port, database_url, START_MS + 60 * MINUTE_MS)
            assert first.futures_stats is not None
            stats = first.futures_stats.statistics()
            assert stats.series == 8
            assert stats.failures == 0
            # Twenty exchange minutes away, then a restart.
            await trio.sleep_until(simulator.clock.real_at(stopped_at + 20 * MINUTE_MS))
            restart_ms = await exchange_now(base)
            await run_until(port, database_url, restart_ms - restart_ms % PERIOD_MS - PERIOD_MS)
            rows = stored(database_url)
            assert set(rows) == {(s, k) for s in SYMBOLS for k in KINDS}
            # From the look-back of the first start (an hour before it began)...
            start = max(min(r) for r in rows.values())
            assert start <= START_MS - 50 * MINUTE_MS
            end = min(max(r) for r in rows.values()) + PERIOD_MS
            want = {
                (s, k): await exchange_rows(base, s, k, start, end) for s in SYMBOLS for k in KINDS
            }
            assert_exact(rows, want, start, end)
            assert end - start >= (50 + 60 + 20) * MINUTE_MS
            nursery.cancel_scope.cancel()
