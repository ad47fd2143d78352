"""The fake exchange's futures markets over real sockets: USD-M and COIN-M REST (pages, weights,
exchangeInfo shapes), their WebSocket bases, listings that change while it runs, the futures
statistics and the futures archives.

Every test runs its own simulator on 127.0.0.1:0 with a fast exchange clock (``speed=600``: a 1m
candle closes every 0.1 s), as ``test_simulate`` does.
"""

from __future__ import annotations

import argparse
import json
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from klinetrio.binance import wire
from klinetrio.binance.archive import ArchiveClient
from klinetrio.binance.markets import USDM
from klinetrio.binance.rest import RestClient
from klinetrio.binance.wire import OpenInterestRow, RatioRow
from klinetrio.core.models import parse_utc_ms
from klinetrio.core.weights import WeightBudget
from klinetrio.errors import SettingsError
from klinetrio.simulate import Simulator, SimulatorConfig, add_arguments, config_from_args
from klinetrio.simulate.listings import ListingChange

START = 1_704_067_230_000  # 2024-01-01T00:00:30Z, mid-way through a 1m candle
MINUTE = 60_000
FUTURES = ("usdm:BTCUSDT", "usdm:ETHUSDT", "coinm:BTCUSD_PERP", "coinm:BTCUSD_240329")


def _config(**overrides: Any) -> SimulatorConfig:
    values: dict[str, Any] = {
        "port": 0,
        "start_ms": START,
        "speed": 600.0,
        "seed": 7,
        "symbols": ("BTCUSDT", *FUTURES),
    }
    values.update(overrides)
    return SimulatorConfig(**values)


@asynccontextmanager
async def _simulator(**overrides: Any) -> AsyncIterator[tuple[Simulator, str]]:
    sim = Simulator(_config(**overrides))
    async with trio.open_nursery() as nursery:
        port = await nursery.start(sim.serve)
        yield sim, f"127.0.0.1:{port}"
        nursery.cancel_scope.cancel()


async def _next_kline(ws: WebSocketConnection, closed: bool | None = None) -> dict[str, Any]:
    while True:
        message = json.loads(await ws.get_message())
        event = message.get("data", message)
        if event.get("e") == "kline" and (closed is None or event["k"]["x"] is closed):
            return dict(event)


async def _drain(ws: WebSocketConnection) -> None:
    """Read until the server closes the connection."""
    try:
        while True:
            await ws.get_message()
    except ConnectionClosed:
        return


def _as_rest_row(k: dict[str, Any]) -> list[Any]:
    return [k["t"], k["o"], k["h"], k["l"], k["c"], k["v"], k["T"], k["q"], k["n"], k["V"], k["Q"], "0"]  # fmt: skip


# --- REST ------------------------------------------------------------------------------------


async def test_futures_klines_pages_and_weights() -> None:
    with trio.fail_after(10):
        async with _simulator(speed=1.0) as (_, addr), httpx.AsyncClient() as client:
            url = f"http://{addr}/fapi/v1/klines"
            start = START - 30_000 - 3000 * MINUTE
            used = []
            for limit in (99, 100, 499, 500, 1000, 1001, 1500):
                r = await client.get(
                    url,
                    params={
                        "symbol": "BTCUSDT",
                        "interval": "1m",
                        "startTime": start,
                        "limit": limit,
                    },
                )
                assert r.status_code == 200
                assert len(r.json()) == limit
                used.append(int(r.headers["x-mbx-used-weight-1m"]))
            assert used == [1, 3, 5, 10, 15, 25, 35]  # 1, 2, 2, 5, 5, 10, 10
            r = await client.get(url, params={"symbol": "BTCUSDT", "interval": "1m", "limit": 1501})
            assert r.json()["code"] == -1130
            r = await client.get(url, params={"symbol": "BTCUSDT", "interval": "1s"})
            assert r.json() == {"code": -1120, "msg": "Invalid interval."}
            # Each market meters its own weight: spot's meter saw none of the above.
            r = await client.get(f"http://{addr}/api/v3/time")
            assert r.headers["x-mbx-used-weight-1m"] == "1"
            # COIN-M pages too, and knows only its own symbols.
            rows = (
                await client.get(
                    f"http://{addr}/dapi/v1/klines",
                    params={"symbol": "BTCUSD_PERP", "interval": "1h", "limit": 1500},
                )
            ).json()
            assert len(rows) == 1500
            r = await client.get(
                f"http://{addr}/dapi/v1/klines", params={"symbol": "BTCUSDT", "interval": "1m"}
            )
            assert r.json()["code"] == -1121
            # A market prefix on the path is accepted too.
            r = await client.get(f"http://{addr}/usdm/fapi/v1/time")
            assert r.json()["serverTime"] >= START
            assert (await client.get(f"http://{addr}/coinm/fapi/v1/time")).status_code == 404


