"""The fake exchange's streams beside klines over real sockets: aggTrade, bookTicker, ticker and
depth20 frames that klinetrio's own decoders read, trades that REST and the archives repeat
exactly, a replay of a real aggTrades archive, and faults on every kind.

As in ``test_simulate``, each test runs its own simulator on 127.0.0.1:0 with a fast exchange
clock, so nothing waits for long real times.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from klinetrio.binance import wire_kinds as wk
from klinetrio.binance.markets import MARKETS
from klinetrio.binance.rest import RestClient
from klinetrio.core.models import parse_utc_ms
from klinetrio.simulate import Simulator, SimulatorConfig
from klinetrio.simulate.market import parse_units

START = 1_704_067_230_000  # 2024-01-01T00:00:30Z
SYMBOLS = ("BTCUSDT", "ETHUSDT", "usdm:BTCUSDT", "coinm:BTCUSD_PERP")
BASES = {"spot": "", "usdm": "/usdm", "coinm": "/coinm"}
REST = {"spot": "/api/v3", "usdm": "/fapi/v1", "coinm": "/dapi/v1"}
SUFFIXES = ("aggTrade", "bookTicker", "ticker", "depth20", "depth20@100ms")


def _kind(stream: str) -> wk.Kind:
    suffix = stream.split("@", 1)[1]
    return "depth" if suffix.startswith("depth") else wk.KIND_OF_SUFFIX[suffix]


@asynccontextmanager
async def _simulator(**overrides: Any) -> AsyncIterator[tuple[Simulator, str]]:
    values: dict[str, Any] = {
        "port": 0, "start_ms": START, "speed": 600.0, "seed": 7, "symbols": SYMBOLS,
    }  # fmt: skip
    values.update(overrides)
    sim = Simulator(SimulatorConfig(**values))
    async with trio.open_nursery() as nursery:
        port = await nursery.start(sim.serve)
        yield sim, f"127.0.0.1:{port}"
        nursery.cancel_scope.cancel()


async def _frames_of_every_kind(ws: WebSocketConnection, streams: set[str]) -> dict[str, bytes]:
    first: dict[str, bytes] = {}
    while set(first) != streams:
        message = await ws.get_message()
        raw = message.encode() if isinstance(message, str) else message
        envelope = wk.envelope_decoder.decode(raw)
        first.setdefault(envelope.stream, bytes(envelope.data))
    return first


@pytest.mark.parametrize(("market", "symbol"), [("spot", "btcusdt"), ("usdm", "btcusdt"),
                                                ("coinm", "btcusd_perp")])  # fmt: skip
async def test_every_kind_decodes_with_klinetrios_own_structs(market: str, symbol: str) -> None:
    streams = {f"{symbol}@{suffix}" for suffix in SUFFIXES}
    with trio.fail_after(20):
        async with _simulator(speed=60.0, book_rate=20.0, depth_rate=20.0) as (_, addr):
            url = f"ws://{addr}{BASES[market]}/stream?streams={'/'.join(sorted(streams))}"
            async with open_websocket_url(url) as ws:
                first = await _frames_of_every_kind(ws, streams)
    for stream, data in first.items():
        event = wk.decode_data(_kind(stream), data, market)
        fields = json.loads(data)
        if isinstance(event, wk.AggTrade):
            assert ("M" in fields) is (market == "spot")  # futures frames carry no M
            assert event.symbol == symbol.upper()
            assert event.event_time >= event.trade_time
        elif isinstance(event, wk.BookTicker):
            assert parse_units(event.bid_price) < parse_units(event.ask_price)
            # Spot frames carry no event time (as the real ones); futures carry E and T.
            assert ("E" in fields) is (market != "spot")
            assert ("T" in fields) is (market != "spot")
        elif isinstance(event, wk.Ticker):
            assert parse_units(event.low) <= parse_units(event.last) <= parse_units(event.high)
            assert event.trades == event.last_trade_id - event.first_trade_id + 1
            assert event.close_time - event.open_time == 86_400_000
        elif isinstance(event, wk.PartialDepth):
            assert market == "spot"
            assert len(event.bids) == len(event.asks) == 20
            assert parse_units(event.bids[0][0]) < parse_units(event.asks[0][0])
        else:
            assert isinstance(event, wk.FuturesPartialDepth)
            assert market != "spot"
            assert event.symbol == symbol.upper()
            assert len(event.bids) == 20
            assert ("ps" in fields) is (market == "coinm")


async def test_raw_streams_and_subscribe_serve_the_kinds_too() -> None:
    with trio.fail_after(20):
        async with _simulator(speed=60.0, book_rate=20.0) as (_, addr):
            async with open_websocket_url(f"ws://{addr}/ws/ethusdt@bookTicker") as ws:
                event = wk.book_ticker_decoder.decode(await ws.get_message())
                assert event.symbol == "ETHUSDT"
                assert event.event_time == 0
            async with open_websocket_url(f"ws://{addr}/usdm/stream") as ws:
                request = {"method": "SUBSCRIBE", "params": ["btcusdt@aggTrade"], "id": 1}
                await ws.send_message(json.dumps(request))
                reply = json.loads(await ws.get_message())
                assert reply == {"result": None, "id": 1}
                message = await ws.get_message()
                envelope = wk.envelope_decoder.decode(message)
                assert envelope.stream == "btcusdt@aggTrade"
                trade = wk.agg_trade_decoder.decode(envelope.data)
                assert trade.symbol == "BTCUSDT"
                ids = []
                for _ in range(5):
                    message = await ws.get_message()
                    ids.append(wk.agg_trade_decoder.decode(wk.envelope_decoder.decode(message).data).agg_id)  # fmt: skip
                assert ids == list(range(trade.agg_id + 1, trade.agg_id + 6))


async def _drain(ws: WebSocketConnection) -> list[str]:
    """Every message until the server drops the connection."""
    messages = []
    try:
        while True:
            message = await ws.get_message()
            messages.append(message if isinstance(message, str) else message.decode())
    except ConnectionClosed:
        return messages


async def _stream_trades(url: str, count: int) -> list[wk.AggTrade]:
    trades: list[wk.AggTrade] = []
    async with open_websocket_url(url) as ws:
        while len(trades) < count:
            envelope = wk.envelope_decoder.decode(await ws.get_message())
            trades.append(wk.agg_trade_decoder.decode(envelope.data))
    return trades


@pytest.mark.parametrize("market", ["spot", "usdm", "coinm"])
async def test_trades_on_the_stream_are_the_trades_rest_serves_by_id(market: str) -> None:
    symbol = "BTCUSD_PERP" if market == "coinm" else "BTCUSDT"
    with trio.fail_after(30):
        async with _simulator(trade_rate=5.0) as (_, addr), httpx.AsyncClient() as http:
            url = f"ws://{addr}{BASES[market]}/stream?streams={symbol.lower()}@aggTrade"
            streamed = await _stream_trades(url, 2_500)
            ids = [t.agg_id for t in streamed]
            assert ids == list(range(ids[0], ids[0] + len(ids)))
            assert all(b.first_trade_id == a.last_trade_id + 1 for a, b in itertools.pairwise(streamed))  # fmt: skip
            rest = RestClient(http, f"http://{addr}", market=MARKETS[market])
            served: list[wk.RestAggTrade] = []
            while len(served) < len(streamed):
                page = await rest.agg_trades(symbol, from_id=ids[0] + len(served))
                assert 0 < len(page) <= 1000
                served.extend(page)
            served = served[: len(streamed)]
    assert [t.row(market, symbol) for t in served] == [t.row(market, "rest") for t in streamed]
    weight = MARKETS[market].agg_trades_weight
    assert rest.statistics().weight_used == weight * 3
    assert rest.statistics().server_used_weight == weight * 3


async def test_trades_by_time_windows_and_error_bodies() -> None:
    with trio.fail_after(20):
        async with _simulator(speed=1.0) as (_, addr), httpx.AsyncClient() as http:
            api = f"http://{addr}/api/v3/aggTrades"
            start = START - 600_000
            r = await http.get(api, params={"symbol": "BTCUSDT", "startTime": start, "endTime": start + 3_600_000})  # fmt: skip
            window = r.json()
            assert r.headers["X-MBX-USED-WEIGHT-1M"] == "4"
            assert len(window) == 500  # the default limit
            assert all(start <= t["T"] for t in window)
            ids = [t["a"] for t in window]
            assert ids == list(range(ids[0], ids[0] + 500))
            by_id = (await http.get(api, params={"symbol": "BTCUSDT", "fromId": ids[10], "limit": 5})).json()  # fmt: skip
            assert by_id == window[10:15]
            latest = (await http.get(api, params={"symbol": "BTCUSDT", "limit": 3})).json()
            now = (await http.get(f"http://{addr}/api/v3/time")).json()["serverTime"]
            assert len(latest) == 3
            assert latest[-1]["T"] <= now
            assert [t["a"] for t in latest] == [latest[0]["a"] + i for i in range(3)]
            too_long = await http.get(api, params={"symbol": "BTCUSDT", "startTime": start, "endTime": start + 3_600_001})  # fmt: skip
            assert too_long.status_code == 400
            assert too_long.json()["code"] == -1127
            too_many = await http.get(api, params={"symbol": "BTCUSDT", "limit": 1001})
            assert (too_many.status_code, too_many.json()["code"]) == (400, -1130)
            unknown = await http.get(api, params={"symbol": "NOPEUSDT"})
            assert unknown.json() == {"code": -1121, "msg": "Invalid symbol."}
            missing = await http.get(api)
            assert missing.json()["code"] == -1102
            bad = await http.get(api, params={"symbol": "BTCUSDT", "fromId": "x"})
            assert bad.json()["code"] == -1100
            future = (await http.get(api, params={"symbol": "BTCUSDT", "fromId": latest[-1]["a"] + 1000})).json()  # fmt: skip
            assert future == []  # trades that have not happened yet are not served


async def test_depth_and_ticker_rest_weights_and_shapes() -> None:
    with trio.fail_after(20):
        async with _simulator(speed=1.0) as (_, addr), httpx.AsyncClient() as http:
            used = []
            for limit, weight in ((5, 5), (100, 5), (500, 25), (1000, 50), (5000, 250)):
                r = await http.get(f"http://{addr}/api/v3/depth", params={"symbol": "BTCUSDT", "limit": limit})  # fmt: skip
                depth = wk.rest_depth_decoder.decode(r.content)
                assert len(depth.bids) == len(depth.asks) == limit
                used.append(int(r.headers["X-MBX-USED-WEIGHT-1M"]))
                assert used[-1] - (used[-2] if len(used) > 1 else 0) == weight
            r = await http.get(f"http://{addr}/fapi/v1/depth", params={"symbol": "BTCUSDT", "limit": 7})  # fmt: skip
            assert r.json()["code"] == -1130  # futures allow 5, 10, 20, 50, 100, 500, 1000
            r = await http.get(f"http://{addr}/fapi/v1/depth", params={"symbol": "BTCUSDT"})
            futures_depth = wk.rest_depth_decoder.decode(r.content)
            assert len(futures_depth.bids) == 500
            assert futures_depth.T > 0
            assert r.headers["X-MBX-USED-WEIGHT-1M"] == "12"  # 10, and 2 for the refused one
            r = await http.get(f"http://{addr}/api/v3/ticker/24hr", params={"symbol": "ETHUSDT"})
            ticker = wk.rest_ticker_decoder.decode(r.content)
            assert ticker.count == ticker.lastId - ticker.firstId + 1
            assert ticker.closeTime - ticker.openTime == 86_400_000
            everything = (await http.get(f"http://{addr}/api/v3/ticker/24hr")).json()
            assert [t["symbol"] for t in everything] == ["BTCUSDT", "ETHUSDT"]
            r = await http.get(f"http://{addr}/dapi/v1/ticker/24hr", params={"symbol": "BTCUSD_PERP"})  # fmt: skip
            assert r.json()["pair"] == "BTCUSD"
            assert "baseVolume" in r.json()
            assert r.headers["X-MBX-USED-WEIGHT-1M"] == "1"


async def test_trade_rest_under_the_weight_limit_answers_429_then_418() -> None:
    with trio.fail_after(20):
        async with _simulator(weight_limit=10, weight_window=30.0) as (sim, addr), httpx.AsyncClient() as http:  # fmt: skip
            statuses = []
            for _ in range(8):
                r = await http.get(f"http://{addr}/api/v3/aggTrades", params={"symbol": "BTCUSDT"})
                statuses.append(r.status_code)
    assert statuses[:2] == [200, 200]
    assert 429 in statuses
    assert statuses[-1] == 418
    assert sim.statistics().rest_429 >= 1
    assert sim.market_statistics("spot").rest_418 >= 1


def _pepe_csv(shared_data: Path) -> tuple[Path, bytes]:
    directory = shared_data / "vision" / "spot-aggTrades"
    with zipfile.ZipFile(directory / "PEPEUSDT-aggTrades-2024-10-27.zip") as archive:
        return directory, archive.read("PEPEUSDT-aggTrades-2024-10-27.csv")


async def test_replay_of_the_real_pepe_archive_streams_all_its_trades_in_order(
    shared_data: Path,
) -> None:
    directory, original = _pepe_csv(shared_data)
    recorded = original.decode().splitlines()
    day = parse_utc_ms("2024-10-27", "test")
    with trio.fail_after(60):
        # An hour before the first trade (42 ms of real time) leaves room to connect.
        async with _simulator(
            data_dir=str(directory), start_ms=day - 3_600_000, speed=86_400.0, symbols=("BTCUSDT",)
        ) as (_, addr):
            streamed = await _stream_trades(f"ws://{addr}/stream?streams=pepeusdt@aggTrade", 57_229)  # fmt: skip
            async with httpx.AsyncClient() as http:
                r = await http.get(f"http://{addr}/api/v3/aggTrades", params={"symbol": "PEPEUSDT", "fromId": 60953854, "limit": 1000})  # fmt: skip
                first_page = msgspec.json.decode(r.content)
                name = "PEPEUSDT-aggTrades-2024-10-27.zip"
                path = f"http://{addr}/data/spot/daily/aggTrades/PEPEUSDT/{name}"
                body = (await http.get(path)).content
                checksum = (await http.get(path + ".CHECKSUM")).text
                klines = (await http.get(f"http://{addr}/api/v3/klines", params={"symbol": "PEPEUSDT", "interval": "1h", "startTime": day, "limit": 24})).json()  # fmt: skip
    assert len(streamed) == 57_229
    as_csv = [
        f"{t.agg_id},{t.price},{t.quantity},{t.first_trade_id},{t.last_trade_id},{t.trade_time},"
        f"{t.buyer_is_maker},{t.best_match}"
        for t in streamed
    ]
    assert as_csv == recorded
    assert [t["a"] for t in first_page] == list(range(60953854, 60954854))
    assert first_page[0] == {"a": 60953854, "p": "0.00000908", "q": "3591711.00", "f": 209942017,
                             "l": 209942017, "T": 1729987202368, "m": False, "M": True}  # fmt: skip
    assert checksum == f"{hashlib.sha256(body).hexdigest()}  {name}"
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert archive.namelist() == ["PEPEUSDT-aggTrades-2024-10-27.csv"]
        assert archive.read("PEPEUSDT-aggTrades-2024-10-27.csv") == original
    # Klines made of the trades: 24 hours, volumes adding up to the trades' quantities.
    assert len(klines) == 24
    total = sum(parse_units(row[5]) for row in klines)
    assert total == sum(parse_units(line.split(",")[2]) for line in recorded)


@pytest.mark.parametrize(("market", "prefix"), [("spot", "spot"), ("usdm", "futures/um"),
                                                ("coinm", "futures/cm")])  # fmt: skip
async def test_trade_archives_round_trip_with_rest_and_checksum(market: str, prefix: str) -> None:
    symbol = "BTCUSD_PERP" if market == "coinm" else "BTCUSDT"
    name = f"{symbol}-aggTrades-2023-12-31.zip"
    url_path = f"/data/{prefix}/daily/aggTrades/{symbol}/{name}"
    with trio.fail_after(30):
        async with _simulator(speed=1.0, trade_rate=0.2) as (sim, addr), httpx.AsyncClient() as http:  # fmt: skip
            body = (await http.get(f"http://{addr}{url_path}")).content
            checksum = (await http.get(f"http://{addr}{url_path}.CHECKSUM")).text
            today = await http.get(f"http://{addr}/data/{prefix}/daily/aggTrades/{symbol}/{symbol}-aggTrades-2024-01-01.zip")  # fmt: skip
            with zipfile.ZipFile(io.BytesIO(body)) as archive:
                text = archive.read(name.replace(".zip", ".csv")).decode()
            lines = text.splitlines()
            if market != "spot":
                assert lines.pop(0) == (
                    "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,"
                    "is_buyer_maker"
                )
            first_id = int(lines[0].split(",")[0])
            rest = RestClient(http, f"http://{addr}", market=MARKETS[market])
            page = await rest.agg_trades(symbol, from_id=first_id)
            day = parse_utc_ms("2023-12-31", "test")
            by_time = await rest.agg_trades(symbol, start_ms=day, end_ms=day + 3_600_000 - 1)
    assert today.status_code == 404  # the day has not ended on the exchange clock
    assert checksum == f"{hashlib.sha256(body).hexdigest()}  {name}"
    assert len(lines) == round(0.2 * 86_400)
    ids = [int(line.split(",")[0]) for line in lines]
    assert ids == list(range(first_id, first_id + len(ids)))
    spot = market == "spot"
    expected = [
        f"{t.agg_id},{t.price},{t.quantity},{t.first_trade_id},{t.last_trade_id},{t.trade_time},"
        + (f"{t.buyer_is_maker},{t.best_match}" if spot else str(t.buyer_is_maker).lower())
        for t in page
    ]
    assert lines[: len(page)] == expected
    assert by_time == page[: len(by_time)]
    assert len(by_time) == round(0.2 * 3_600)
    assert sim.statistics().archive_files_served == 1


async def test_drops_and_garbage_hit_every_kind_and_rest_still_has_the_lost_trades() -> None:
    streams = [f"btcusdt@{suffix}" for suffix in SUFFIXES] + ["btcusdt@kline_1m"]
    seen: dict[str, int] = {}
    unreadable: dict[str, int] = {}
    trades: list[wk.AggTrade] = []
    with trio.fail_after(30):
        async with _simulator(
            speed=60.0, book_rate=20.0, depth_rate=20.0, drop_after=400, garbage=0.2, seed=3
        ) as (sim, addr):
            url = f"ws://{addr}/stream?streams={'/'.join(streams)}"
            async with open_websocket_url(url) as ws:
                messages = await _drain(ws)
            for text in messages:
                stream = text.partition('"stream":"')[2].partition('"')[0]
                kind = "kline" if "@kline_" in stream else _kind(stream)
                seen[kind] = seen.get(kind, 0) + 1
                if kind == "kline":
                    continue
                try:
                    envelope = wk.envelope_decoder.decode(text)
                    event = wk.decode_data(kind, envelope.data, "spot")
                except msgspec.DecodeError:
                    unreadable[kind] = unreadable.get(kind, 0) + 1
                    continue
                if isinstance(event, wk.AggTrade):
                    trades.append(event)
            assert len(messages) == 400
            stats = sim.statistics()
            assert stats.dropped_connections == 1
            assert sum(stats.kind_frames_sent.values()) + stats.closed_frames_sent <= 400
            async with httpx.AsyncClient() as http:
                rest = RestClient(http, f"http://{addr}")
                page = await rest.agg_trades("BTCUSDT", from_id=trades[0].agg_id, limit=1000)
    assert set(seen) == {"kline", "aggTrade", "bookTicker", "ticker", "depth"}
    assert set(unreadable) >= {"aggTrade", "bookTicker", "depth"}
    # Garbled trades are gone from the stream, not from the exchange.
    received = {t.agg_id for t in trades}
    served = [t for t in page if t.agg_id <= trades[-1].agg_id]
    assert [t.agg_id for t in served] == list(range(trades[0].agg_id, trades[-1].agg_id + 1))
    assert len(served) > len(received)
    by_id = {t.agg_id: t for t in served}
    assert all(by_id[t.agg_id].row("spot", "BTCUSDT") == t.row("spot", "rest") for t in trades)


async def test_duplicates_repeat_trade_frames() -> None:
    with trio.fail_after(20):
        async with _simulator(duplicates=0.3) as (sim, addr):
            streamed = await _stream_trades(f"ws://{addr}/stream?streams=btcusdt@aggTrade", 300)
    ids = [t.agg_id for t in streamed]
    assert len(set(ids)) < len(ids)
    assert sorted(set(ids)) == list(range(ids[0], ids[0] + len(set(ids))))
    assert sim.statistics().duplicate_frames >= len(ids) - len(set(ids))


@pytest.mark.parametrize(
    ("market", "folder", "symbol", "day", "prefix"),
    [("usdm", "futures-um-daily", "APEUSDT", "2024-10-18", "futures/um"),
     ("coinm", "futures-cm-daily", "BTCUSD_PERP", "2026-05-08", "futures/cm")],
)  # fmt: skip
async def test_futures_trade_archives_replay_as_recorded(
    shared_data: Path, market: str, folder: str, symbol: str, day: str, prefix: str
) -> None:
    directory = shared_data / "vision" / folder
    name = f"{symbol}-aggTrades-{day}.zip"
    with zipfile.ZipFile(directory / name) as archive:
        original = archive.read(name.replace(".zip", ".csv"))
    rows = original.decode().splitlines()[1:]
    first_id = int(rows[0].split(",")[0])
    start = parse_utc_ms(day, "test") + 2 * 86_400_000
    with trio.fail_after(30):
        async with (
            _simulator(data_dirs=((market, str(directory)),), start_ms=start, speed=1.0) as (
                _,
                addr,
            ),
            httpx.AsyncClient() as http,
        ):
            rest = RestClient(http, f"http://{addr}", market=MARKETS[market])
            page = await rest.agg_trades(symbol, from_id=first_id + 10)
            path = f"http://{addr}/data/{prefix}/daily/aggTrades/{symbol}/{name}"
            body = (await http.get(path)).content
            checksum = (await http.get(path + ".CHECKSUM")).text
    assert [t.agg_id for t in page] == list(range(first_id + 10, first_id + 1010))
    assert [
        f"{t.agg_id},{t.price},{t.quantity},{t.first_trade_id},{t.last_trade_id},{t.trade_time},"
        f"{str(t.buyer_is_maker).lower()}"
        for t in page
    ] == rows[10:1010]
    assert checksum == f"{hashlib.sha256(body).hexdigest()}  {name}"
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert archive.read(name.replace(".zip", ".csv")) == original.replace(b"\r\n", b"\n")


async def test_monthly_trade_archive_holds_the_whole_month() -> None:
    name = "BTCUSDT-aggTrades-2023-12.zip"
    path = f"/data/spot/monthly/aggTrades/BTCUSDT/{name}"
    with trio.fail_after(60):
        # A month of 1m candles takes seconds to synthesize: more than httpx's default 5 s wait.
        async with _simulator(speed=1.0, trade_rate=1 / 60) as (_, addr), httpx.AsyncClient(timeout=50) as http:  # fmt: skip
            body = (await http.get(f"http://{addr}{path}")).content
            checksum = (await http.get(f"http://{addr}{path}.CHECKSUM")).text
            current = await http.get(f"http://{addr}/data/spot/monthly/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2024-01.zip")  # fmt: skip
    assert checksum == f"{hashlib.sha256(body).hexdigest()}  {name}"
    assert current.status_code == 404
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        lines = archive.read("BTCUSDT-aggTrades-2023-12.csv").decode().splitlines()
    assert len(lines) == 31 * 1440  # one trade a minute
    ids = [int(line.split(",")[0]) for line in lines]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    times = [int(line.split(",")[5]) for line in lines]
    assert parse_utc_ms("2023-12", "test") <= times[0]
    assert times[-1] < parse_utc_ms("2024-01", "test")


async def test_rest_client_agg_trades_sends_binances_parameters() -> None:
    seen: list[dict[str, str]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(dict(request.url.params))
        assert request.url.path == "/fapi/v1/aggTrades"
        body = [{"a": 7, "p": "1.5", "q": "2", "f": 9, "l": 10, "T": 1_700_000_000_000, "m": True}]
        return httpx.Response(200, content=msgspec.json.encode(body))

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        rest = RestClient(http, "http://exchange", market=MARKETS["usdm"])
        with trio.fail_after(10):
            page = await rest.agg_trades("btcusdt", from_id=7, limit=3)
            await rest.agg_trades("BTCUSDT", start_ms=1, end_ms=3_600_001)
        for bad in ({"limit": 1001}, {"limit": 0}, {"from_id": 1, "start_ms": 1},
                    {"start_ms": 1, "end_ms": 3_600_002}, {"start_ms": 5, "end_ms": 4}):  # fmt: skip
            with pytest.raises(ValueError, match=r"limit|from_id|hour|before"):
                await rest.agg_trades("BTCUSDT", **bad)
    assert page == [wk.RestAggTrade(7, "1.5", "2", 9, 10, 1_700_000_000_000, True)]
    assert seen == [
        {"symbol": "BTCUSDT", "limit": "3", "fromId": "7"},
        {"symbol": "BTCUSDT", "limit": "1000", "startTime": "1", "endTime": "3600001"},
    ]
    assert rest.statistics().weight_used == 40  # 20 a page on USD-M


def _quoted(shared_data: Path, test: str) -> list[str]:
    """The field names, in order, of the first quoted frame of ``test`` that is one event."""
    lines = (shared_data / "ws" / "quoted" / "crypto-msg-parser_binance.jsonl").read_text()
    for line in lines.splitlines():
        quoted = json.loads(line)
        data = json.loads(quoted["raw"]).get("data")
        if quoted.get("test") == test and isinstance(data, dict):
            return list(data)
    raise AssertionError(f"no quoted frame of {test}")


def _captured(shared_data: Path, path: str) -> list[str]:
    line = (shared_data / "ws" / path).read_text().splitlines()[0]
    return list(json.loads(line)["data"])


@pytest.mark.parametrize(("market", "symbol"), [("spot", "btcusdt"), ("usdm", "btcusdt"),
                                                ("coinm", "btcusd_perp")])  # fmt: skip
async def test_frames_have_the_fields_of_the_real_ones_in_their_order(
    shared_data: Path, market: str, symbol: str
) -> None:
    real = {
        "spot": {
            "aggTrade": _captured(shared_data, "spot/aggTrade_frames.jsonl"),
            "bookTicker": _captured(shared_data, "spot/bookTicker_frames.jsonl"),
            "ticker": _quoted(shared_data, "ticker::spot"),
            "depth20": _quoted(shared_data, "l2_topk::spot"),
        },
        "usdm": {
            "aggTrade": _captured(shared_data, "futures-um/aggTrade_frames.jsonl"),
            "bookTicker": _captured(shared_data, "futures-um/bookTicker_2021-07-22.jsonl"),
            "ticker": _quoted(shared_data, "ticker::linear_swap"),
            "depth20": _quoted(shared_data, "l2_topk::linear_swap"),
        },
        "coinm": {
            "aggTrade": _captured(shared_data, "futures-cm/aggTrade_2021-07-21.jsonl"),
            "bookTicker": _quoted(shared_data, "bbo::inverse_swap"),
            "ticker": _quoted(shared_data, "ticker::inverse_swap"),
            "depth20": _quoted(shared_data, "l2_topk::inverse_swap"),
        },
    }[market]
    streams = {f"{symbol}@{suffix}" for suffix in real}
    with trio.fail_after(20):
        async with _simulator(speed=60.0, book_rate=20.0, depth_rate=20.0) as (_, addr):
            url = f"ws://{addr}{BASES[market]}/stream?streams={'/'.join(sorted(streams))}"
            async with open_websocket_url(url) as ws:
                first = await _frames_of_every_kind(ws, streams)
    for suffix, fields in real.items():
        assert list(json.loads(first[f"{symbol}@{suffix}"])) == fields, suffix


def _captured_depth_fields(shared_data: Path, session: str) -> list[str]:
    line = next(iter(sorted((shared_data / "capture" / "cryptofeed" / session).glob("*.http.*"))))
    body = line.read_text().splitlines()[0].split(": ", 1)[1]
    return list(json.loads(body))


async def test_rest_bodies_have_the_fields_of_the_real_ones_in_their_order(
    shared_data: Path,
) -> None:
    rest = shared_data / "rest" / "spot"
    real_trade = list(json.loads((rest / "aggTrades_BTCUSDT_2021-10-22.json").read_text())[0])
    real_depth = list(json.loads((rest / "depth_BTCUSDT_limit10_2021-10-22.json").read_text()))
    real_ticker = list(json.loads((rest / "ticker24hr_BTCUSDT_2021-10-22.json").read_text()))
    with trio.fail_after(20):
        async with _simulator(speed=1.0) as (_, addr), httpx.AsyncClient() as http:

            async def get(path: str, **params: Any) -> Any:
                return (await http.get(f"http://{addr}{path}", params=params)).json()

            trade = (await get("/api/v3/aggTrades", symbol="BTCUSDT", limit=1))[0]
            futures_trade = (await get("/fapi/v1/aggTrades", symbol="BTCUSDT", limit=1))[0]
            depth = await get("/api/v3/depth", symbol="BTCUSDT", limit=10)
            usdm_depth = await get("/fapi/v1/depth", symbol="BTCUSDT", limit=10)
            coinm_depth = await get("/dapi/v1/depth", symbol="BTCUSD_PERP", limit=10)
            ticker = await get("/api/v3/ticker/24hr", symbol="BTCUSDT")
    assert list(trade) == real_trade
    assert list(futures_trade) == [f for f in real_trade if f != "M"]
    assert list(depth) == real_depth
    assert list(usdm_depth) == _captured_depth_fields(shared_data, "usdm-2021-07-22")
    assert list(coinm_depth) == _captured_depth_fields(shared_data, "coinm-2021-07-21")
    assert list(ticker) == real_ticker
