"""``klinetrio serve`` with ``KLINETRIO_SYMBOLS=*usdt,usdm:*`` against ``klinetrio simulate``
replaying real archives of two markets, both as real subprocesses.

The simulator replays the real spot BTCUSDT and ETHUSDT 1h files and the real USD-M BTCUSDT 5m
(January 2025) and AVAXUSDT 1m (February 2025) files on an accelerated clock that starts at
2025-01-31T23:00: USD-M BTCUSDT trades until its file ends and is delisted just after; USD-M
AVAXUSDT is listed at 2025-02-01T00:00, where its file begins. So one run sees a listing and a
delisting in the futures market while spot runs on.

- Every closed candle of every market is stored exactly (each field equal to the real file's)
  under its own ``market``; nothing is stored that the files do not have.
- AVAXUSDT is subscribed within one refresh on the running USD-M connection (no reconnect of any
  connection) and stored from its first candle; BTCUSDT is unsubscribed.
- ``klinetrio coverage`` over a range reaching past the delisting reports nothing missing, the
  delisted series ending with its last candle.
"""

from __future__ import annotations

import csv
import json
import re
from decimal import Decimal
from pathlib import Path

import httpx
import psycopg
import pytest
from support.processes import Command, free_port, health_of, simulator, wait_http, wait_until

MINUTE_MS = 60_000
START = "2025-01-31T23:00"
START_MS = 1738364400000
LISTED_MS = 1738368000000  # 2025-02-01T00:00: usdm AVAXUSDT starts trading (its file's first)
DELISTED_MS = LISTED_MS + 2 * MINUTE_MS  # usdm BTCUSDT: its file ends at 23:55 (5m)
END_MS = LISTED_MS + 70 * MINUTE_MS  # the exchange time the test waits for
SPEED = 600.0  # a 1m candle closes every 0.1 s: the run is ≈13 s of exchange time / 600
LOOKBACK = "2h"
INTERVAL_MS = {"1m": MINUTE_MS, "5m": 5 * MINUTE_MS, "1h": 60 * MINUTE_MS}

SPOT_FILES = ("BTCUSDT-1h-2025-01.csv", "BTCUSDT-1h-2025-02.csv")
SPOT_FILES += ("ETHUSDT-1h-2025-01.csv", "ETHUSDT-1h-2025-02.csv")
USDM_FILES = ("AVAXUSDT-1m-2025-02.csv", "BTCUSDT-5m-2025-01.csv")

Row = tuple[int, Decimal, Decimal, Decimal, Decimal, Decimal, int, Decimal, int, Decimal, Decimal]


def _ms(text: str) -> int:
    value = int(text)
    return value // 1000 if value >= 10**15 else value  # spot files are in µs from 2025


def archive_rows(path: Path) -> list[Row]:
    """The real file's candles, read here independently of the simulator's own reader."""
    rows: list[Row] = []
    with path.open(newline="") as handle:
        for record in csv.reader(handle):
            if record[0] == "open_time":
                continue  # the futures files have a header
            o, h, low, c, v = (Decimal(x) for x in record[1:6])
            qv, tbv, tbq = Decimal(record[7]), Decimal(record[9]), Decimal(record[10])
            rows.append(
                (_ms(record[0]), o, h, low, c, v, _ms(record[6]), qv, int(record[8]), tbv, tbq)
            )
    return rows


def stored(database_url: str) -> dict[tuple[str, str, str], list[Row]]:
    with psycopg.connect(database_url) as conn:
        records = conn.execute(
            "SELECT market, symbol, interval, (extract(epoch FROM time) * 1000)::bigint,"
            " open, high, low, close, volume, (extract(epoch FROM close_time) * 1000)::bigint,"
            " quote_volume, trades, taker_buy_volume, taker_buy_quote_volume"
            " FROM candles ORDER BY market, symbol, interval, time"
        ).fetchall()
    result: dict[tuple[str, str, str], list[Row]] = {}
    for market, symbol, interval, *values in records:
        result.setdefault((market, symbol, interval), []).append(tuple(values))  # type: ignore[arg-type]
    return result


def link(shared: Path, names: tuple[str, ...], folder: Path) -> Path:
    folder.mkdir()
    for name in names:
        (folder / name).symlink_to(shared / name)
    return folder


def metric(text: str, name: str) -> dict[str, float]:
    """One counter of serve's /metrics per label value."""
    pattern = re.compile(rf'^klinetrio_{name}(?:_total)?\{{connection="([^"]+)"\}} (\S+)$', re.M)
    return {label: float(value) for label, value in pattern.findall(text)}