async def test_futures_candles_differ_from_spot_and_are_stable() -> None:
    with trio.fail_after(10):
        async with _simulator() as (_, addr), httpx.AsyncClient() as client:
            params = {"symbol": "BTCUSDT", "interval": "1h", "endTime": START - 3_600_000}
            spot = (await client.get(f"http://{addr}/api/v3/klines", params=params)).json()
            usdm = (await client.get(f"http://{addr}/fapi/v1/klines", params=params)).json()
            assert [r[0] for r in spot] == [r[0] for r in usdm]
            assert spot != usdm
        async with _simulator() as (_, addr), httpx.AsyncClient() as client:
            again = (await client.get(f"http://{addr}/fapi/v1/klines", params=params)).json()
            assert again == usdm


async def test_futures_weight_429_then_418() -> None:
    with trio.fail_after(10):
        async with (
            _simulator(futures_weight_limit=3) as (sim, addr),
            httpx.AsyncClient() as client,
        ):
            statuses = [
                (await client.get(f"http://{addr}/fapi/v1/ping")).status_code for _ in range(7)
            ]
            assert statuses == [200, 200, 200, 429, 429, 429, 418]
            r = await client.get(f"http://{addr}/fapi/v1/time")
            assert r.status_code == 418
            assert "IP banned until" in r.json()["msg"]
            # Other markets are not banned.
            assert (await client.get(f"http://{addr}/dapi/v1/ping")).status_code == 200
            assert (await client.get(f"http://{addr}/api/v3/ping")).status_code == 200
            assert (sim.statistics().rest_429, sim.statistics().rest_418) == (3, 2)
            usdm = sim.market_statistics("usdm")
            assert (usdm.rest_requests, usdm.rest_429, usdm.rest_418) == (8, 3, 2)
            coinm = sim.market_statistics("coinm")
            assert (coinm.rest_requests, coinm.rest_429, coinm.rest_418, coinm.weight_used) == (
                1,
                0,
                0,
                1,
            )


async def test_exchange_info_in_each_markets_shape() -> None:
    with trio.fail_after(10):
        async with _simulator() as (_, addr), httpx.AsyncClient() as client:
            r = await client.get(f"http://{addr}/fapi/v1/exchangeInfo")
            assert r.headers["x-mbx-used-weight-1m"] == "1"
            body = r.json()
            assert body["futuresType"] == "U_MARGINED"
            weight = [x for x in body["rateLimits"] if x["rateLimitType"] == "REQUEST_WEIGHT"]
            assert weight[0]["limit"] == 2400
            usdm = {s["symbol"]: s for s in body["symbols"]}
            assert set(usdm) == {"BTCUSDT", "ETHUSDT"}
            btc = usdm["BTCUSDT"]
            assert (btc["status"], btc["pair"], btc["contractType"]) == (
                "TRADING",
                "BTCUSDT",
                "PERPETUAL",
            )
            assert (btc["baseAsset"], btc["quoteAsset"], btc["marginAsset"]) == ("BTC",) + (
                "USDT",
            ) * 2
            r = await client.get(f"http://{addr}/dapi/v1/exchangeInfo")
            coinm = {s["symbol"]: s for s in r.json()["symbols"]}
            assert set(coinm) == {"BTCUSD_PERP", "BTCUSD_240329"}
            for symbol in coinm.values():
                assert "status" not in symbol
                assert symbol["contractStatus"] == "TRADING"
                assert symbol["pair"] == "BTCUSD"
                assert (symbol["baseAsset"], symbol["quoteAsset"]) == ("BTC", "USD")
            assert coinm["BTCUSD_PERP"]["contractType"] == "PERPETUAL"
            assert coinm["BTCUSD_240329"]["contractType"] == "CURRENT_QUARTER"
            assert coinm["BTCUSD_240329"]["deliveryDate"] == parse_utc_ms("2024-03-29T08:00", "t")
            # The client's decoder reads every market's status.
            info = wire.exchange_info_decoder.decode(r.content)
            assert {s.state for s in info.symbols} == {"TRADING"}
            spot = (await client.get(f"http://{addr}/api/v3/exchangeInfo")).json()
            assert [s["symbol"] for s in spot["symbols"]] == ["BTCUSDT"]


