"""Deep history from the archives, end to end: the real ``klinetrio simulate`` serving the real
BTCUSDT 1h 2023-01..05 and 1m 2020-01-01..03 as archives and REST, the real ``klinetrio backfill``
and ``klinetrio import`` as subprocesses, a real PostgreSQL.

Backfill ``--source auto`` takes whole months and days from the archives and the rest from REST,
stores every candle exactly, says how many came from where, records the 2023-03-24 13:00 halt as a
hole and changes nothing when run again; with a corrupted archive it still ends exact (that
range from REST) and says so once. ``import`` stores what the files hold, µs included, checks
the CHECKSUMs beside the files and refuses a zip whose bytes were changed.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import httpx
import psycopg
import pytest
from support.processes import Command, replay_dir, simulator

from klinetrio.core.models import parse_utc_ms

pytestmark = pytest.mark.shared_data

NOW = "2023-05-20T12:30"  # the exchange clock: the 12:00 candle is in progress
NOW_MS = parse_utc_ms(NOW, "now")
FILES = [f"BTCUSDT-1h-2023-0{m}.csv" for m in range(1, 6)] + [
    f"BTCUSDT-1m-2020-01-0{d}.zip" for d in (1, 2, 3)
]
HOURLY = ["--symbol", "btcusdt", "--interval", "1h", "--start", "2023-01-01"]
MINUTES = [
    "--symbol",
    "BTCUSDT",
    "--interval",
    "1m",
    "--start",
    "2020-01-01",
    "--end",
    "2020-01-04",
]
# Jan 744 + Feb 672 + Mar 743 (the halt) + Apr 720 from monthly files, May 1-19 from daily ones.
FROM_ARCHIVES = 744 + 672 + 743 + 720 + 19 * 24
FROM_REST = 12  # 2023-05-20 00:00 .. 11:00


def table(database_url: str, interval: str) -> list[tuple[object, ...]]:
    """Every stored candle, close time in µs and numbers as text: exact, nothing rounded."""
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            """
            SELECT (extract(epoch FROM time) * 1000)::bigint, open::text, high::text, low::text,
                   close::text, volume::text, (extract(epoch FROM close_time) * 1000000)::bigint,
                   quote_volume::text, trades, taker_buy_volume::text, taker_buy_quote_volume::text
              FROM candles WHERE symbol = 'BTCUSDT' AND interval = %s ORDER BY time
            """,
            (interval,),
        ).fetchall()


def sources(database_url: str) -> dict[tuple[str, str], int]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT interval, source, count(*) FROM candles GROUP BY 1, 2")
        return {(str(i), str(s)): int(n) for i, s, n in rows}


def holes(database_url: str) -> list[tuple[str, str]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT to_char(start_time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'),"
            " to_char(end_time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI')"
            " FROM candle_holes ORDER BY start_time"
        ).fetchall()


def exchange(base: str, interval: str, start_ms: int, end_ms: int) -> list[tuple[object, ...]]:
    """The exchange's closed candles as REST serves them, in the table's form."""
    rows: list[tuple[object, ...]] = []
    cursor = start_ms
    while True:
        page = httpx.get(
            f"{base}/api/v3/klines",
            params={"symbol": "BTCUSDT", "interval": interval, "startTime": cursor,
                    "endTime": end_ms - 1, "limit": 1000},
            timeout=10,
        ).json()  # fmt: skip
        for r in page:
            if int(r[6]) < NOW_MS:
                rows.append((r[0], *r[1:6], int(r[6]) * 1000, r[7], r[8], r[9], r[10]))
        if len(page) < 1000:
            return rows
        cursor = int(page[-1][0]) + 1


def file_rows(path: Path) -> list[tuple[object, ...]]:
    """The rows of a data.binance.vision CSV (or zip) in the table's form, µs close times kept."""
    if path.suffix == ".zip":
        import zipfile

        with zipfile.ZipFile(path) as archive:
            text = archive.read(archive.namelist()[0]).decode()
    else:
        text = path.read_text()
    rows = []
    for line in text.splitlines():
        c = line.split(",")
        if not c[0].isdigit():
            continue  # header
        micros = int(c[0]) >= 10**14
        open_ms = int(c[0]) // 1000 if micros else int(c[0])
        close_us = int(c[6]) if micros else int(c[6]) * 1000
        rows.append((open_ms, *c[1:6], close_us, c[7], int(c[8]), c[9], c[10]))
    return rows