@pytest.mark.shared_data
def test_serve_follows_a_listing_and_a_delisting_over_two_markets(
    shared_data: Path, tmp_path: Path, database_url: str
) -> None:
    vision = shared_data / "vision"
    spot = link(vision / "spot", SPOT_FILES, tmp_path / "spot")
    usdm = link(vision / "futures-um", USDM_FILES, tmp_path / "usdm")
    with simulator(
        tmp_path,
        *("--data", str(spot), "--data", f"usdm:{usdm}"),
        *("--start", START, "--speed", str(SPEED), "--updates-per-second", "1"),
        *("--list", "usdm:AVAXUSDT@2025-02-01T00:00"),
        *("--delist", "usdm:BTCUSDT@2025-02-01T00:02"),
    ) as (_sim, base):
        http = f"127.0.0.1:{free_port()}"
        env = {
            "KLINETRIO_DATABASE_URL": database_url,
            "KLINETRIO_SYMBOLS": "*usdt,usdm:*",
            "KLINETRIO_INTERVALS": "1m,5m,1h",
            "KLINETRIO_WS_URL": base.replace("http", "ws"),
            "KLINETRIO_REST_URL": base,
            "KLINETRIO_USDM_WS_URL": base.replace("http", "ws") + "/usdm",
            "KLINETRIO_USDM_REST_URL": base,
            "KLINETRIO_SYNC_LOOKBACK": LOOKBACK,
            "KLINETRIO_SYMBOLS_REFRESH": "1s",  # real seconds: 10 exchange minutes
            "KLINETRIO_HTTP_ADDR": http,
        }
        serve = Command(["serve"], tmp_path / "serve.log", env=env)
        try:
            wait_http(f"http://{http}/ready", timeout=30, process=serve)
            at_start = httpx.get(f"http://{http}/health").json()["connections"]
            # spot: 2 symbols x 3 intervals; usdm: BTCUSDT only (AVAXUSDT is not listed yet).
            assert {c["name"]: c["streams"] for c in at_start} == {"ws-1": 6, "usdm-ws-1": 3}

            def exchange_ms() -> int:
                return int(httpx.get(f"{base}/api/v3/time").json()["serverTime"])

            wait_until(lambda: exchange_ms() >= END_MS, timeout=60, what="the run", process=serve)
            # The last closed candles of the live symbols reach the table.
            wait_until(
                lambda: (
                    stored(database_url).get(("usdm", "AVAXUSDT", "1m"), [(0,)])[-1][0]
                    >= END_MS - 3 * MINUTE_MS
                ),
                timeout=30,
                what="AVAXUSDT's newest candles",
                process=serve,
            )
            health = health_of(f"http://{http}")
            metrics = httpx.get(f"http://{http}/metrics").text
        finally:
            assert serve.stop(30) == 0, serve.output()[-3000:]
        log = serve.output()

    # No connection was replaced: the listing was SUBSCRIBEd on a running connection.
    names = {c["name"] for c in at_start}
    assert {c["name"] for c in health["connections"]} == names, health["connections"]
    assert all(c["reconnects"] == 0 for c in health["connections"]), health["connections"]
    assert all(v == 0 for v in metric(metrics, "rotations").values()), metrics
    assert sum(metric(metrics, "stream_subscribes").values()) >= 1, metrics
    assert sum(metric(metrics, "stream_unsubscribes").values()) >= 1, metrics
    assert "Traceback" not in log, log[-3000:]

    # Every stored candle is the real file's, under its market; nothing else is stored.
    tables = stored(database_url)
    assert set(tables) == {
        ("spot", "BTCUSDT", "1h"),
        ("spot", "ETHUSDT", "1h"),
        ("usdm", "AVAXUSDT", "1m"),
        ("usdm", "BTCUSDT", "5m"),
    }, set(tables)
    files: dict[tuple[str, str, str], list[Row]] = {}
    for market, folder, names in (("spot", spot, SPOT_FILES), ("usdm", usdm, USDM_FILES)):
        for name in names:  # in month order
            symbol, interval = name.split("-")[:2]
            files.setdefault((market, symbol, interval), []).extend(archive_rows(folder / name))
    for key, rows in tables.items():
        step = INTERVAL_MS[key[2]]
        first, newest = rows[0][0], rows[-1][0]
        # Contiguous and exact from the first stored candle to the newest.
        assert rows == [r for r in files[key] if first <= r[0] <= newest], key
        if key[1] == "AVAXUSDT":
            assert first == LISTED_MS  # from its very first candle
        else:  # sync reached back past the simulator's start, into the look-back
            assert first <= START_MS - step, key
        if key != ("usdm", "BTCUSDT", "5m"):  # the live ones: up to the end of the run
            settled = END_MS - 3 * MINUTE_MS
            assert newest >= settled - settled % step - step, key
    # The delisted series ends with its file's last candle: 2025-01-31T23:55.
    assert tables[("usdm", "BTCUSDT", "5m")][-1][0] == LISTED_MS - 5 * MINUTE_MS

    with psycopg.connect(database_url) as conn:
        status = dict(
            conn.execute("SELECT market || ':' || symbol, status FROM symbols").fetchall()
        )
    assert status["usdm:BTCUSDT"] != "TRADING", status
    assert status["usdm:AVAXUSDT"] == "TRADING", status

    # klinetrio coverage over a range reaching past the delisting: nothing missing.
    report = Command(
        ["coverage", "--end", "2025-02-01T01:00", "--json"],
        tmp_path / "coverage.log",
        env={"KLINETRIO_DATABASE_URL": database_url},
    )
    assert report.wait(60) == 0, report.output()
    body = json.loads(report.output()[report.output().index("{") :])
    by_series = {(s["market"], s["symbol"], s["interval"]): s for s in body["series"]}
    assert set(by_series) == set(tables)
    assert all(s["missing"] == 0 for s in by_series.values()), by_series
    btc = by_series[("usdm", "BTCUSDT", "5m")]
    assert btc["present"] == btc["expected"] == len(tables[("usdm", "BTCUSDT", "5m")])
    assert (btc["last"], btc["end"]) == (LISTED_MS - 5 * MINUTE_MS, LISTED_MS), btc
    assert by_series[("usdm", "AVAXUSDT", "1m")]["expected"] == 60
