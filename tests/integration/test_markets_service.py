"""The whole service over three markets and changing listings: the fake exchange (spot, USD-M,
COIN-M) in-process, a real PostgreSQL, real sockets, ``KLINETRIO_SYMBOLS`` with globs.

A symbol listed while serve runs is subscribed on the running connection (no reconnect, no other
stream interrupted) within one refresh and stored from its first candle; a delisted one is
unsubscribed, marked in the ``symbols`` table and not asked for again. Every stored candle is
exactly the exchange's, under its own market.
"""

from __future__ import annotations

from collections.abc import Iterable

import httpx
import psycopg
import trio
from support import eventually

from klinetrio.binance.markets import MARKETS
from klinetrio.binance.rest import RestClient, closed_only
from klinetrio.collector import Collector
from klinetrio.core.models import datetime_to_ms
from klinetrio.settings import Settings, load_settings
from klinetrio.simulate import Simulator, SimulatorConfig
from klinetrio.simulate.listings import ListingChange
from klinetrio.store.reads import coverage_report

MINUTE_MS = 60_000
SPEED = 600.0  # a 1m candle closes every 0.1 s
START_MS = 1_735_689_600_000  # 2025-01-01T00:00Z
LISTED_MS = START_MS + 40 * MINUTE_MS  # usdm:SOLUSDT and spot NEWUSDT start trading
DELISTED_MS = START_MS + 60 * MINUTE_MS  # spot ETHUSDT stops


def settings_for(port: int, **extra: str) -> Settings:
    base = f"127.0.0.1:{port}"
    values = {
        "symbols": "*usdt,usdm:*",
        "intervals": "1m",
        "ws_url": f"ws://{base}",
        "rest_url": f"http://{base}",
        "usdm_ws_url": f"ws://{base}/usdm",
        "usdm_rest_url": f"http://{base}",
        "http_addr": "off",
        "sync_lookback": "20m",
        "symbols_refresh": "1s",  # real seconds: 10 exchange minutes at SPEED
        **extra,
    }
    return load_settings(values, environ={}, dotenv=None)


