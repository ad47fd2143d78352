"""The live hub end to end: ``klinetrio serve`` on replayed real candles, with relay clients
(the plain ``websockets`` library, as a Binance client would use it), a client that never reads,
and a Redis server of the test's own that is stopped for five seconds.

Each relay client must receive every closed kline the exchange sent during its window, exactly
as sent, and in-progress updates too; Binance's replies must answer; the client that never
reads is cut off while nobody else loses anything; Redis subscribers see every closed candle
with the table's values; and Redis going away costs no row in ``candles``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis
from support.processes import (
    Command,
    exchange_time,
    free_port,
    health_of,
    hourly_archives,
    replay_dir,
    simulator,
    wait_http,
    wait_newest_closed,
    wait_until,
)
from support.relay import RelayClient

HOUR_MS = 3_600_000
SYMBOLS = ("BTCUSDT", "ETHUSDT")
STREAMS = ["btcusdt@kline_1h", "ethusdt@kline_1h"]
MONTHS = ("2024-11", "2024-12", "2025-01", "2025-02")
START = "2024-12-31T12:00"


@contextmanager
def redis_server(tmp_path: Path) -> Iterator[tuple[int, Any]]:
    """A redis-server of this test's own (it is stopped mid-test), or a skip."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("needs redis-server")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]

    def start() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.DEVNULL)
        wait_until(lambda: _answers(port), timeout=10, what="redis-server")
        return process

    holder = {"process": start()}

    class Control:
        def stop(self) -> None:
            holder["process"].terminate()
            holder["process"].wait(10)

        def start(self) -> None:
            holder["process"] = start()

    try:
        yield port, Control()
    finally:
        holder["process"].kill()
        holder["process"].wait()


def _answers(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_timeout=1).ping())
    except redis.RedisError:
        return False


class RedisListener:
    """A redis-py subscriber on a thread of its own, gathering one channel's messages."""

    def __init__(self, port: int, channel: str) -> None:
        self._pubsub = redis.Redis(host="127.0.0.1", port=port).pubsub(
            ignore_subscribe_messages=True
        )
        self._pubsub.subscribe(channel)
        self.messages: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self._pubsub.get_message(timeout=0.05)
            if message is not None:
                self.messages.append(json.loads(message["data"]))

    def stop(self) -> list[dict[str, Any]]:
        self._stop.set()
        self._thread.join(10)
        self._pubsub.close()
        return list(self.messages)


