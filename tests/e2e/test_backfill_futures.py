"""``klinetrio backfill --market usdm`` against ``klinetrio simulate`` replaying the real USD-M
AVAXUSDT 1m file: 1500-candle pages at the futures weight (10), paced under a tight weight limit
(no 429, no 418), every candle stored exactly under market ``usdm``."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import psycopg
import pytest
from support.processes import Command, simulator

MINUTE_MS = 60_000
START_MS = 1738368000000  # 2025-02-01
END_MS = 1738972800000  # 2025-02-08: 10,080 candles, seven pages of 1500


def exchange_rows(base: str) -> list[list[object]]:
    rows: list[list[object]] = []
    cursor = START_MS
    while cursor < END_MS:
        response = httpx.get(
            f"{base}/fapi/v1/klines",
            params={
                "symbol": "AVAXUSDT",
                "interval": "1m",
                "startTime": cursor,
                "endTime": END_MS - 1,
                "limit": 1500,
            },
            timeout=10,
        )
        if response.status_code == 429:  # the test's own reads share the exchange's limit
            time.sleep(float(response.headers["Retry-After"]))
            continue
        response.raise_for_status()
        page = response.json()
        rows.extend(r[:11] for r in page)
        cursor = int(page[-1][0]) + MINUTE_MS
    return rows


@pytest.mark.shared_data
def test_backfill_of_usdm_takes_futures_pages_and_weights(
    shared_data: Path, tmp_path: Path, database_url: str
) -> None:
    data = tmp_path / "usdm"
    data.mkdir()
    (data / "AVAXUSDT-1m-2025-02.csv").symlink_to(
        shared_data / "vision" / "futures-um" / "AVAXUSDT-1m-2025-02.csv"
    )
    with simulator(
        tmp_path,
        "--data",
        f"usdm:{data}",
        "--start",
        "2025-03-01T00:05",
        "--futures-weight-limit",
        "25",
        "--weight-window",
        "3",
    ) as (sim, base):
        env = {
            "KLINETRIO_DATABASE_URL": database_url,
            "KLINETRIO_USDM_REST_URL": base,
            "KLINETRIO_LOG_LEVEL": "DEBUG",
        }
        args = ["--market", "usdm", "--symbol", "avaxusdt", "--interval", "1m"]
        run = Command(
            ["backfill", *args, "--start", "2025-02-01", "--end", "2025-02-08", "--source", "rest"],
            tmp_path / "backfill.log",
            env=env,
        )
        assert run.wait(120) == 0, run.output()[-3000:]
        sim_log = sim.output()  # before the test's own reads, which may well be refused
        expected = exchange_rows(base)
    output = run.output()
    pages = re.findall(
        r"REST GET /fapi/v1/klines .*'limit': '(\d+)'.* -> 200, weight (\d+)", output
    )
    assert pages, output[-2000:]
    assert {p for p, _ in pages} == {"1500"}
    assert {w for _, w in pages} == {"10"}
    assert len(pages) == 7
    # Under 25 weight per 3 s, seven pages of 10: paced, never refused.
    assert "answered 429" not in sim_log
    assert "answered 418" not in sim_log
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT (extract(epoch FROM time) * 1000)::bigint, open::text, high::text, low::text,"
            " close::text, volume::text, (extract(epoch FROM close_time) * 1000)::bigint,"
            " quote_volume::text, trades, taker_buy_volume::text, taker_buy_quote_volume::text"
            " FROM candles WHERE market = 'usdm' AND symbol = 'AVAXUSDT' ORDER BY time"
        ).fetchall()
        others = conn.execute("SELECT count(*) FROM candles WHERE market <> 'usdm'").fetchone()
    assert len(expected) == 7 * 1440
    assert [list(r) for r in rows] == expected
    assert others == (0,)