def backfill(tmp_path: Path, env: dict[str, str], name: str, *args: str) -> str:
    run = Command(["backfill", "--no-progress", *args], tmp_path / f"{name}.log", env=env)
    assert run.wait(120) == 0, run.output()[-3000:]
    return run.output()


def test_backfill_auto_is_exact_says_where_from_and_reruns_as_a_no_op(
    shared_data: Path, tmp_path: Path, database_url: str
) -> None:
    data = replay_dir(shared_data, tmp_path, FILES)
    with simulator(tmp_path, "--data", str(data), "--start", NOW) as (sim, base):
        env = {
            "KLINETRIO_DATABASE_URL": database_url,
            "KLINETRIO_REST_URL": base,
            "KLINETRIO_ARCHIVE_URL": base,
        }
        first_hours = backfill(tmp_path, env, "hours-1", *HOURLY)
        first_minutes = backfill(tmp_path, env, "minutes-1", *MINUTES)
        snapshot = (table(database_url, "1h"), table(database_url, "1m"), holes(database_url))
        again = [
            backfill(tmp_path, env, "hours-2", *HOURLY),
            backfill(tmp_path, env, "minutes-2", *MINUTES),
        ]
        expected_hours = exchange(base, "1h", parse_utc_ms("2023-01-01", "s"), NOW_MS)
        expected_minutes = exchange(base, "1m", 1577836800000, 1578096000000)
        sim_log = sim.output()

    hours, minutes = snapshot[0], snapshot[1]
    # Every closed candle exactly as the exchange has it, and as the files hold it.
    assert hours == expected_hours
    assert minutes == expected_minutes
    spot = shared_data / "vision" / "spot"
    from_files = [r for name in FILES[:5] for r in file_rows(spot / name)]
    assert hours == [r for r in from_files if int(r[0]) + 3_600_000 <= NOW_MS]  # type: ignore[call-overload]
    assert minutes == [r for name in FILES[5:] for r in file_rows(spot / name)]
    assert sources(database_url) == {
        ("1h", "archive"): FROM_ARCHIVES,
        ("1h", "rest"): FROM_REST,
        ("1m", "archive"): 3 * 1440,
    }
    # Where they came from, in the log.
    assert (
        f"sources: {FROM_ARCHIVES:,} candles from 23 archive files ({FROM_ARCHIVES:,} new),"
        f" {FROM_REST} from REST"
    ) in first_hours
    assert "sources: 4,320 candles from 3 archive files (4,320 new), 0 from REST" in first_minutes
    # The halt: absent from the March file, confirmed empty by REST once, remembered.
    assert ("2023-03-24 13:00", "2023-03-24 14:00") in snapshot[2]
    assert "neither the archive nor the exchange has candles from 2023-03-24T13:00Z" in first_hours
    assert "answered 418" not in sim_log
    # A rerun changes nothing and fetches nothing.
    assert (table(database_url, "1h"), table(database_url, "1m"), holes(database_url)) == snapshot
    for output in again:
        assert "backfill done: 0 candles fetched" in output, output[-2000:]
        assert "sources: 0 candles from 0 archive files (0 new), 0 from REST" in output


def test_a_corrupted_archive_ends_exact_from_rest_and_is_reported_once(
    shared_data: Path, tmp_path: Path, database_url: str
) -> None:
    data = replay_dir(shared_data, tmp_path, FILES[:5])
    with simulator(
        tmp_path,
        "--data", str(data), "--start", NOW,
        "--archive-corrupt", "1", "--archive-missing-days", "2023-04,2023-05-02",
    ) as (sim, base):  # fmt: skip
        env = {
            "KLINETRIO_DATABASE_URL": database_url,
            "KLINETRIO_REST_URL": base,
            "KLINETRIO_ARCHIVE_URL": base,
        }
        output = backfill(tmp_path, env, "hours", *HOURLY)
        expected = exchange(base, "1h", parse_utc_ms("2023-01-01", "s"), NOW_MS)
        sim_log = sim.output()

    assert table(database_url, "1h") == expected  # exact all the same
    mismatches = re.findall(r"checksum mismatch: (BTCUSDT-1h-[0-9-]+)\.zip", output)
    assert len(mismatches) == 1, output[-3000:]  # said once
    corrupted = mismatches[0].removeprefix("BTCUSDT-1h-")
    assert f"serving BTCUSDT-1h-{corrupted}.zip with a wrong checksum" in sim_log
    assert "1 file failed its checksum and came from REST" in output
    with psycopg.connect(database_url) as conn:
        by_source = dict(
            conn.execute(
                "SELECT source, count(*) FROM candles WHERE interval = '1h'"
                " AND to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD') LIKE %s GROUP BY 1",
                (corrupted + "%",),
            ).fetchall()
        )
    assert set(by_source) == {"rest"}  # that file's range came from REST
    assert by_source["rest"] in (24, 672, 720, 743, 744)
    # April came day by day (its monthly file 404s), 2023-05-02 from REST.
    assert "sources: " in output
    assert ("2023-03-24 13:00", "2023-03-24 14:00") in holes(database_url)