# --- WebSocket -------------------------------------------------------------------------------


async def test_futures_streams_under_their_bases() -> None:
    with trio.fail_after(10):
        async with _simulator(updates_per_second=20) as (_, addr), httpx.AsyncClient() as client:
            url = f"ws://{addr}/usdm/stream?streams=btcusdt@kline_1m/ethusdt@kline_1m"
            async with open_websocket_url(url) as ws:
                seen = set()
                while len(seen) < 2:
                    envelope = wire.combined_decoder.decode(await ws.get_message())
                    seen.add(envelope.stream)
                event = await _next_kline(ws, closed=True)
                k = event["k"]
                params = {"symbol": k["s"], "interval": "1m", "startTime": k["t"], "limit": 1}
                row = (await client.get(f"http://{addr}/fapi/v1/klines", params=params)).json()
                assert row == [_as_rest_row(k)]
            async with open_websocket_url(f"ws://{addr}/coinm/ws/btcusd_perp@kline_1m") as ws:
                event = await _next_kline(ws, closed=True)
                assert "stream" not in event
                assert (event["s"], event["k"]["s"], event["k"]["i"]) == (
                    ("BTCUSD_PERP",) * 2 + ("1m",)
                )
                wire.raw_event_decoder.decode(json.dumps(event))
                await ws.send_message('{"method":"LIST_SUBSCRIPTIONS","id":1}')
                while (reply := json.loads(await ws.get_message())).get("id") != 1:
                    pass
                assert reply == {"result": ["btcusd_perp@kline_1m"], "id": 1}
            async with open_websocket_url(f"ws://{addr}/coinm/ws") as ws:
                # A spot symbol and the 1s interval are not served on COIN-M: accepted, silent.
                names = ["btcusdt@kline_1m", "btcusd_perp@kline_1s", "btcusd_240329@kline_1m"]
                await ws.send_message(json.dumps({"method": "SUBSCRIBE", "params": names, "id": 2}))
                assert json.loads(await ws.get_message()) == {"result": None, "id": 2}
                for _ in range(5):
                    assert (await _next_kline(ws))["s"] == "BTCUSD_240329"


