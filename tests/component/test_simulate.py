"""The fake exchange over real sockets: REST bodies and limits, streams, replay, and faults.

Every test runs its own simulator on 127.0.0.1:0 with a fast exchange clock (``speed=600``: a 1m
candle closes every 0.1 s), so nothing waits for long real times.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio
import wsproto
import wsproto.events as we
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from klinetrio.binance import wire
from klinetrio.core.models import datetime_to_ms
from klinetrio.simulate import Simulator, SimulatorConfig

DATA = Path(__file__).parents[2] / ".." / "shared" / "data"
SPOT = DATA / "vision" / "spot"
START = 1_704_067_230_000  # 2024-01-01T00:00:30Z, mid-way through a 1m candle
MINUTE = 60_000


def _ms(text: str) -> int:
    return datetime_to_ms(datetime.fromisoformat(text))


def _config(**overrides: Any) -> SimulatorConfig:
    values: dict[str, Any] = {"port": 0, "start_ms": START, "speed": 600.0, "seed": 7}
    values.update(overrides)
    return SimulatorConfig(**values)


@asynccontextmanager
async def _simulator(**overrides: Any) -> AsyncIterator[tuple[Simulator, str]]:
    sim = Simulator(_config(**overrides))
    async with trio.open_nursery() as nursery:
        port = await nursery.start(sim.serve)
        yield sim, f"127.0.0.1:{port}"
        nursery.cancel_scope.cancel()


async def _klines(client: httpx.AsyncClient, addr: str, **params: Any) -> httpx.Response:
    return await client.get(f"http://{addr}/api/v3/klines", params=params)


async def _next_kline(ws: WebSocketConnection, closed: bool | None = None) -> dict[str, Any]:
    """The next kline event (unwrapped from a combined envelope), optionally closed or not."""
    while True:
        message = json.loads(await ws.get_message())
        event = message.get("data", message)
        if event.get("e") == "kline" and (closed is None or event["k"]["x"] is closed):
            return dict(event)


async def _drain(ws: WebSocketConnection) -> list[str]:
    """Every message until the server closes the connection."""
    messages = []
    try:
        while True:
            messages.append(str(await ws.get_message()))
    except ConnectionClosed:
        return messages


def _as_rest_row(k: dict[str, Any]) -> list[Any]:
    return [k["t"], k["o"], k["h"], k["l"], k["c"], k["v"], k["T"], k["q"], k["n"], k["V"], k["Q"], "0"]  # fmt: skip


# --- REST --------------------------------------------------------------------------------------


async def test_klines_pagination_limit_and_end_time() -> None:
    with trio.fail_after(10):
        async with _simulator(speed=1.0) as (_, addr), httpx.AsyncClient() as client:
            start = START - 30_000 - 2000 * MINUTE
            page1 = (await _klines(client, addr, symbol="BTCUSDT", interval="1m", startTime=start, limit=1000)).json()  # fmt: skip
            assert len(page1) == 1000
            assert [row[0] for row in page1] == [start + i * MINUTE for i in range(1000)]
            page2 = (await _klines(client, addr, symbol="BTCUSDT", interval="1m", startTime=page1[-1][0] + 1, limit=1000)).json()  # fmt: skip
            assert page2[0][0] == page1[-1][0] + MINUTE
            assert page1[-1][4] == page2[0][1]  # a close equals the next open
            default = (await _klines(client, addr, symbol="BTCUSDT", interval="1m", startTime=start)).json()  # fmt: skip
            assert len(default) == 500
            window = (await _klines(client, addr, symbol="BTCUSDT", interval="1h", startTime=start + 1, endTime=start + 3 * 3_600_000)).json()  # fmt: skip
            assert len(window) == 3  # open times in [startTime, endTime]; start + 1 is mid-hour
            too_many = await _klines(client, addr, symbol="BTCUSDT", interval="1m", limit=1001)
            assert too_many.status_code == 400
            assert too_many.json()["code"] == -1130
            bad = await _klines(client, addr, symbol="BTCUSDT", interval="1m", startTime="x")
            assert bad.status_code == 400
            assert bad.json()["code"] == -1100


async def test_last_row_is_the_candle_in_progress() -> None:
    with trio.fail_after(10):
        async with _simulator(speed=1.0) as (_, addr), httpx.AsyncClient() as client:
            now = (await client.get(f"http://{addr}/api/v3/time")).json()["serverTime"]
            assert START <= now < START + 5000
            rows = (await _klines(client, addr, symbol="BTCUSDT", interval="1m", limit=5)).json()
            assert len(rows) == 5
            assert [r[0] for r in rows] == [START - 30_000 - i * MINUTE for i in range(4, -1, -1)]
            last = rows[-1]
            assert last[6] == last[0] + MINUTE - 1 > now  # closes in the future
            for row in rows[:-1]:
                assert row[6] < now
            low, high = float(last[3]), float(last[2])
            assert low <= float(last[1]) <= high
            assert low <= float(last[4]) <= high
            closed = (await _klines(client, addr, symbol="BTCUSDT", interval="1m", endTime=START - 30_001, limit=1)).json()  # fmt: skip
            assert closed[0][0] == START - 30_000 - MINUTE


async def test_unknown_symbol_and_interval_bodies() -> None:
    with trio.fail_after(10):
        async with _simulator() as (_, addr), httpx.AsyncClient() as client:
            r = await _klines(client, addr, symbol="NOPEUSDT", interval="1m")
            assert (r.status_code, r.content) == (400, b'{"code":-1121,"msg":"Invalid symbol."}')
            r = await _klines(client, addr, symbol="BTCUSDT", interval="7m")
            assert (r.status_code, r.content) == (400, b'{"code":-1120,"msg":"Invalid interval."}')
            r = await _klines(client, addr, interval="1m")
            assert r.json()["code"] == -1102
            assert (await client.get(f"http://{addr}/api/v3/ping")).json() == {}
            assert (await client.get(f"http://{addr}/nothing")).status_code == 404


async def test_weight_header_429_then_418() -> None:
    with trio.fail_after(10):
        async with _simulator(weight_limit=10) as (sim, addr), httpx.AsyncClient() as client:
            used = []
            for _ in range(5):
                r = await _klines(client, addr, symbol="BTCUSDT", interval="1m", limit=1)
                assert r.status_code == 200
                used.append(int(r.headers["x-mbx-used-weight-1m"]))
            assert used == [2, 4, 6, 8, 10]
            r = await _klines(client, addr, symbol="BTCUSDT", interval="1m", limit=1)
            assert r.status_code == 429
            assert int(r.headers["retry-after"]) >= 1
            assert r.json()["code"] == -1003
            assert r.json()["msg"].startswith("Too much request weight used; current limit is 10")
            statuses = [
                (await client.get(f"http://{addr}/api/v3/ping")).status_code for _ in range(4)
            ]
            assert statuses == [429, 429, 418, 418]
            r = await client.get(f"http://{addr}/api/v3/time")
            assert r.status_code == 418
            assert "IP banned until" in r.json()["msg"]
            assert int(r.headers["retry-after"]) > 60
            stats = sim.statistics()
            assert (stats.rest_429, stats.rest_418) == (3, 3)


async def test_exchange_info() -> None:
    with trio.fail_after(10):
        async with _simulator(weight_limit=1234) as (_, addr), httpx.AsyncClient() as client:
            r = await client.get(f"http://{addr}/api/v3/exchangeInfo")
            assert r.headers["x-mbx-used-weight-1m"] == "20"
            info = wire.exchange_info_decoder.decode(r.content)
            assert [s.symbol for s in info.symbols] == ["BTCUSDT", "ETHUSDT"]
            assert (info.symbols[0].baseAsset, info.symbols[0].quoteAsset) == ("BTC", "USDT")
            weight = [x for x in info.rateLimits if x.rateLimitType == "REQUEST_WEIGHT"]
            assert (weight[0].interval, weight[0].intervalNum, weight[0].limit) == (
                "MINUTE",
                1,
                1234,
            )
            assert {x.rateLimitType for x in info.rateLimits} >= {"RAW_REQUESTS", "ORDERS"}
            one = (await client.get(f"http://{addr}/api/v3/exchangeInfo?symbol=ETHUSDT")).json()
            assert [s["symbol"] for s in one["symbols"]] == ["ETHUSDT"]
            two = await client.get(
                f"http://{addr}/api/v3/exchangeInfo", params={"symbols": '["ETHUSDT","BTCUSDT"]'}
            )
            assert len(two.json()["symbols"]) == 2
            bad = await client.get(f"http://{addr}/api/v3/exchangeInfo?symbol=XRPUSDT")
            assert bad.json() == {"code": -1121, "msg": "Invalid symbol."}


async def test_injected_rest_errors() -> None:
    with trio.fail_after(10):
        async with _simulator(rest_errors=((500, 1.0),)) as (sim, addr), httpx.AsyncClient() as c:
            r = await c.get(f"http://{addr}/api/v3/time")
            assert r.status_code == 500
            assert r.json()["code"] == -1000
            assert sim.statistics().rest_injected_errors == 1


# --- WebSocket ---------------------------------------------------------------------------------


async def test_subscribe_ack_list_and_raw_events() -> None:
    with trio.fail_after(10):
        async with (
            _simulator(updates_per_second=20) as (sim, addr),
            open_websocket_url(f"ws://{addr}/ws") as ws,
        ):
            await ws.send_message('{"method":"SUBSCRIBE","params":["btcusdt@kline_1m"],"id":1}')
            assert json.loads(await ws.get_message()) == {"result": None, "id": 1}
            event = await _next_kline(ws)
            assert "stream" not in event  # raw path: no envelope
            wire.raw_event_decoder.decode(json.dumps(event))
            assert event["s"] == "BTCUSDT"
            await ws.send_message('{"method":"LIST_SUBSCRIPTIONS","id":2}')
            while (reply := json.loads(await ws.get_message())).get("id") != 2:
                pass
            assert reply == {"result": ["btcusdt@kline_1m"], "id": 2}
            await ws.send_message('{"method":"UNSUBSCRIBE","params":["btcusdt@kline_1m"],"id":3}')
            while (reply := json.loads(await ws.get_message())).get("id") != 3:
                pass
            assert reply == {"result": None, "id": 3}
            assert sim.statistics().streams_subscribed == 0


async def test_combined_path_envelopes_both_streams() -> None:
    with trio.fail_after(10):
        url = "/stream?streams=btcusdt@kline_1m/ethusdt@kline_5m"
        async with (
            _simulator(updates_per_second=20) as (_, addr),
            open_websocket_url(f"ws://{addr}{url}") as ws,
        ):
            seen = set()
            while len(seen) < 2:
                envelope = wire.combined_decoder.decode(await ws.get_message())
                seen.add(envelope.stream)
                assert envelope.data.kline.symbol == envelope.stream.split("@")[0].upper()
            assert seen == {"btcusdt@kline_1m", "ethusdt@kline_5m"}


async def test_closed_frame_equals_rest_row_and_partials_are_consistent() -> None:
    with trio.fail_after(10):
        async with (
            _simulator(updates_per_second=50) as (_, addr),
            open_websocket_url(f"ws://{addr}/ws/btcusdt@kline_1m") as ws,
            httpx.AsyncClient() as client,
        ):
            partials = []
            while True:
                event = await _next_kline(ws)
                if event["k"]["x"]:
                    break
                partials.append(event)
            k = event["k"]
            assert k["t"] >= START - 30_000  # the candle in progress at start, or a later one
            assert k["t"] % MINUTE == 0
            assert event["E"] > k["T"]
            rows = (await _klines(client, addr, symbol="BTCUSDT", interval="1m", startTime=k["t"], limit=1)).json()  # fmt: skip
            assert rows[0] == _as_rest_row(k)
            assert k["L"] - k["f"] + 1 == k["n"]
            for p in partials:
                pk = p["k"]
                assert pk["t"] == k["t"]
                assert float(k["l"]) <= float(pk["l"]) <= float(pk["c"]) <= float(pk["h"]) <= float(k["h"])  # fmt: skip
                assert float(pk["V"]) <= float(pk["v"]) <= float(k["v"])
                assert pk["n"] <= k["n"]
            next_closed = await _next_kline(ws, closed=True)
            assert next_closed["k"]["t"] == k["t"] + MINUTE  # exactly one closed frame each


async def test_same_seed_same_candles_across_instances() -> None:
    with trio.fail_after(10):
        async with (
            _simulator() as (_, addr_a),
            _simulator() as (_, addr_b),
            _simulator(seed=8) as (_, addr_c),
            httpx.AsyncClient() as client,
        ):
            params = {"symbol": "ETHUSDT", "interval": "5m", "startTime": START - 86_400_000}
            a = await _klines(client, addr_a, **params, endTime=START - 600_000)
            b = await _klines(client, addr_b, **params, endTime=START - 600_000)
            c = await _klines(client, addr_c, **params, endTime=START - 600_000)
            assert a.content == b.content
            assert a.content != c.content
            async with open_websocket_url(f"ws://{addr_a}/ws/ethusdt@kline_1m") as ws:
                k = (await _next_kline(ws, closed=True))["k"]
            # B started a moment after A, so its clock runs a little behind: ask once the
            # candle has closed on B's clock too (before, B rightly serves it in progress).
            b_time = f"http://{addr_b}/api/v3/time"
            while (await client.get(b_time)).json()["serverTime"] <= k["T"]:  # noqa: ASYNC110
                await trio.sleep(0.01)
            rows = (await _klines(client, addr_b, symbol="ETHUSDT", interval="1m", startTime=k["t"], limit=1)).json()  # fmt: skip
            assert rows[0] == _as_rest_row(k)


async def test_message_rate_and_stream_limits() -> None:
    with trio.fail_after(10):
        async with _simulator(max_streams=3) as (sim, addr):
            async with open_websocket_url(f"ws://{addr}/ws") as ws:
                names = [f"btcusdt@kline_{i}" for i in ("1m", "3m", "5m", "15m")]
                await ws.send_message(json.dumps({"method": "SUBSCRIBE", "params": names, "id": 9}))
                reply = json.loads(await ws.get_message())
                assert reply["id"] == 9
                assert reply["error"]["code"] == 2
            async with open_websocket_url(f"ws://{addr}/ws") as ws:
                for i in range(6):
                    await ws.send_message(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
                await _drain(ws)
                assert ws.closed is not None
                assert ws.closed.code == 1008
            assert sim.statistics().message_rate_closes == 1


# --- replay ------------------------------------------------------------------------------------

needs_data = pytest.mark.skipif(not SPOT.is_dir(), reason="../shared/data is absent")


@needs_data
@pytest.mark.shared_data
async def test_replay_serves_archives_with_their_holes() -> None:
    with trio.fail_after(15):
        start = _ms("2025-06-02T00:00")
        async with (
            _simulator(data_dir=str(SPOT), start_ms=start) as (sim, addr),
            httpx.AsyncClient() as client,
        ):
            assert set(sim.market.symbols) == {"ADABTC", "BTCUSDT", "ETHUSDT"}
            day = _ms("2023-03-24T00:00")
            rows = (await _klines(client, addr, symbol="BTCUSDT", interval="1h", startTime=day, endTime=day + 86_399_999)).json()  # fmt: skip
            hours = [(row[0] - day) // 3_600_000 for row in rows]
            assert hours == [h for h in range(24) if h != 13]  # the 13:00 trading halt
            csv_rows = (SPOT / "BTCUSDT-1h-2023-03.csv").read_text().splitlines()
            first = csv_rows[1].split(",")  # after the header row
            row = (await _klines(client, addr, symbol="BTCUSDT", interval="1h", startTime=int(first[0]), limit=1)).json()[0]  # fmt: skip
            assert [str(x) for x in row] == first
            # 2025 archives are in microseconds; REST serves milliseconds.
            row = (await _klines(client, addr, symbol="BTCUSDT", interval="1h", startTime=1_735_689_600_000, limit=1)).json()[0]  # fmt: skip
            assert (row[0], row[6]) == (1_735_689_600_000, 1_735_693_199_999)
            # Beyond the data: nothing, not even a candle in progress.
            assert (await _klines(client, addr, symbol="BTCUSDT", interval="1h", limit=5)).json()[-1][0] < start  # fmt: skip
            r = await _klines(client, addr, symbol="SOLUSDT", interval="1h")
            assert r.json()["code"] == -1121


@needs_data
@pytest.mark.shared_data
async def test_replay_default_start_and_closed_frame_from_the_zip() -> None:
    with trio.fail_after(15):
        async with (
            _simulator(data_dir=str(SPOT), start_ms=None, updates_per_second=0) as (sim, addr),
            open_websocket_url(f"ws://{addr}/ws/btcusdt@kline_1m") as ws,
        ):
            first_candle = 1_577_836_800_000  # BTCUSDT-1m-2020-01-01.zip
            assert sim.clock.start_ms == first_candle + 86_400_000
            k = (await _next_kline(ws, closed=True))["k"]
        with zipfile.ZipFile(SPOT / "BTCUSDT-1m-2020-01-02.zip") as archive:
            lines = archive.read("BTCUSDT-1m-2020-01-02.csv").decode().splitlines()
        row = next(line.split(",") for line in lines if line.startswith(str(k["t"])))
        assert _as_rest_row(k) == [int(x) if i in (0, 6, 8) else x for i, x in enumerate(row)]


# --- faults ------------------------------------------------------------------------------------


async def test_drop_after_aborts_without_close_frame() -> None:
    with trio.fail_after(10):
        async with (
            _simulator(drop_after=3, updates_per_second=50) as (sim, addr),
            open_websocket_url(f"ws://{addr}/ws/btcusdt@kline_1m") as ws,
        ):
            for _ in range(3):
                await ws.get_message()
            with pytest.raises(ConnectionClosed):
                await ws.get_message()
            assert ws.closed is not None
            assert ws.closed.code == 1006
            assert sim.statistics().dropped_connections == 1


async def test_close_after_sends_server_shutdown_then_closes_cleanly() -> None:
    with trio.fail_after(10):
        async with (
            _simulator(close_after=0.3) as (sim, addr),
            open_websocket_url(f"ws://{addr}/stream?streams=btcusdt@kline_1m") as ws,
        ):
            messages = await _drain(ws)
            assert ws.closed is not None
            assert ws.closed.code == 1000
            shutdown = wire.shutdown_decoder.decode(messages[-1])
            assert shutdown.data.event_time >= START
            assert sim.statistics().shutdown_closes == 1


async def test_garbage_frames_fail_to_decode() -> None:
    with trio.fail_after(10):
        async with (
            _simulator(garbage=1.0, updates_per_second=50) as (sim, addr),
            open_websocket_url(f"ws://{addr}/stream?streams=btcusdt@kline_1m") as ws,
        ):
            for _ in range(10):
                with pytest.raises((msgspec.DecodeError, msgspec.ValidationError)):
                    wire.combined_decoder.decode(await ws.get_message())
            assert sim.statistics().garbage_frames >= 10


async def test_duplicates_repeat_closed_frames() -> None:
    with trio.fail_after(10):
        async with (
            _simulator(duplicates=1.0, updates_per_second=0) as (_, addr),
            open_websocket_url(f"ws://{addr}/ws/btcusdt@kline_1m") as ws,
        ):
            first, second = await ws.get_message(), await ws.get_message()
            assert first == second
            assert json.loads(first)["k"]["x"] is True


async def test_no_pong_leaves_client_pings_unanswered() -> None:
    with trio.fail_after(10):
        async with (
            _simulator(no_pong=True) as (_, addr),
            open_websocket_url(f"ws://{addr}/ws") as ws,
        ):
            with trio.move_on_after(0.3) as scope:
                await ws.ping(b"hello?")
            assert scope.cancelled_caught
        async with _simulator() as (_, addr), open_websocket_url(f"ws://{addr}/ws") as ws:
            await ws.ping(b"hello?")


async def test_client_that_never_pongs_is_closed() -> None:
    with trio.fail_after(10):
        async with _simulator(ping_interval=0.05, pong_timeout=0.15) as (sim, addr):
            host, port = addr.split(":")
            stream = await trio.open_tcp_stream(host, int(port))
            conn = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
            await stream.send_all(conn.send(we.Request(host=host, target="/ws")))
            pings, close_code = 0, None
            while close_code is None:
                data = await stream.receive_some(65536)
                conn.receive_data(data or None)
                for event in conn.events():
                    if isinstance(event, we.Ping):
                        pings += 1  # and deliberately no pong
                    elif isinstance(event, we.CloseConnection):
                        close_code = event.code
                        if conn.state is wsproto.ConnectionState.REMOTE_CLOSING:
                            await stream.send_all(conn.send(event.response()))
            await stream.aclose()
            assert pings >= 2
            assert close_code == 1008
            assert sim.statistics().pong_timeouts == 1