def test_import_stores_what_the_files_hold_and_refuses_a_changed_zip(
    shared_data: Path, tmp_path: Path, database_url: str
) -> None:
    spot = shared_data / "vision" / "spot"
    env = {"KLINETRIO_DATABASE_URL": database_url}
    changed = tmp_path / "changed"
    changed.mkdir()
    for name in ("BTCUSDT-1m-2020-01-02.zip", "BTCUSDT-1m-2020-01-02.zip.CHECKSUM"):
        shutil.copy(spot / name, changed / name)
    body = bytearray((changed / "BTCUSDT-1m-2020-01-02.zip").read_bytes())
    body[len(body) // 2] ^= 0x01
    (changed / "BTCUSDT-1m-2020-01-02.zip").write_bytes(bytes(body))

    refused = Command(["import", str(changed)], tmp_path / "refused.log", env=env)
    assert refused.wait(60) == 1
    lines = refused.output().strip().splitlines()
    assert "Traceback" not in refused.output()
    assert lines[-1].startswith("klinetrio: error: checksum mismatch:"), lines
    assert "BTCUSDT-1m-2020-01-02.zip" in lines[-1]
    assert [line for line in lines if line.startswith("klinetrio: error:")] == [lines[-1]]

    first = Command(["import", "--no-progress", str(spot)], tmp_path / "import-1.log", env=env)
    assert first.wait(120) == 0, first.output()[-3000:]
    second = Command(["import", str(spot)], tmp_path / "import-2.log", env=env)
    assert second.wait(120) == 0, second.output()[-3000:]

    imported = sorted(
        p for p in spot.iterdir() if re.fullmatch(r"[A-Z]+-1[hm]-[0-9-]+\.(csv|zip)", p.name)
    )
    assert len(imported) == 22
    expected: dict[tuple[str, str], list[tuple[object, ...]]] = {}
    for path in imported:
        symbol, interval = path.name.split("-")[:2]
        expected.setdefault((symbol, interval), []).extend(file_rows(path))
    with psycopg.connect(database_url) as conn:
        for (symbol, interval), rows in expected.items():
            stored = conn.execute(
                """
                SELECT (extract(epoch FROM time) * 1000)::bigint, open::text, high::text, low::text,
                       close::text, volume::text, (extract(epoch FROM close_time) * 1000000)::bigint,
                       quote_volume::text, trades, taker_buy_volume::text, taker_buy_quote_volume::text
                  FROM candles WHERE symbol = %s AND interval = %s ORDER BY time
                """,
                (symbol, interval),
            ).fetchall()
            assert stored == sorted(rows), (symbol, interval)
        micro = conn.execute(
            "SELECT count(*) FROM candles WHERE extract(microseconds FROM close_time)::bigint % 1000 = 999"
        ).fetchone()
        assert micro is not None
        assert micro[0] == 2 * (744 + 672 + 744 + 720 + 744)  # 2025: µs close times kept
        assert conn.execute("SELECT DISTINCT source, market FROM candles").fetchall() == [
            ("archive", "spot")
        ]
    total = sum(len(rows) for rows in expected.values())
    assert "3 checksums verified" in first.output()
    assert "skipping 2 files whose names name no kline series" in first.output()
    assert f"{total:,} candles read, {total:,} new" in first.output()
    assert f"{total:,} candles read, 0 new, {total:,} already stored" in second.output()