def stored(database_url: str) -> dict[tuple[str, str], list[tuple[object, ...]]]:
    """Every stored candle per (market, symbol) as Binance's REST row, in time order."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT market, symbol, time, open::text, high::text, low::text, close::text,"
            " volume::text, close_time, quote_volume::text, trades,"
            " taker_buy_volume::text, taker_buy_quote_volume::text"
            " FROM candles WHERE interval = '1m' ORDER BY market, symbol, time"
        ).fetchall()
    result: dict[tuple[str, str], list[tuple[object, ...]]] = {}
    for market, symbol, t, o, h, low, c, v, ct, qv, n, tbv, tbq in rows:
        row = (datetime_to_ms(t), o, h, low, c, v, datetime_to_ms(ct), qv, n, tbv, tbq)  # type: ignore[arg-type]
        result.setdefault((str(market), str(symbol)), []).append(row)
    return result


async def exchange_rows(
    base: str, market: str, symbol: str, start_ms: int, end_ms: int
) -> list[tuple[object, ...]]:
    async with httpx.AsyncClient() as http:
        rest = RestClient(http, base, market=MARKETS[market])
        now = await rest.server_time()
        rows = []
        t = start_ms
        while t <= end_ms:
            page = closed_only(
                await rest.klines(symbol, "1m", start_ms=t, end_ms=end_ms, limit=500), now
            )
            if not page:
                break
            rows += [
                (
                    *(r.open_time, r.open, r.high, r.low, r.close, r.volume, r.close_time),
                    *(r.quote_volume, r.trades, r.taker_buy_volume, r.taker_buy_quote_volume),
                )
                for r in page
            ]
            t = page[-1].open_time + MINUTE_MS
    return rows


def contiguous(times: Iterable[int]) -> bool:
    series = list(times)
    return series == list(range(series[0], series[-1] + MINUTE_MS, MINUTE_MS))


async def test_globs_over_two_markets_follow_listings_and_delistings(database_url: str) -> None:
    simulator = Simulator(
        SimulatorConfig(
            port=0,
            speed=SPEED,
            start_ms=START_MS,
            updates_per_second=0,
            symbols=(
                "BTCUSDT",
                "ETHUSDT",
                "ETHBTC",
                "NEWUSDT",
                "usdm:BTCUSDT",
                "usdm:AVAXUSDT",
                "usdm:SOLUSDT",
            ),
            listings=(
                ListingChange(market="usdm", symbol="SOLUSDT", at_ms=LISTED_MS),
                ListingChange(symbol="NEWUSDT", at_ms=LISTED_MS),
                ListingChange(symbol="ETHUSDT", listed=False, at_ms=DELISTED_MS),
            ),
        )
    )
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(simulator.serve)
            base = f"http://127.0.0.1:{port}"
            service = Collector(settings_for(port), database_url=database_url)
            await nursery.start(service.run)
            await eventually(lambda: service.ready)
            # ETHBTC matches no glob; the listings to come are not trading yet.
            assert service.universe.collected == {
                "spot": ("BTCUSDT", "ETHUSDT"),
                "usdm": ("AVAXUSDT", "BTCUSDT"),
            }
            before = {c.name: c for c in service.statistics().connections}
            assert {c.market for c in before.values()} == {"spot", "usdm"}

            def exchange_ms() -> int:
                return max(c.last_event_ms or 0 for c in service.statistics().connections)

            await eventually(lambda: exchange_ms() > DELISTED_MS + 15 * MINUTE_MS)
            await eventually(lambda: service.universe.statistics().delisted == 1)
            assert service.universe.collected == {
                "spot": ("BTCUSDT", "NEWUSDT"),
                "usdm": ("AVAXUSDT", "BTCUSDT", "SOLUSDT"),
            }
            after = {c.name: c for c in service.statistics().connections}
            service.stop()
            with trio.fail_after(15):
                await service.stopped.wait()
            end_ms = exchange_ms()
            # No connection was replaced: the new streams were SUBSCRIBEd on the running ones.
            assert set(after) == set(before)
            for name, c in after.items():
                assert c.reconnects == 0, name
                assert c.rotations == 0, name
            assert sum(c.subscribes for c in after.values()) == 2
            assert sum(c.unsubscribes for c in after.values()) == 1

            times = stored(database_url)
            assert set(times) == {
                ("spot", "BTCUSDT"),
                ("spot", "ETHUSDT"),
                ("spot", "NEWUSDT"),
                ("usdm", "AVAXUSDT"),
                ("usdm", "BTCUSDT"),
                ("usdm", "SOLUSDT"),
            }
            for (market, symbol), rows in times.items():
                assert contiguous(r[0] for r in rows), (market, symbol)  # type: ignore[misc]
                # Exactly what the exchange has, market by market.
                want = await exchange_rows(base, market, symbol, rows[0][0], rows[-1][0])  # type: ignore[arg-type]
                assert rows == want, (market, symbol)
            # The listings are stored from their first candle; the delisted one to its last.
            assert times[("usdm", "SOLUSDT")][0][0] == LISTED_MS
            assert times[("spot", "NEWUSDT")][0][0] == LISTED_MS
            assert times[("spot", "ETHUSDT")][-1][0] == DELISTED_MS - MINUTE_MS
            assert times[("usdm", "BTCUSDT")][-1][0] > end_ms - 10 * MINUTE_MS
            nursery.cancel_scope.cancel()

    with psycopg.connect(database_url) as conn:
        status = dict(
            conn.execute(
                "SELECT market || ':' || symbol, status FROM symbols ORDER BY 1"
            ).fetchall()
        )
    assert status["spot:ETHUSDT"] == "BREAK"
    assert status["usdm:SOLUSDT"] == "TRADING"
    assert status["spot:NEWUSDT"] == "TRADING"
    assert "spot:ETHBTC" not in status

    # klinetrio coverage's numbers: nothing missing over a range reaching past the delisting,
    # the delisted series ending with its last candle.
    with psycopg.connect(database_url) as conn:
        report = coverage_report(conn, market="spot", end_ms=DELISTED_MS + 10 * MINUTE_MS)
    by_symbol = {c.symbol: c for c in report}
    eth = by_symbol["ETHUSDT"]
    assert (eth.last, eth.missing, eth.end) == (DELISTED_MS - MINUTE_MS, 0, DELISTED_MS)
    assert by_symbol["BTCUSDT"].missing == 0
