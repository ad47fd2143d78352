"""Trade coverage by agg id on the real PEPEUSDT aggTrades archive of 2024-10-27 (57,229
trades): ``store.trade_coverage`` and ``klinetrio coverage`` count the ids expected, present and
missing per day and list the missing ranges; a whole stored day is 100 %."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import trio
from support.processes import run_cli

from klinetrio.api import build_app
from klinetrio.binance.wire_kinds import Row
from klinetrio.store import events
from klinetrio.store.database import Database
from klinetrio.store.events import EventStore
from klinetrio.store.reader import StoreReader
from klinetrio.store.trade_coverage import trade_coverage

DAY_MS = 86_400_000


def archive_trades(shared_data: Path) -> list[Row]:
    path = shared_data / "vision" / "spot-aggTrades" / "PEPEUSDT-aggTrades-2024-10-27.zip"
    with zipfile.ZipFile(path) as archive:
        text = archive.read(archive.namelist()[0]).decode()
    return [
        ("spot", "PEPEUSDT", int(t), int(a), p, q, int(f), int(last), m == "True", "archive")
        for a, p, q, f, last, t, m, _ in csv.reader(io.StringIO(text))
    ]


@pytest.mark.shared_data
def test_real_day_of_trades_with_ids_taken_out(
    shared_data: Path, tmp_path: Path, database_url: str
) -> None:
    trades = archive_trades(shared_data)
    assert len(trades) == 57_229
    first_id, last_id = trades[0][3], trades[-1][3]
    assert last_id - first_id + 1 == 57_229  # consecutive: a missing id is provable
    db = Database(database_url)
    db.migrate()
    assert EventStore(db, events.TRADES).write(trades) == (57_229, [])
    whole = db.call("t", trade_coverage)
    assert len(whole) == 1
    [day] = whole[0].days
    assert (day.day, day.first_id, day.last_id) == ("2024-10-27", first_id, last_id)
    assert (day.expected, day.present, day.missing) == (57_229, 57_229, 0)

    # Ids 100..199 after the first, and the day's last trade's successor stored the next day
    # with 50 ids lost across midnight: they count against the next day.
    next_day = ("spot", "PEPEUSDT", int(trades[-1][2]) + DAY_MS // 2, last_id + 51,
                "0.00000901", "10.00", 1, 1, True, "ws")  # fmt: skip
    EventStore(db, events.TRADES).write([next_day])
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "DELETE FROM trades WHERE agg_id BETWEEN %s AND %s", (first_id + 100, first_id + 199)
        )
    [coverage] = db.call("t", trade_coverage, market="spot", symbols=["PEPEUSDT"])
    assert [(d.day, d.expected, d.present, d.missing) for d in coverage.days] == [
        ("2024-10-27", 57_229, 57_129, 100),
        ("2024-10-28", 51, 1, 50),
    ]
    assert coverage.missing_ranges == (
        (first_id + 100, first_id + 199),
        (last_id + 1, last_id + 50),
    )
    # A range by time: only the first day, and another symbol's filter finds nothing.
    end_of_day = 1730073600000  # 2024-10-28T00:00Z
    [first_day] = db.call("t", trade_coverage, end_ms=end_of_day)
    assert (first_day.expected, first_day.missing) == (57_229, 100)
    assert db.call("t", trade_coverage, symbols=["BTCUSDT"]) == []
    db.close()

    env = {"KLINETRIO_DATABASE_URL": database_url}
    result = run_cli("coverage", "--interval", "aggTrade", "--json", cwd=tmp_path, env=env)
    assert result.returncode == 3, result.stderr
    body = json.loads(result.stdout)
    assert body["series"] == []
    assert body["trades"]["summary"] == {
        "symbols": 1,
        "expected": 57_280,
        "present": 57_130,
        "missing": 150,
        "complete_pct": round(100 * 57_130 / 57_280, 4),
    }
    [pepe] = body["trades"]["symbols"]
    assert pepe["missing_ranges"] == [[first_id + 100, first_id + 199], [last_id + 1, last_id + 50]]
    table = run_cli("coverage", "--symbol", "pepeusdt", cwd=tmp_path, env=env)
    assert table.returncode == 3, table.stderr
    assert "spot PEPEUSDT  2024-10-27  2024-10-28" in table.stdout, table.stdout
    assert "2024-10-28  50 of 51 ids" in table.stdout, table.stdout
    assert f"ids {first_id + 100} .. {first_id + 199}  (100 trades)" in table.stdout
    whole_day = run_cli(
        "coverage", "--end", "2024-10-28", "--interval", "aggTrade", cwd=tmp_path, env=env
    )
    assert whole_day.returncode == 3  # the 100 taken out of the first day

    # /api/coverage says the same; a bad interval is a 400.
    api = trio.run(api_get, database_url, "/api/coverage?symbol=PEPEUSDT&interval=aggTrade")
    assert api[0] == 200
    assert api[1]["trades"] == body["trades"]
    assert api[1]["series"] == []
    assert trio.run(api_get, database_url, "/api/coverage?interval=7x")[0] == 400


async def api_get(database_url: str, path: str) -> tuple[int, dict[str, Any]]:
    reader = StoreReader(database_url)
    app = build_app(lambda: None, store=reader)  # type: ignore[arg-type,return-value]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://klinetrio"
    ) as client:
        response = await client.get(path)
    await reader.aclose()
    body: dict[str, Any] = response.json()
    return response.status_code, body