async def test_futures_allow_ten_messages_a_second() -> None:
    with trio.fail_after(10):
        async with _simulator(updates_per_second=0) as (sim, addr):
            async with open_websocket_url(f"ws://{addr}/usdm/ws") as ws:
                for i in range(10):
                    await ws.send_message(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
                for i in range(10):
                    assert json.loads(await ws.get_message()) == {"result": [], "id": i}
            assert sim.statistics().message_rate_closes == 0
            async with open_websocket_url(f"ws://{addr}/usdm/ws") as ws:
                for i in range(11):
                    await ws.send_message(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
                await _drain(ws)
                assert ws.closed is not None
                assert ws.closed.code == 1008
            assert sim.statistics().message_rate_closes == 1


# --- listings --------------------------------------------------------------------------------


async def test_listing_and_delisting_change_exchange_info_and_streams() -> None:
    listed_at = START + 330_000  # 2024-01-01T00:06:00Z, 0.55 s of real time after the start
    changes = (
        ListingChange(market="usdm", symbol="SOLUSDT", at_ms=listed_at),
        ListingChange(market="usdm", symbol="ETHUSDT", listed=False, after_s=330.0),
        ListingChange(market="coinm", symbol="BTCUSD_PERP", listed=False, after_s=330.0),
        ListingChange(market="spot", symbol="SOLUSDT", after_s=330.0),
    )
    with trio.fail_after(15):
        async with (
            _simulator(listings=changes, updates_per_second=0) as (sim, addr),
            httpx.AsyncClient() as client,
        ):

            async def statuses(path: str, field: str = "status") -> dict[str, str]:
                body = (await client.get(f"http://{addr}{path}")).json()
                return {s["symbol"]: s[field] for s in body["symbols"]}

            assert await statuses("/fapi/v1/exchangeInfo") == {
                "BTCUSDT": "TRADING",
                "ETHUSDT": "TRADING",
                "SOLUSDT": "PENDING_TRADING",
            }
            assert "SOLUSDT" not in await statuses("/api/v3/exchangeInfo")
            r = await client.get(
                f"http://{addr}/api/v3/klines", params={"symbol": "SOLUSDT", "interval": "1m"}
            )
            assert r.json()["code"] == -1121
            url = f"ws://{addr}/usdm/stream?streams=solusdt@kline_1m/ethusdt@kline_1m"
            opens: dict[str, list[int]] = {"ETHUSDT": [], "SOLUSDT": []}
            async with open_websocket_url(url) as ws:
                while len(opens["SOLUSDT"]) < 3:
                    event = await _next_kline(ws, closed=True)
                    opens[event["s"]].append(event["k"]["t"])
            # ETHUSDT's last candle closes before its delisting; SOLUSDT's first opens at it.
            assert opens["ETHUSDT"][-1] == listed_at - MINUTE
            assert opens["SOLUSDT"] == [listed_at + n * MINUTE for n in range(3)]
            assert await statuses("/fapi/v1/exchangeInfo") == {
                "BTCUSDT": "TRADING",
                "ETHUSDT": "BREAK",
                "SOLUSDT": "TRADING",
            }
            assert (await statuses("/dapi/v1/exchangeInfo", "contractStatus"))[
                "BTCUSD_PERP"
            ] == "CLOSE"
            assert (await statuses("/api/v3/exchangeInfo"))["SOLUSDT"] == "TRADING"
            rows = (
                await client.get(
                    f"http://{addr}/fapi/v1/klines",
                    params={"symbol": "SOLUSDT", "interval": "1m", "startTime": 0},
                )
            ).json()
            assert rows[0][0] == listed_at
            eth = (
                await client.get(
                    f"http://{addr}/fapi/v1/klines",
                    params={"symbol": "ETHUSDT", "interval": "1m", "limit": 3},
                )
            ).json()
            assert eth[-1][0] == listed_at - MINUTE  # history stays, nothing after
            assert sim.market_of("usdm").bar("ETHUSDT", "1m", listed_at) is None


def test_simulator_flags_for_markets(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    (tmp_path / "um").mkdir()
    config = config_from_args(
        parser.parse_args(
            [
                "--symbols",
                "btcusdt,usdm:ethusdt,coinm:btcusd_perp",
                "--synthetic",
                "spot=2,usdm=1,coinm=1",
                "--data",
                f"usdm:{tmp_path / 'um'}",
                "--list",
                "usdm:SOLUSDT@600",
                "--delist",
                "coinm:btcusd_perp@2024-01-01T01:00Z",
                "--futures-weight-limit",
                "100",
                "--stats-request-limit",
                "7",
            ]
        )
    )
    assert config.symbols == ("BTCUSDT", "usdm:ETHUSDT", "coinm:BTCUSD_PERP")
    assert config.symbols_of("spot") == ("BTCUSDT", "SP0001USDT", "SP0002USDT")
    assert config.symbols_of("usdm") == ("ETHUSDT", "UM0001USDT")
    assert config.symbols_of("coinm") == ("BTCUSD_PERP", "CM0001USD_PERP")
    assert config.data_dir is None
    assert config.data_dir_of("usdm") == str(tmp_path / "um")
    assert config.listings == (
        ListingChange(market="usdm", symbol="SOLUSDT", after_s=600.0),
        ListingChange(
            market="coinm",
            symbol="BTCUSD_PERP",
            listed=False,
            at_ms=parse_utc_ms("2024-01-01T01:00Z", "t"),
        ),
    )
    assert (config.futures_weight_limit, config.stats_request_limit) == (100, 7)
    # Without --symbols: BTCUSDT and ETHUSDT, unless generated symbols were asked for instead.
    assert config_from_args(parser.parse_args([])).symbols == ("BTCUSDT", "ETHUSDT")
    generated = config_from_args(parser.parse_args(["--synthetic", "spot=2"]))
    assert generated.symbols_of("spot") == ("SP0001USDT", "SP0002USDT")
    for bad in (
        ["--symbols", "perp:BTCUSDT"],
        ["--symbols", "coinm:BTCUSD"],
        ["--synthetic", "usdm=x"],
        ["--list", "SOLUSDT"],
        ["--delist", "usdm:SOLUSDT@nope"],
        ["--data", "usdm:/no/such/dir"],
        ["--stats-request-limit", "0"],
    ):
        with pytest.raises(SettingsError):
            config_from_args(parser.parse_args(bad))


async def test_synthetic_symbols_per_market() -> None:
    with trio.fail_after(10):
        async with (
            _simulator(symbols=(), synthetic=(("usdm", 3), ("coinm", 2))) as (sim, addr),
            httpx.AsyncClient() as client,
        ):
            assert sim.market.symbols == ()
            body = (await client.get(f"http://{addr}/fapi/v1/exchangeInfo")).json()
            assert [s["symbol"] for s in body["symbols"]] == [
                "UM0001USDT",
                "UM0002USDT",
                "UM0003USDT",
            ]
            body = (await client.get(f"http://{addr}/dapi/v1/exchangeInfo")).json()
            assert [s["symbol"] for s in body["symbols"]] == ["CM0001USD_PERP", "CM0002USD_PERP"]


# --- archives --------------------------------------------------------------------------------


@pytest.mark.shared_data
async def test_futures_archives_replay_the_real_files(shared_data: Path) -> None:
    um = shared_data / "vision" / "futures-um"
    now = parse_utc_ms("2025-03-10", "now")
    with trio.fail_after(30):
        async with (
            _simulator(data_dirs=(("usdm", str(um)),), start_ms=now) as (sim, addr),
            httpx.AsyncClient() as http,
        ):
            assert set(sim.market_of("usdm").symbols) == {"AVAXUSDT", "BTCUSDT"}
            client = ArchiveClient(http, f"http://{addr}", market="usdm")
            verified = await client.fetch("monthly", "AVAXUSDT", "1m", "2025-02")
            assert verified is not None
            with verified:
                verified.file.seek(0)
                with zipfile.ZipFile(verified.file) as archive:
                    text = archive.read("AVAXUSDT-1m-2025-02.csv").decode()
            original = (um / "AVAXUSDT-1m-2025-02.csv").read_text()
            assert text.splitlines()[0] == original.splitlines()[0]  # the header row
            assert text.splitlines()[1:] == original.splitlines()[1:]
            day = await client.fetch("daily", "BTCUSDT", "5m", "2025-01-31")
            assert day is not None
            day.close()
            # Spot has no such file; COIN-M's synthetic candles are archived with a header too.
            spot = ArchiveClient(http, f"http://{addr}")
            assert await spot.fetch("monthly", "AVAXUSDT", "1m", "2025-02") is None
            coinm = ArchiveClient(http, f"http://{addr}", market="coinm")
            verified = await coinm.fetch("daily", "BTCUSD_PERP", "1h", "2025-03-01")
            assert verified is not None
            with verified:
                verified.file.seek(0)
                with zipfile.ZipFile(verified.file) as archive:
                    lines = archive.read("BTCUSD_PERP-1h-2025-03-01.csv").decode().splitlines()
            assert lines[0] == original.splitlines()[0]
            assert len(lines) == 25
            assert lines[1].split(",")[0] == str(parse_utc_ms("2025-03-01", "t"))
            rows = (
                await http.get(
                    f"http://{addr}/fapi/v1/klines",
                    params={"symbol": "BTCUSDT", "interval": "5m", "limit": 1500},
                )
            ).json()
            assert len(rows) == 1500
            assert rows[-1][0] == parse_utc_ms("2025-01-31T23:55", "t")


# --- futures statistics ----------------------------------------------------------------------

RATIOS = ("topLongShortPositionRatio", "topLongShortAccountRatio", "globalLongShortAccountRatio")


async def test_usdm_statistics_rows_are_aligned_deterministic_and_kept_30_days() -> None:
    with trio.fail_after(15):
        async with _simulator(speed=1.0) as (_, addr), httpx.AsyncClient() as http:
            rest = RestClient(http, f"http://{addr}", market=USDM)
            latest = await rest.futures_data(
                "openInterestHist", {"symbol": "BTCUSDT", "period": "5m"}
            )
            assert len(latest) == 30  # the default limit
            step = 300_000
            # The newest row is the last period that ended; every row on the period's grid.
            assert latest[-1].timestamp == (START // step) * step - step
            assert [r.timestamp for r in latest] == [
                latest[0].timestamp + i * step for i in range(30)
            ]
            for row in latest:
                assert isinstance(row, OpenInterestRow)
                assert row.symbol == "BTCUSDT"
                assert "." in row.sumOpenInterest
                assert "." in row.sumOpenInterestValue
            for endpoint in RATIOS:
                rows = await rest.futures_data(
                    endpoint,
                    {"symbol": "BTCUSDT", "period": "1h", "limit": "500", "startTime": "0"},
                )
                # 30 days back at most, 500 rows a page.
                assert len(rows) == 500
                assert rows[0].timestamp == START - START % 3_600_000 - 30 * 24 * 3_600_000 + (
                    3_600_000
                )
                for row in rows:
                    assert isinstance(row, RatioRow)
                    long_share, short_share = float(row.long_share), float(row.short_share)
                    assert abs(long_share + short_share - 1) < 1e-9
                    assert abs(float(row.longShortRatio) - long_share / short_share) < 1e-4
            # The same timestamp gives the same value whatever the period; bounds are kept.
            one_hour = await rest.futures_data(
                "topLongShortAccountRatio",
                {
                    "symbol": "BTCUSDT",
                    "period": "5m",
                    "startTime": str(latest[0].timestamp),
                    "endTime": str(latest[0].timestamp + 3_600_000 - 1),
                    "limit": "500",
                },
            )
            assert len(one_hour) == 12
            raw = (
                await http.get(
                    f"http://{addr}/futures/data/topLongShortAccountRatio",
                    params={"symbol": "BTCUSDT", "period": "5m", "limit": 1},
                )
            ).json()
            assert list(raw[0]) == [
                "symbol",
                "longShortRatio",
                "longAccount",
                "shortAccount",
                "timestamp",
            ]
        async with _simulator(speed=1.0) as (_, addr), httpx.AsyncClient() as http:
            again = await RestClient(http, f"http://{addr}", market=USDM).futures_data(
                "openInterestHist", {"symbol": "BTCUSDT", "period": "5m"}
            )
            assert again == latest


async def test_coinm_statistics_by_pair_and_bad_requests() -> None:
    with trio.fail_after(15):
        async with _simulator() as (_, addr), httpx.AsyncClient() as http:
            url = f"http://{addr}/futures/data/"
            r = await http.get(url + "topLongShortPositionRatio", params={"pair": "BTCUSD", "period": "15m", "limit": 2})  # fmt: skip
            rows = r.json()
            assert [list(row) for row in rows] == [
                ["pair", "longShortRatio", "longPosition", "shortPosition", "timestamp"]
            ] * 2
            assert rows[1]["timestamp"] - rows[0]["timestamp"] == 900_000
            r = await http.get(url + "openInterestHist", params={"pair": "BTCUSD", "contractType": "PERPETUAL", "period": "5m", "limit": 3})  # fmt: skip
            rows = r.json()
            assert [(x["pair"], x["contractType"]) for x in rows] == [("BTCUSD", "PERPETUAL")] * 3
            assert rows[0]["sumOpenInterest"].isdigit()  # whole contracts
            all_types = (await http.get(url + "openInterestHist", params={"pair": "BTCUSD", "contractType": "ALL", "period": "5m", "limit": 3})).json()  # fmt: skip
            assert int(all_types[0]["sumOpenInterest"]) > int(rows[0]["sumOpenInterest"])
            none = (await http.get(url + "openInterestHist", params={"pair": "BTCUSD", "contractType": "NEXT_QUARTER", "period": "5m"})).json()  # fmt: skip
            assert none == []
            # The same paths with an explicit market prefix.
            prefixed = (await http.get(f"http://{addr}/coinm/futures/data/openInterestHist", params={"pair": "BTCUSD", "contractType": "PERPETUAL", "period": "5m", "limit": 3})).json()  # fmt: skip
            assert prefixed == rows
            bad = {
                "period": ({"symbol": "BTCUSDT", "period": "3m"}, -1120),
                "no period": ({"symbol": "BTCUSDT"}, -1102),
                "limit": ({"symbol": "BTCUSDT", "period": "5m", "limit": 501}, -1130),
                "symbol": ({"symbol": "NOPEUSDT", "period": "5m"}, -1121),
                "spot symbol": ({"symbol": "SOLUSDT", "period": "5m"}, -1121),
                "no type": ({"pair": "BTCUSD", "period": "5m"}, -1102),
            }
            for name, (params, code) in bad.items():
                r = await http.get(url + "openInterestHist", params=params)
                assert (r.status_code, r.json()["code"]) == (400, code), name
            assert (await http.get(url + "takerBuySellVol")).status_code == 404


async def test_statistics_have_a_request_limit_of_their_own() -> None:
    with trio.fail_after(15):
        async with (
            _simulator(stats_request_limit=3, futures_weight_limit=1000) as (sim, addr),
            httpx.AsyncClient() as http,
        ):
            url = f"http://{addr}/futures/data/globalLongShortAccountRatio"
            params = {"symbol": "BTCUSDT", "period": "5m"}
            statuses = [(await http.get(url, params=params)).status_code for _ in range(5)]
            assert statuses == [200, 200, 200, 429, 429]
            assert (await http.get(f"http://{addr}/fapi/v1/ping")).status_code == 200
            r = await http.get(f"http://{addr}/fapi/v1/ping")
            assert r.headers["x-mbx-used-weight-1m"] == "2"  # the statistics spent no weight
            stats = sim.statistics()
            assert (stats.futures_data_requests, stats.futures_data_refused) == (5, 2)


async def test_the_futures_rest_client_pages_1500_rows_within_a_tight_limit() -> None:
    with trio.fail_after(20):
        async with (
            _simulator(speed=1.0, futures_weight_limit=40, weight_window=1.0) as (sim, addr),
            httpx.AsyncClient() as http,
        ):
            rest = RestClient(
                http, f"http://{addr}", market=USDM, budget=WeightBudget(limit=40, window=1.0)
            )
            start = (START // MINUTE - 6 * 1500 - 10) * MINUTE
            pages: list[int] = []

            async def on_page(rows: list[Any]) -> None:
                pages.append(len(rows))

            total = await rest.klines_range(
                "BTCUSDT", "1m", start_ms=start, end_ms=start + 6 * 1500 * MINUTE, on_page=on_page
            )
            assert total == 9000
            assert pages == [1500] * 6
            usdm = sim.market_statistics("usdm")
            assert (usdm.rest_requests, usdm.weight_used) == (6, 60)  # 10 a page
            assert (usdm.rest_429, usdm.rest_418) == (0, 0)