def never_reading_client(port: int, path: str) -> socket.socket:
    """A WebSocket upgrade by hand, then silence: a tiny receive buffer that is never read."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    return sock


def closed_klines(messages: list[str], combined: bool) -> dict[tuple[str, int], dict[str, Any]]:
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for text in messages:
        body = json.loads(text)
        data = body["data"] if combined else body
        k = data["k"]
        if k["x"]:
            assert (k["s"], k["t"]) not in out, "a closed kline relayed twice"
            out[(k["s"], k["t"])] = k
    return out


@pytest.mark.shared_data
def test_relay_and_redis_carry_every_event_and_lose_nothing(
    shared_data: Path, tmp_path: Path, database_url: str
) -> None:
    data = replay_dir(shared_data, tmp_path, hourly_archives(SYMBOLS, MONTHS))
    with (
        redis_server(tmp_path) as (redis_port, redis_control),
        simulator(
            tmp_path, "--data", str(data), "--start", START, "--speed", "3600",
            "--updates-per-second", "40",
        ) as (_, base),
    ):  # fmt: skip
        http_port = free_port()
        api = f"http://127.0.0.1:{http_port}"
        relay = f"ws://127.0.0.1:{http_port}"
        env = {
            "KLINETRIO_DATABASE_URL": database_url,
            "KLINETRIO_SYMBOLS": ",".join(SYMBOLS),
            "KLINETRIO_INTERVALS": "1h",
            "KLINETRIO_WS_URL": base.replace("http://", "ws://"),
            "KLINETRIO_REST_URL": base,
            "KLINETRIO_HTTP_ADDR": f"127.0.0.1:{http_port}",
            "KLINETRIO_SYNC_LOOKBACK": "1d",
            "KLINETRIO_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "KLINETRIO_RELAY_QUEUE": "50",
        }
        serve = Command(["serve"], tmp_path / "serve.log", env=env)
        listener = RedisListener(redis_port, "binance:kline:BTCUSDT:1h")
        try:
            wait_http(f"{api}/ready", timeout=30, process=serve)
            combined = RelayClient(f"{relay}/stream", subscribe=STREAMS)
            raw = RelayClient(f"{relay}/ws/btcusdt@kline_1h")
            sleeper = never_reading_client(http_port, "/stream?streams=" + "/".join(STREAMS))
            wait_until(lambda: 1 in combined.replies, timeout=10, what="the SUBSCRIBE answer")
            first_hour = exchange_time(base) // HOUR_MS * HOUR_MS + HOUR_MS
            combined.send({"method": "LIST_SUBSCRIPTIONS", "id": 2})
            combined.send({"method": "SUBSCRIBE", "params": ["dogeusdt@kline_1h"], "id": 3})
            wait_until(lambda: 3 in combined.replies, timeout=10, what="the replies")
            # The client that never reads falls behind and is cut off; nobody else waits.
            wait_until(
                lambda: health_of(api)["observers"]["dropped"].get("relay", 0) > 0,
                timeout=60,
                what="the sleeping relay client to fall behind",
                process=serve,
            )
            wait_until(
                lambda: exchange_time(base) >= first_hour + 6 * HOUR_MS,
                timeout=30,
                what="six hours of candles",
            )
            redis_until = exchange_time(base)
            redis_messages = listener.stop()
            redis_control.stop()
            stopped_at = time.monotonic()
            wait_until(lambda: time.monotonic() - stopped_at >= 5, timeout=10, what="5 s")
            assert serve.process.poll() is None, "serve must keep running without Redis"
            redis_control.start()
            wait_until(
                lambda: health_of(api).get("redis", {}).get("connected") is True,
                timeout=60,
                what="the publisher to reconnect",
                process=serve,
            )
            newest = wait_newest_closed(base, api, [f"{s} 1h" for s in SYMBOLS], HOUR_MS)
            metrics = httpx.get(f"{api}/metrics").text
            serve.signal(signal.SIGTERM)
            assert serve.wait(15) == 0, serve.output()[-3000:]
        finally:
            if serve.process.poll() is None:
                serve.kill()
        combined.close()
        raw.close()
        sleeper.close()
        rows = {
            s: httpx.get(
                f"{base}/api/v3/klines",
                params={"symbol": s, "interval": "1h", "startTime": first_hour, "limit": 1000},
            ).json()
            for s in SYMBOLS
        }

    log = serve.output()
    assert "Traceback" not in log
    # Binance's replies.
    assert combined.replies[1] == {"result": None, "id": 1}
    assert combined.replies[2] == {"result": STREAMS, "id": 2}
    assert combined.replies[3] == {
        "error": {"code": 2, "msg": "Invalid request: invalid stream"},
        "id": 3,
    }
    # Every closed kline of the window, on both clients, exactly as the exchange has it.
    got = closed_klines(combined.messages, combined=True)
    got_raw = closed_klines(raw.messages, combined=False)
    for symbol in SYMBOLS:
        for row in rows[symbol]:
            if row[0] > newest:
                continue
            k = got[(symbol, row[0])]
            assert [k["t"], k["o"], k["h"], k["l"], k["c"], k["v"], k["T"], k["q"], k["n"]] == row[
                :9
            ]
            if symbol == "BTCUSDT":
                assert got_raw[(symbol, row[0])] == k
    # In-progress updates too, and the raw stream's payload is the combined one's data.
    assert sum(not json.loads(m)["data"]["k"]["x"] for m in combined.messages) > 20
    combined_data = {json.dumps(json.loads(m)["data"]) for m in combined.messages}
    assert all(json.dumps(json.loads(m)) in combined_data for m in raw.messages[-20:])
    # The sleeper was cut off and counted.
    assert "klinetrio_relay_too_slow_total 1.0" in metrics
    # Redis: every closed BTCUSDT candle while it was up, with the table's values.
    with psycopg.connect(database_url) as conn:
        table = {
            int(r[0]): r[1:]
            for r in conn.execute(
                "SELECT (extract(epoch FROM time) * 1000)::bigint, open::text, close::text,"
                " volume::text, trades FROM candles WHERE symbol = 'BTCUSDT' ORDER BY time"
            )
        }
        for symbol in SYMBOLS:
            times = [
                int(r[0])
                for r in conn.execute(
                    "SELECT (extract(epoch FROM time) * 1000)::bigint FROM candles"
                    " WHERE symbol = %s ORDER BY time",
                    (symbol,),
                )
            ]
            # Redis away cost no row: contiguous through the window and up to the newest.
            assert times == list(range(times[0], times[-1] + HOUR_MS, HOUR_MS)), symbol
            assert times[-1] >= newest
    closed_redis = [m for m in redis_messages if m["closed"]]
    expected_hours = [t for t in table if first_hour <= t and t + HOUR_MS <= redis_until - 1000]
    assert [m["time"] for m in closed_redis if m["time"] in expected_hours] == expected_hours
    for m in closed_redis:
        assert (m["open"], m["close"], m["volume"], m["trades"]) == table[m["time"]]
