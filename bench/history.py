"""The history scenarios: REST backfill and the archive path against the raw COPY ceiling."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from common import (
    BIN,
    CLK_TCK,
    KLINETRIO,
    ROOT,
    bench_database,
    cpu_seconds,
    free_port,
    http_get,
    log,
    process,
    rss_mb,
    tail,
    wait_until,
)


@dataclass
class BackfillResult:
    symbols: int
    days: int
    candles: int = 0
    wall_s: float = 0.0
    candles_per_s: float = 0.0
    steady_candles_per_s: float = 0.0
    cpu_cores: float = 0.0
    sim_cpu_cores: float = 0.0
    pg_cpu_cores: float = 0.0
    rss_max_mb: float = 0.0
    profile: str | None = None


def run_backfill(symbols: int, days: int, workdir: Path, profile: bool = False) -> BackfillResult:
    result = BackfillResult(symbols, days)
    names = [f"H{i:03d}USDT" for i in range(symbols)]
    day = 86_400_000
    end_ms = (int(time.time() * 1000) // day - 1) * day  # settled history, not touching now
    start_ms = end_ms - days * day
    port = free_port()
    fake_args = [
        sys.executable, str(ROOT / "bench" / "fakex.py"), "--port", str(port),
        "--symbols", ",".join(names), "--interval", "1m",
        "--from-ms", str(start_ms - day), "--to-ms", str(end_ms + day),
    ]  # fmt: skip
    with (
        bench_database("backfill") as url,
        process(fake_args, "backfill-exchange", workdir) as fake,
    ):
        wait_until(
            lambda: http_get(f"http://127.0.0.1:{port}/api/v3/ping")[0] == 200, 120, "the exchange"
        )
        iso = lambda ms: time.strftime("%Y-%m-%dT%H:%M", time.gmtime(ms / 1000))  # noqa: E731
        args = [
            *KLINETRIO, "backfill", "--symbol", ",".join(names), "--interval", "1m",
            "--start", iso(start_ms), "--end", iso(end_ms), "--database-url", url,
            "--rest-url", f"http://127.0.0.1:{port}", "--no-progress", "--log-level", "WARNING",
            "--source", "rest",
        ]  # fmt: skip
        if profile:
            args = [str(BIN / "py-spy"), "record", "--rate", "250", "--format", "raw",
                    "--threads", "--subprocesses", "--output",
                    str(workdir / "backfill.pyspy.txt"), "--", *args]  # fmt: skip
            result.profile = str(workdir / "backfill.pyspy.txt")
        env = {k: v for k, v in os.environ.items() if not k.startswith("KLINETRIO_")}
        s0 = cpu_seconds(fake.pid)
        with psycopg.connect(url, autocommit=True) as conn:
            p_before = cpu_of_pg_all(conn)
        t0 = time.time()
        with process(args, "backfill", workdir, env) as proc:
            target = proc.pid
            rss_max = 0.0
            cpu_last = 0.0
            while proc.poll() is None:
                with contextlib.suppress(OSError):
                    if profile:  # the klinetrio process is py-spy's child
                        kids = (
                            Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
                        )
                        target = int(kids[0]) if kids else proc.pid
                    rss_max = max(rss_max, rss_mb(target))
                    cpu_last = cpu_seconds(target)
                time.sleep(0.1)
            t1 = time.time()
            if proc.returncode != 0:
                log(tail(workdir / "backfill.log"))
                raise RuntimeError(f"backfill exited with {proc.returncode}")
        s1 = cpu_seconds(fake.pid)
        with psycopg.connect(url, autocommit=True) as conn:
            p_after = cpu_of_pg_all(conn)
            count, first, last = conn.execute(
                "SELECT count(*), extract(epoch FROM min(committed_at)),"
                " extract(epoch FROM max(committed_at)) FROM candles"
            ).fetchone()  # type: ignore[misc]
        expected = symbols * days * 1440
        if count != expected:
            log(f"  warning: backfill stored {count:,} candles, expected {expected:,}")
        result.candles = int(count)
        result.wall_s = round(t1 - t0, 2)
        result.candles_per_s = round(count / (t1 - t0))
        if last and first and last > first:
            result.steady_candles_per_s = round(count / (float(last) - float(first)))
        result.cpu_cores = round(cpu_last / (t1 - t0), 3)
        result.sim_cpu_cores = round((s1 - s0) / (t1 - t0), 3)
        result.pg_cpu_cores = round((p_after - p_before) / (t1 - t0), 3)
        result.rss_max_mb = round(rss_max, 1)
    return result


def cpu_of_pg_all(conn: psycopg.Connection) -> float:  # type: ignore[type-arg]
    """CPU of every PostgreSQL process (backends come and go; the postmaster's children sum)."""
    total = 0.0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if Path(proc, "comm").read_text().strip() in ("postgres", "postmaster"):
                text = Path(proc, "stat").read_text()
                f = text[text.rindex(")") + 2 :].split()
                # utime, stime, and the reaped children's cutime, cstime
                total += sum(int(x) for x in f[11:15]) / CLK_TCK
    return total


# --- archives --------------------------------------------------------------------------------


ARCHIVE_SYMBOL = "A000USDT"
ARCHIVE_YEAR = (1_735_689_600_000, 1_767_225_600_000)  # 2025: 525,600 1m candles, µs files


@dataclass
class ArchiveResult:
    candles: int = 0
    files: int = 0
    wall_s: float = 0.0
    candles_per_s: float = 0.0  # backfill --source archive, process start to exit
    steady_candles_per_s: float = 0.0  # first to last commit
    ceiling_1_per_s: float = 0.0  # raw COPY into the same table, one connection
    ceiling_2_per_s: float = 0.0  # ... two connections at once
    ceiling_per_s: float = 0.0  # the better of the two
    text_copy_per_s: float = 0.0  # the bulk path, CSV as is (what bulk.py does), one connection
    binary_copy_per_s: float = 0.0  # the same with COPY (FORMAT binary)
    rest_candles_per_s: float = 0.0  # backfill --source rest of the same year, same exchange
    rest_wall_s: float = 0.0
    rest_50ms_candles_per_s: float = 0.0  # ... of one month, every REST answer 50 ms late
    share_of_ceiling: float = 0.0
    times_rest: float = 0.0
    cpu_cores: float = 0.0
    sim_cpu_cores: float = 0.0
    pg_cpu_cores: float = 0.0
    rss_max_mb: float = 0.0


def _timed_backfill(
    args: list[str], name: str, url: str, workdir: Path, fake_pid: int
) -> tuple[float, int, float | None, dict[str, float]]:
    """Run one ``klinetrio backfill``; wall seconds, rows, first-to-last-commit s, resources."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLINETRIO_")}
    s0 = cpu_seconds(fake_pid)
    with psycopg.connect(url, autocommit=True) as conn:
        p0 = cpu_of_pg_all(conn)
    t0 = time.time()
    rss_max = cpu_last = 0.0
    with process([*args, "--database-url", url], name, workdir, env) as proc:
        while proc.poll() is None:
            with contextlib.suppress(OSError):
                rss_max = max(rss_max, rss_mb(proc.pid))
                cpu_last = cpu_seconds(proc.pid)
            time.sleep(0.1)
        t1 = time.time()
        if proc.returncode != 0:
            log(tail(workdir / f"{name}.log"))
            raise RuntimeError(f"{name} exited with {proc.returncode}")
    with psycopg.connect(url, autocommit=True) as conn:
        p1 = cpu_of_pg_all(conn)
        count, first, last = conn.execute(
            "SELECT count(*), extract(epoch FROM min(committed_at)),"
            " extract(epoch FROM max(committed_at)) FROM candles"
        ).fetchone()  # type: ignore[misc]
    wall = t1 - t0
    steady = float(last) - float(first) if last and first and last > first else None
    resources = {
        "cpu_cores": round(cpu_last / wall, 3),
        "sim_cpu_cores": round((cpu_seconds(fake_pid) - s0) / wall, 3),
        "pg_cpu_cores": round((p1 - p0) / wall, 3),
        "rss_max_mb": round(rss_max, 1),
    }
    return wall, int(count), steady, resources


def run_archive(workdir: Path) -> ArchiveResult:
    """One symbol x one year of synthetic 1m candles from the simulator's archives (bench/fakex.py:
    klinetrio's Simulator with a precomputed market), next to the raw COPY ceiling of the same
    table and the REST backfill of the same year, all in this run."""
    sys.path.insert(0, str(ROOT / "bench"))
    import copy_paths

    from klinetrio.binance.vision import ChunkReader
    from klinetrio.core.intervals import Interval

    result = ArchiveResult()
    start_ms, end_ms = ARCHIVE_YEAR
    day = 86_400_000
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    fake_args = [
        sys.executable, str(ROOT / "bench" / "fakex.py"), "--port", str(port),
        "--symbols", ARCHIVE_SYMBOL, "--interval", "1m",
        "--from-ms", str(start_ms - day), "--to-ms", str(end_ms + day),
    ]  # fmt: skip
    months = [f"2025-{m:02d}" for m in range(1, 13)]
    with process(fake_args, "archive-exchange", workdir) as fake:
        wait_until(lambda: http_get(f"{base}/api/v3/ping")[0] == 200, 180, "the exchange")
        # Build every file once before the clock starts, as data.binance.vision serves files
        # that exist: the simulator's zip building is not what is measured. The bodies also
        # give the rows for the ceiling.
        chunks: list[bytes] = []
        for month in months:
            name = f"{ARCHIVE_SYMBOL}-1m-{month}.zip"
            status, body = http_get(
                f"{base}/data/spot/monthly/klines/{ARCHIVE_SYMBOL}/1m/{name}", timeout=120
            )
            assert status == 200, (month, status)
            reader = ChunkReader(io.BytesIO(body), name, interval=Interval("1m"))
            while (chunk := reader.read()) is not None:
                chunks.append(chunk.csv)
        iso = lambda ms: time.strftime("%Y-%m-%dT%H:%M", time.gmtime(ms / 1000))  # noqa: E731
        backfill_args = [
            *KLINETRIO, "backfill", "--symbol", ARCHIVE_SYMBOL, "--interval", "1m",
            "--start", iso(start_ms), "--end", iso(end_ms), "--rest-url", base,
            "--archive-url", base, "--no-progress",
        ]  # fmt: skip
        blocks = copy_paths.table_text(chunks, ARCHIVE_SYMBOL, "1m")
        expected = 525_600
        ceilings: dict[int, list[float]] = {1: [], 2: []}
        forms: dict[str, list[float]] = {"text": [], "binary": []}

        def measure_copy_paths() -> None:
            # The machine is shared: each way in is measured before and after the backfill,
            # and its best run is reported (the ceiling is then the strictest one).
            for streams in (1, 2):
                with bench_database(f"ceiling{streams}") as url:
                    ceilings[streams].append(expected / copy_paths.raw_copy(url, blocks, streams))
            for form in ("text", "binary"):
                with bench_database(f"copy_{form}") as url:
                    seconds = copy_paths.staged(url, chunks, ARCHIVE_SYMBOL, "1m", form)
                forms[form].append(expected / seconds)

        measure_copy_paths()
        with bench_database("archive") as url:
            wall, count, steady, resources = _timed_backfill(
                [*backfill_args, "--source", "archive"], "archive-backfill", url, workdir, fake.pid
            )
        measure_copy_paths()
        if count != expected:
            log(f"  warning: the archive backfill stored {count:,} candles, expected {expected:,}")
        result.candles, result.files, result.wall_s = count, len(months), round(wall, 2)
        result.candles_per_s = round(count / wall)
        result.steady_candles_per_s = round(count / steady) if steady else 0
        for key, value in resources.items():
            setattr(result, key, value)
        result.ceiling_1_per_s = round(max(ceilings[1]))
        result.ceiling_2_per_s = round(max(ceilings[2]))
        result.ceiling_per_s = max(result.ceiling_1_per_s, result.ceiling_2_per_s)
        result.text_copy_per_s = round(max(forms["text"]))
        result.binary_copy_per_s = round(max(forms["binary"]))
        with bench_database("archive_rest") as url:
            rest_wall, rest_count, _, _ = _timed_backfill(
                [*backfill_args, "--source", "rest"], "archive-rest", url, workdir, fake.pid
            )
        result.rest_wall_s = round(rest_wall, 2)
        result.rest_candles_per_s = round(rest_count / rest_wall)
    # Context, not a target: REST when the exchange is a 50 ms round trip away (one month).
    month = start_ms + 31 * day
    port = free_port()
    slow = f"http://127.0.0.1:{port}"
    slow_args = [
        sys.executable, str(ROOT / "bench" / "fakex.py"), "--port", str(port),
        "--symbols", ARCHIVE_SYMBOL, "--interval", "1m", "--rest-delay-ms", "50",
        "--from-ms", str(start_ms - day), "--to-ms", str(month + day),
    ]  # fmt: skip
    with process(slow_args, "archive-exchange-50ms", workdir) as fake:
        wait_until(lambda: http_get(f"{slow}/api/v3/ping")[0] == 200, 180, "the exchange")
        with bench_database("archive_rest50") as url:
            slow_wall, slow_count, _, _ = _timed_backfill(
                [*KLINETRIO, "backfill", "--symbol", ARCHIVE_SYMBOL, "--interval", "1m",
                 "--start", iso(start_ms), "--end", iso(month), "--rest-url", slow,
                 "--source", "rest", "--no-progress"],
                "archive-rest-50ms", url, workdir, fake.pid,
            )  # fmt: skip
        result.rest_50ms_candles_per_s = round(slow_count / slow_wall)
    result.share_of_ceiling = round(result.candles_per_s / result.ceiling_per_s, 3)
    result.times_rest = round(result.candles_per_s / result.rest_candles_per_s, 2)
    return result


# --- profiles --------------------------------------------------------------------------------
