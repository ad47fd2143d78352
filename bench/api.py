"""The ``api`` scenario of bench/run.py: the read API and ``klinetrio coverage`` at scale.

- **klines pages**: ``/api/v3/klines`` pages of 1,000 1m candles (a random aligned startTime in
  a 200,000-candle series), from 4 keep-alive connections for ``window`` seconds. The API runs
  alone in its process (``bench/api_server.py``: the app of ``klinetrio serve`` on hypercorn's
  Trio worker with its two read-only connections); the figure is pages per second of wall time,
  with the API process's and PostgreSQL's CPU beside it.
- **304s**: ``/api/candles`` of settled history (100 distinct queries, 500 candles each)
  revalidated with ``If-None-Match``: what a dashboard or a cache in front asks most.
- **coverage**: ``klinetrio coverage --json`` (the real CLI, a subprocess) over 24,000 series x
  30 days of 1h candles (17.3 million rows; 2,400 series with ``--quick``), 10 % of the series
  with a gap of one candle, so the island query runs for those.

The load client is a minimal HTTP/1.1 client on raw sockets (a request written, the response
read by its Content-Length), so the client costs little of the 2 shared cores.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from common import KLINETRIO, backend_pids, bench_database, cpu_of, cpu_seconds, log, process

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
SERIES_START_MS = 1_700_000_000_000 // HOUR_MS * HOUR_MS
KLINES_CANDLES = 200_000
# One real BTCUSDT 1m row (2020-01-01 00:00), repeated: Binance's own decimals and scale.
ROW = ("7195.24000000", "7196.25000000", "7183.14000000", "7186.68000000", "51.64281200",
       "371233.44208900", 7, "7.30000000", "52521.77839000")  # fmt: skip


@dataclass
class ApiResult:
    pages_per_s: float
    page_candles: int
    api_cores_klines: float
    pg_cores_klines: float
    not_modified_per_s: float
    api_cores_304: float
    coverage_series: int
    coverage_rows: int
    coverage_s: float
    coverage_exit: int
    coverage_missing: int
    load_s: float


def _load(url: str, series: int) -> float:
    started = time.monotonic()
    o, h, lo, c, v, qv, n, tbv, tbqv = ROW
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER TABLE candles ALTER COLUMN committed_at DROP DEFAULT")
        conn.execute(
            """
            INSERT INTO candles (market, symbol, interval, time, close_time, open, high, low,
                                 close, volume, quote_volume, trades, taker_buy_volume,
                                 taker_buy_quote_volume, source)
            SELECT 'spot', 'BTCUSDT', '1m', t, t + interval '59.999 seconds',
                   %s, %s, %s, %s, %s, %s, %s, %s, %s, 'archive'
              FROM generate_series(to_timestamp(%s / 1000.0),
                                   to_timestamp(%s / 1000.0), interval '1 minute') t
            """,
            (o, h, lo, c, v, qv, n, tbv, tbqv, SERIES_START_MS,
             SERIES_START_MS + (KLINES_CANDLES - 1) * MINUTE_MS),
        )  # fmt: skip
        conn.execute(
            """
            INSERT INTO candles (market, symbol, interval, time, close_time, open, high, low,
                                 close, volume, quote_volume, trades, taker_buy_volume,
                                 taker_buy_quote_volume, source)
            SELECT 'spot', 'S' || lpad(s::text, 5, '0') || 'USDT', '1h',
                   to_timestamp(%s / 1000.0) + h * interval '1 hour',
                   to_timestamp(%s / 1000.0) + h * interval '1 hour' + interval '59:59.999',
                   %s, %s, %s, %s, %s, %s, %s, %s, %s, 'archive'
              FROM generate_series(0, %s - 1) s CROSS JOIN generate_series(0, 719) h
             WHERE NOT (s %% 10 = 3 AND h = 300)
            """,
            (SERIES_START_MS, SERIES_START_MS, o, h, lo, c, v, qv, n, tbv, tbqv, series),
        )  # fmt: skip
        conn.execute("VACUUM ANALYZE candles")
    return time.monotonic() - started


def _request(path: str, headers: dict[str, str] | None = None) -> bytes:
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return f"GET {path} HTTP/1.1\r\nHost: bench\r\n{extra}\r\n".encode()


def _read_response(sock: socket.socket, buffer: bytearray) -> tuple[int, bytes, dict[str, str]]:
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("closed")
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("closed")
        rest += chunk
    buffer[:] = rest[length:]
    return status, rest[:length], headers


def _hammer(port: int, requests: list[bytes], seconds: float, connections: int = 4) -> int:
    """Send ``requests`` round-robin on ``connections`` keep-alive connections for ``seconds``;
    the number of answers (all must be 200 or 304)."""
    counts = [0] * connections
    deadline = time.monotonic() + seconds

    def worker(i: int) -> None:
        rng = random.Random(i)
        while time.monotonic() < deadline:
            # hypercorn closes a keep-alive connection after 1,000 requests: open the next one.
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                buffer = bytearray()
                try:
                    while time.monotonic() < deadline:
                        sock.sendall(rng.choice(requests))
                        status, _, _ = _read_response(sock, buffer)
                        assert status in (200, 304), status
                        counts[i] += 1
                except (ConnectionError, BrokenPipeError):
                    continue

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts)


def _get(port: int, path: str) -> tuple[int, bytes, dict[str, str]]:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(_request(path))
        return _read_response(sock, bytearray())


def run_api(workdir: Path, *, quick: bool, window: float) -> ApiResult:
    series = 2_400 if quick else 24_000
    with bench_database("api") as url:
        log(f"  loading {KLINES_CANDLES:,} 1m candles and {series:,} series x 720 1h candles")
        load_s = _load(url, series)
        port_file = workdir / "api.port"
        server = [
            sys.executable,
            str(Path(__file__).with_name("api_server.py")),
            url,
            str(port_file),
        ]
        with process(server, "api", workdir) as api:
            deadline = time.monotonic() + 30
            while not port_file.exists() or not port_file.read_text().strip():
                if time.monotonic() > deadline or api.poll() is not None:
                    raise RuntimeError("the API server did not start (see api.log)")
                time.sleep(0.1)
            port = int(port_file.read_text())
            starts = [SERIES_START_MS + i * MINUTE_MS for i in range(0, KLINES_CANDLES - 1000, 997)]
            pages = [
                _request(f"/api/v3/klines?symbol=BTCUSDT&interval=1m&startTime={t}&limit=1000")
                for t in starts
            ]
            status, body, _ = _get(port, "/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=1000")
            assert status == 200, body[:200]
            page_candles = len(json.loads(body))
            pg = backend_pids(url)
            cpu0, pg0, t0 = cpu_seconds(api.pid), cpu_of(pg), time.monotonic()
            answered = _hammer(port, pages, window)
            wall = time.monotonic() - t0
            api_klines = (cpu_seconds(api.pid) - cpu0) / wall
            pg_klines = (cpu_of(backend_pids(url)) - pg0) / wall
            pages_per_s = answered / wall

            revalidations = []
            for i in range(100):
                start = SERIES_START_MS + i * 500 * MINUTE_MS
                path = (
                    f"/api/candles?symbol=BTCUSDT&interval=1m&start={start}"
                    f"&end={start + 500 * MINUTE_MS}"
                )
                status, _, headers = _get(port, path)
                assert status == 200
                revalidations.append(_request(path, {"If-None-Match": headers["etag"]}))
            cpu0, t0 = cpu_seconds(api.pid), time.monotonic()
            answered = _hammer(port, revalidations, window)
            wall = time.monotonic() - t0
            not_modified = answered / wall
            api_304 = (cpu_seconds(api.pid) - cpu0) / wall

        env = {k: v for k, v in os.environ.items() if not k.startswith("KLINETRIO_")}
        env["KLINETRIO_DATABASE_URL"] = url
        t0 = time.monotonic()
        run = subprocess.run(
            [*KLINETRIO, "coverage", "--json"], capture_output=True, env=env, check=False
        )
        coverage_s = time.monotonic() - t0
        report = json.loads(run.stdout)
        rows = sum(s["present"] for s in report["series"])
        return ApiResult(
            pages_per_s=round(pages_per_s, 1),
            page_candles=page_candles,
            api_cores_klines=round(api_klines, 2),
            pg_cores_klines=round(pg_klines, 2),
            not_modified_per_s=round(not_modified, 1),
            api_cores_304=round(api_304, 2),
            coverage_series=len(report["series"]),
            coverage_rows=rows,
            coverage_s=round(coverage_s, 2),
            coverage_exit=run.returncode,
            coverage_missing=int(report["summary"]["missing"]),
            load_s=round(load_s, 1),
        )


def line(r: ApiResult) -> str:
    return (
        f"{r.pages_per_s:,} pages/s of {r.page_candles} candles"
        f" ({r.pages_per_s * r.page_candles:,.0f} candles/s; API {r.api_cores_klines} cores,"
        f" PostgreSQL {r.pg_cores_klines}); {r.not_modified_per_s:,} 304s/s (API"
        f" {r.api_cores_304} cores); coverage of {r.coverage_series:,} series"
        f" ({r.coverage_rows:,} candles) in {r.coverage_s:.2f}s, exit {r.coverage_exit},"
        f" {r.coverage_missing:,} missing (load {r.load_s:.0f}s)"
    )
