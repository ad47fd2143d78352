"""The peer scenario: cryptofeed (bench/cryptofeed_peer.py) on the load klinetrio just carried.

Same simulator arguments, same PostgreSQL, same window, one after the other in one run; the
figures are the same: CPU of the collector process (all threads) over the window ÷ the frames
it received, and the closed candles of the window expected vs stored, with duplicates.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
from common import (
    ADMIN_URL,
    ROOT,
    cpu_of,
    cpu_seconds,
    free_port,
    http_get,
    log,
    process,
    rss_mb,
    symbol_names,
    tail,
    wait_until,
)
from ingest import ServeLoad, closed_accounting, exchange_offset, per_frame_us, simulator_args


@dataclass
class PeerResult:
    load: ServeLoad
    window_s: float = 0.0
    frames: int = 0
    frames_per_s: float = 0.0
    cpu_cores: float = 0.0
    cpu_us_per_frame: float = 0.0
    sim_cpu_cores: float = 0.0
    pg_cpu_cores: float = 0.0
    rss_max_mb: float = 0.0
    startup_s: float = 0.0
    closed_candles: dict[str, int] = field(default_factory=dict)
    log_warnings: int = 0


@contextlib.contextmanager
def plain_database(name: str) -> Iterator[str]:
    """An empty database (cryptofeed creates its own table), dropped after."""
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            admin.execute(f"DROP DATABASE IF EXISTS {name}")


class Stats:
    """The runner's counters, asked for with SIGUSR1 and read from the file it rewrites."""

    def __init__(self, pid: int, path: Path) -> None:
        self.pid, self.path = pid, path
        self.seq = 1  # the runner writes seq 1 at start, then one more per SIGUSR1

    def read(self) -> dict[str, int]:
        self.seq += 1
        os.kill(self.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 20  # a busy event loop answers late
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                data: dict[str, int] = json.loads(self.path.read_text())
                if data["seq"] >= self.seq:
                    return data
            time.sleep(0.005)
        raise RuntimeError("the cryptofeed runner did not answer SIGUSR1")


def run_cryptofeed(load: ServeLoad, workdir: Path) -> PeerResult:
    result = PeerResult(load)
    sim_port = free_port()
    sent_log = workdir / f"{load.name}-cryptofeed-sent.log"
    name = f"bench_{os.getpid()}_{load.name}_cryptofeed"
    pg = urlsplit(ADMIN_URL)
    stats_path = workdir / f"{load.name}-cryptofeed-stats.json"
    runner_args = [
        sys.executable, str(ROOT / "bench" / "cryptofeed_peer.py"),
        "--ws", f"ws://127.0.0.1:{sim_port}", "--rest", f"http://127.0.0.1:{sim_port}",
        "--symbols", ",".join(symbol_names(load.symbols)), "--intervals", load.intervals,
        "--db", name, "--host", pg.hostname or "127.0.0.1", "--port", str(pg.port or 5432),
        "--user", pg.username or "postgres", "--stats", str(stats_path),
    ]  # fmt: skip
    with (
        plain_database(name) as db,
        process(
            simulator_args(load, sim_port, sent_log), f"{load.name}-simulate-cf", workdir
        ) as sim,
    ):
        url = pg._replace(path=f"/{db}").geturl()
        wait_until(
            lambda: http_get(f"http://127.0.0.1:{sim_port}/api/v3/ping")[0] == 200,
            30,
            "the simulator",
        )
        started = time.monotonic()
        logfile = workdir / f"{load.name}-cryptofeed.log"
        with process(runner_args, f"{load.name}-cryptofeed", workdir) as runner:
            try:
                wait_until(lambda: stats_path.exists(), 60, "the cryptofeed runner")
                stats = Stats(runner.pid, stats_path)
                # Settled once two successive 2 s rates agree within 5 % (every connection up).
                last = (stats.read()["frames"], time.monotonic())
                rates: list[float] = []
                while time.monotonic() - started < load.settle_timeout_s:
                    time.sleep(2.0)
                    if runner.poll() is not None:
                        raise RuntimeError("the cryptofeed runner exited")
                    now = (stats.read()["frames"], time.monotonic())
                    rates.append((now[0] - last[0]) / (now[1] - last[1]))
                    last = now
                    if (
                        len(rates) >= 3
                        and rates[-1] > 0
                        and abs(rates[-1] - rates[-2]) <= 0.05 * rates[-1]
                    ):
                        break
            except RuntimeError:
                log(tail(logfile))
                raise
            result.startup_s = round(time.monotonic() - started, 1)
            pids = _backend_pids(url)
            offset_before = exchange_offset(sim_port)
            f0 = stats.read()["frames"]
            t0, c0 = time.time(), cpu_seconds(runner.pid)
            s0, p0 = cpu_seconds(sim.pid), cpu_of(pids)
            rss = []
            while time.time() - t0 < load.measure_s:
                time.sleep(1.0)
                rss.append(rss_mb(runner.pid))
            t1, c1 = time.time(), cpu_seconds(runner.pid)
            s1, p1 = cpu_seconds(sim.pid), cpu_of(pids)
            f1 = stats.read()["frames"]
            offset_after = exchange_offset(sim_port)
            time.sleep(3.0)  # candles that closed at the end of the window get written
            offset = (offset_before[0] + offset_after[0]) / 2
            result.closed_candles = closed_accounting(
                url, "cryptofeed", load, round(t0 * 1000 + offset), round(t1 * 1000 + offset)
            )
        result.window_s = round(t1 - t0, 2)
        result.frames = f1 - f0
        result.frames_per_s = round(result.frames / (t1 - t0), 1)
        result.cpu_cores = round((c1 - c0) / (t1 - t0), 3)
        result.cpu_us_per_frame = per_frame_us(c1 - c0, result.frames)
        result.sim_cpu_cores = round((s1 - s0) / (t1 - t0), 3)
        result.pg_cpu_cores = round((p1 - p0) / (t1 - t0), 3)
        result.rss_max_mb = round(max(rss), 1)
        result.log_warnings = sum(
            1
            for line in logfile.read_text(errors="replace").splitlines()
            if "WARNING" in line or "ERROR" in line
        )
    return result


def _backend_pids(url: str) -> list[int]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()"
        ).fetchall()
    return [int(r[0]) for r in rows]
