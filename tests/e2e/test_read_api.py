"""The read API and ``klinetrio coverage`` end to end, on real candles replayed by the real
``klinetrio simulate``, stored by the real ``klinetrio backfill``:

- ``klinetrio serve``'s ``/api/v3/klines`` answers 21 queries (start only, end only, both,
  neither, limits 1/500/1000, across the 2025 ms → µs switch of the archives, unknown symbol,
  bad interval, bad parameters) with the simulator's status and bytes for every closed candle,
  and python-binance pointed at it reads the same history as from the simulator;
- ``klinetrio coverage`` on BTCUSDT 1h 2023-01..05 reports 100 % with the one confirmed hole
  (the 2023-03-24 13:00 halt) and exits 0; after 5 rows are deleted it reports exactly those 5
  and exits 3; ``/api/coverage`` says the same.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import trio
from support.processes import (
    Command,
    assert_one_error_line,
    free_port,
    hourly_archives,
    replay_dir,
    run_cli,
    simulator,
    wait_http,
    wait_until,
)

from klinetrio.api import build_app
from klinetrio.store.database import Database
from klinetrio.store.reader import StoreReader

pytestmark = pytest.mark.shared_data

HOUR_MS = 3_600_000
NOW = "2025-05-31T12:05"  # the exchange clock: the 12:00 candle is in progress
NOW_MS = 1748693100000
NOV_2024 = 1730419200000
JAN_2025 = 1735689600000


def backfill(tmp_path: Path, env: dict[str, str], start: str, end: str | None = None) -> None:
    args = ["backfill", "--symbol", "BTCUSDT", "--interval", "1h", "--start", start]
    if end is not None:
        args += ["--end", end]
    run = Command(args, tmp_path / f"backfill-{start}.log", env=env)
    assert run.wait(240) == 0, run.output()[-3000:]


def queries() -> list[dict[str, Any]]:
    q: list[dict[str, Any]] = [
        {},  # neither: the newest 500
        {"limit": 1},
        {"limit": 1000},
        {"startTime": NOV_2024, "limit": 500},
        {"startTime": JAN_2025 - 500 * HOUR_MS, "limit": 1000},  # across the switch
        {"startTime": JAN_2025 - 4 * HOUR_MS, "endTime": JAN_2025 + 4 * HOUR_MS},
        {"endTime": JAN_2025 + 2 * HOUR_MS, "limit": 5},
        {"endTime": JAN_2025 + 240 * HOUR_MS},  # end only, 500 across the switch
        {"startTime": JAN_2025, "limit": 1},
        {"startTime": NOV_2024, "endTime": JAN_2025 + 600 * HOUR_MS, "limit": 1000},
        {"startTime": JAN_2025 - HOUR_MS // 2, "limit": 3},  # unaligned start
        {"startTime": JAN_2025, "endTime": JAN_2025 + HOUR_MS - 1},  # unaligned end
        {"startTime": 1577836800000, "limit": 5},  # before the first candle
        {"startTime": NOW_MS - 3 * HOUR_MS},  # reaches the candle in progress
        {"startTime": 1767225600000},  # after the newest: nothing
    ]
    q = [{"symbol": "BTCUSDT", "interval": "1h", **p} for p in q]
    q += [
        {"symbol": "NOSUCHCOIN", "interval": "1h"},
        {"symbol": "BTCUSDT", "interval": "1H"},
        {"interval": "1h"},
        {"symbol": "BTCUSDT", "interval": "1h", "limit": 1001},
        {"symbol": "BTCUSDT", "interval": "1h", "startTime": "yesterday"},
        {"symbol": "BTCUSDT", "interval": "1h", "startTime": JAN_2025, "endTime": NOV_2024},
    ]
    return q


def test_serve_answers_klines_as_the_exchange_does(
    shared_data: Path, tmp_path: Path, database_url: str
) -> None:
    months = ["2024-11", "2024-12", "2025-01", "2025-02", "2025-03", "2025-04", "2025-05"]
    data = replay_dir(shared_data, tmp_path, hourly_archives(["BTCUSDT"], months))
    with simulator(tmp_path, "--data", str(data), "--start", NOW, "--weight-limit", "100000") as (
        _,
        base,
    ):
        env = {
            "KLINETRIO_DATABASE_URL": database_url,
            "KLINETRIO_REST_URL": base,
            "KLINETRIO_ARCHIVE_URL": base,
        }
        backfill(tmp_path, env, "2024-11-01")
        port = free_port()
        serve = Command(
            ["serve"],
            tmp_path / "serve.log",
            env={
                **env,
                "KLINETRIO_SYMBOLS": "btcusdt",
                "KLINETRIO_INTERVALS": "1h",
                "KLINETRIO_WS_URL": base.replace("http://", "ws://"),
                "KLINETRIO_HTTP_ADDR": f"127.0.0.1:{port}",
            },
        )
        ours = f"http://127.0.0.1:{port}"
        try:
            wait_http(f"{ours}/ready", timeout=60, process=serve)
            compared = 0
            for params in queries():
                theirs = httpx.get(f"{base}/api/v3/klines", params=params, timeout=10)
                mine = httpx.get(f"{ours}/api/v3/klines", params=params, timeout=10)
                assert mine.status_code == theirs.status_code, (params, mine.text)
                if theirs.status_code != 200:
                    assert mine.content == theirs.content, params
                    continue
                rows = theirs.json()
                closed = [r for r in rows if r[6] < NOW_MS]
                if len(closed) == len(rows):
                    assert mine.content == theirs.content, params
                else:  # the exchange's last row is in progress; ours ends with the newest closed
                    stored = mine.json()
                    assert stored[len(stored) - len(closed) :] == closed, params
                    assert stored[-1][0] == NOW_MS - 5 * 60_000 - HOUR_MS, params
                compared += len(closed)
            assert compared > 4000
            read_with_python_binance(base, ours)
            # /health: the collected series over the look-back (1d) is complete.
            wait_until(
                lambda: httpx.get(f"{ours}/health").json()["coverage"]["measured_at"] is not None,
                timeout=30,
                what="a coverage measurement",
                process=serve,
            )
            coverage = httpx.get(f"{ours}/health").json()["coverage"]
            assert (coverage["series"], coverage["expected"], coverage["missing"]) == (1, 24, 0)
            assert coverage["complete_pct"] == 100.0
        finally:
            serve.stop()
        assert "Traceback" not in serve.output()


def read_with_python_binance(exchange: str, klinetrio: str) -> None:
    """python-binance, pointed at klinetrio instead of the exchange, reads the same history."""
    client_module = pytest.importorskip("binance.client")

    def client_for(url: str) -> Any:
        client = client_module.Client(ping=False)
        client.API_URL = f"{url}/api"
        return client

    ours = client_for(klinetrio)
    ours.ping()
    assert abs(ours.get_server_time()["serverTime"] - time.time() * 1000) < 60_000
    span = (NOV_2024, JAN_2025 + 1500 * HOUR_MS)
    theirs = client_for(exchange).get_historical_klines("BTCUSDT", "1h", *span)
    mine = ours.get_historical_klines("BTCUSDT", "1h", *span)
    assert len(theirs) == (span[1] - span[0]) // HOUR_MS + 1  # endTime is inclusive
    assert mine == theirs


async def api_coverage(database_url: str, query: str) -> dict[str, Any]:
    reader = StoreReader(database_url)
    app = build_app(lambda: None, store=reader)  # type: ignore[arg-type,return-value]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://klinetrio"
    ) as client:
        response = await client.get(f"/api/coverage?{query}")
    await reader.aclose()
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def test_coverage_of_five_real_months_and_five_deleted_rows(
    shared_data: Path, tmp_path: Path, database_url: str
) -> None:
    files = [f"BTCUSDT-1h-2023-0{m}.csv" for m in range(1, 6)]
    data = replay_dir(shared_data, tmp_path, files)
    with simulator(
        tmp_path, "--data", str(data), "--start", "2023-06-01T00:30", "--weight-limit", "100000"
    ) as (_, base):
        env = {
            "KLINETRIO_DATABASE_URL": database_url,
            "KLINETRIO_REST_URL": base,
            "KLINETRIO_ARCHIVE_URL": base,
        }
        backfill(tmp_path, env, "2023-01-01", "2023-06-01")
    env = {"KLINETRIO_DATABASE_URL": database_url}
    flags = ["--symbol", "btcusdt", "--interval", "1h"]

    table = Command(["coverage", *flags], tmp_path / "coverage-1.log", env=env)
    assert table.wait(60) == 0, table.output()
    text = table.output()
    assert "spot BTCUSDT 1h" in text
    assert "2023-01-01T00:00Z" in text
    assert "2023-05-31T23:00Z" in text
    assert "100 %" in text
    report = Command(["coverage", *flags, "--json"], tmp_path / "coverage-2.log", env=env)
    assert report.wait(60) == 0
    (series,) = json.loads(report.output())["series"]
    assert (series["expected"], series["present"], series["holes"], series["missing"]) == (
        3624,
        3623,
        1,
        0,
    )
    assert series["complete_pct"] == 100.0

    gone = [1673000000000 // HOUR_MS * HOUR_MS + i * HOUR_MS for i in (0, 1)]
    gone += [1676000000000 // HOUR_MS * HOUR_MS, 1680000000000 // HOUR_MS * HOUR_MS]
    gone += [1684000000000 // HOUR_MS * HOUR_MS]
    with psycopg.connect(database_url) as conn:
        for t in gone:
            cur = conn.execute("DELETE FROM candles WHERE time = to_timestamp(%s / 1000.0)", (t,))
            assert cur.rowcount == 1
    table = Command(["coverage", *flags], tmp_path / "coverage-3.log", env=env)
    assert table.wait(60) == 3, table.output()
    assert "5 candles missing" in table.output()
    assert "2023-01-06T10:00Z .. 2023-01-06T11:00Z  (2 candles)" in table.output()
    report = Command(["coverage", *flags, "--json"], tmp_path / "coverage-4.log", env=env)
    assert report.wait(60) == 3
    cli = json.loads(report.output())
    (series,) = cli["series"]
    assert (series["present"], series["holes"], series["missing"]) == (3618, 1, 5)
    listed = [t for r in series["missing_ranges"] for t in range(r["start"], r["end"], HOUR_MS)]
    assert listed == gone
    api = trio.run(api_coverage, database_url, "symbol=BTCUSDT&interval=1h")
    assert api == cli


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--interval", "7m"], "unknown interval '7m'"),
        (["--start", "yesterday"], "invalid --start 'yesterday'"),
        (["--start", "2024", "--end", "2023"], "--end must be after --start"),
        (["--symbol", "NOSUCHCOIN"], "no stored series match"),
        (["--symbol", "BTCUSDT", "--empty"], "no candles are stored in this database yet"),
    ],
)
def test_coverage_bad_input_is_one_line(
    tmp_path: Path, database_url: str, args: list[str], expected: str
) -> None:
    if "--empty" in args:
        args.remove("--empty")
    else:
        database = Database(database_url)
        database.migrate()
        database.close()
    result = run_cli("coverage", *args, cwd=tmp_path, env={"KLINETRIO_DATABASE_URL": database_url})
    assert_one_error_line(result, expected)
