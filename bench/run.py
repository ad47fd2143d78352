"""klinetrio benchmarks: ingest rate, closed-candle latency, backfill rate, archive rate, memory.

Runs the real pipeline as the user runs it — ``klinetrio simulate`` and ``klinetrio serve`` (or
``klinetrio backfill``) as subprocesses against the local PostgreSQL — and measures it from the
outside: /proc for CPU and RSS, serve's /metrics for frame counts, and a ``committed_at`` column
(``DEFAULT clock_timestamp()``) added to ``candles`` in the bench database for commit times.
See bench/README.md for the method and error of every figure.

    python bench/run.py              # the full run (a few minutes)
    python bench/run.py --quick      # under a minute, smaller loads
    python bench/run.py --json       # ... and one JSON object as the last line
    python bench/run.py --profile    # also py-spy profiles of serve (full load) and backfill
    python bench/run.py --only store # compressed size, backup/restore time per million 1m candles
    python bench/run.py --only archive   # one symbol x one year of 1m from the archives

Environment: BENCH_PG (default postgresql://postgres@127.0.0.1:5432/postgres) is the server on
which throw-away databases ``bench_<pid>_<scenario>`` are created and dropped.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
KLINETRIO = [sys.executable, "-m", "klinetrio"]
ADMIN_URL = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
CLK_TCK = os.sysconf("SC_CLK_TCK")
ALL_INTERVALS = "1s,1m,3m,5m,15m,30m,1h,2h,4h,6h,8h,12h,1d,3d,1w,1M"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the machine -----------------------------------------------------------------------------


def machine() -> dict[str, object]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    with psycopg.connect(ADMIN_URL) as conn:
        pg = str(conn.execute("SELECT version()").fetchone()[0])  # type: ignore[index]
        timescale = conn.execute(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'"
        ).fetchone()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "postgresql": pg.split(" on ")[0],
        "timescaledb": timescale[0] if timescale else None,
        "kernel": platform.release(),
    }


def machine_line(m: dict[str, object]) -> str:
    ts = f", TimescaleDB {m['timescaledb']}" if m["timescaledb"] else ", no TimescaleDB"
    return (
        f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Python {m['python']}, "
        f"{m['postgresql']}{ts}, Linux {m['kernel']}"
    )


# --- processes -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all threads included."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int, field_name: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if predicate():
                return
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")


@contextlib.contextmanager
def process(
    args: Sequence[str], name: str, workdir: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A subprocess with its output in ``workdir/name.log``, ended with SIGTERM (then SIGKILL)."""
    logfile = open(workdir / f"{name}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        list(args), stdout=logfile, stderr=subprocess.STDOUT, cwd=workdir, env=env
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        logfile.close()


def tail(path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


# --- the database ----------------------------------------------------------------------------


@contextlib.contextmanager
def bench_database(scenario: str) -> Iterator[str]:
    """A fresh database with klinetrio's schema plus ``candles.committed_at``; dropped after."""
    name = f"bench_{os.getpid()}_{scenario}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
    url = urlsplit(ADMIN_URL)._replace(path=f"/{name}").geturl()
    try:
        from klinetrio.store.database import Database

        db = Database(url)
        db.migrate()  # the same migrations serve/backfill run; theirs become no-ops
        db.close()
        with psycopg.connect(url, autocommit=True) as conn:
            # Filled by the server when the row is inserted (klinetrio names its columns), so it
            # is the commit time give or take the rest of the batch's INSERT and the COMMIT.
            conn.execute(
                "ALTER TABLE candles ADD COLUMN committed_at timestamptz DEFAULT clock_timestamp()"
            )
        yield url
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            admin.execute(f"DROP DATABASE IF EXISTS {name}")


def backend_pids(url: str) -> list[int]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'klinetrio'"
        ).fetchall()
    return [int(r[0]) for r in rows]


def cpu_of(pids: Sequence[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):
            total += cpu_seconds(pid)
    return total


# --- serve scenarios -------------------------------------------------------------------------


@dataclass
class ServeLoad:
    name: str
    symbols: int
    intervals: str
    updates_per_second: float
    measure_s: float
    settle_timeout_s: float = 240.0
    settle_s: float = 20.0

    @property
    def streams(self) -> int:
        return self.symbols * len(self.intervals.split(","))


@dataclass
class ServeResult:
    load: ServeLoad
    streams: int = 0
    connections: int = 0
    startup_s: float = 0.0
    window_s: float = 0.0
    frames: int = 0
    closed: int = 0
    frames_per_s: float = 0.0
    closed_per_s: float = 0.0
    serve_cpu_cores: float = 0.0
    sim_cpu_cores: float = 0.0
    pg_cpu_cores: float = 0.0
    sim_frames_per_s: float = 0.0
    rss_mb: float = 0.0
    rss_max_mb: float = 0.0
    rss_hwm_mb: float = 0.0
    latency: dict[str, float] = field(default_factory=dict)  # frame sent → row committed
    latency_from_close: dict[str, float] = field(default_factory=dict)  # candle close → committed
    clock_offset_ms: float = 0.0
    clock_offset_error_ms: float = 0.0
    profile: str | None = None
    exchange_latency: dict[str, object] = field(default_factory=dict)
    rest_requests: int = 0
    sim_profile: str | None = None
    writer_latency: dict[str, object] = field(default_factory=dict)


def symbol_names(count: int) -> list[str]:
    return [f"B{i:04d}USDT" for i in range(count)]


def metrics(port: int) -> dict[str, float]:
    """Sums of serve's Prometheus counters, by family name (histogram buckets by ``le``)."""
    _, body = http_get(f"http://127.0.0.1:{port}/metrics")
    sums: dict[str, float] = collections.defaultdict(float)
    for line in body.decode().splitlines():
        if line.startswith("klinetrio_"):
            name, _, value = line.rpartition(" ")
            if "_bucket{" in name:
                sums[name] += float(value)
            else:
                sums[name.split("{", 1)[0]] += float(value)
    return sums


def histogram_quantiles(
    m0: dict[str, float], m1: dict[str, float], family: str
) -> dict[str, object]:
    """Upper bucket bounds of p50/p99 of a Prometheus histogram between two scrapes."""
    buckets = []
    for name, value in m1.items():
        if name.startswith(family + "_bucket{"):
            le = re.search(r'le="([^"]+)"', name)
            if le:
                buckets.append((float(le[1]), value - m0.get(name, 0.0)))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0
    result: dict[str, object] = {"batches": int(total)}
    for q in (0.5, 0.99):
        bound = next((le for le, n in buckets if total and n >= q * total), None)
        result[f"p{int(q * 100)}_le_s"] = bound
    return result


def exchange_offset(sim_port: int, samples: int = 7) -> tuple[float, float]:
    """exchange clock - wall clock in ms, from /api/v3/time, with its error (half the best RTT)."""
    best: tuple[float, float] | None = None
    for _ in range(samples):
        before = time.time()
        _, body = http_get(f"http://127.0.0.1:{sim_port}/api/v3/time")
        after = time.time()
        server_ms = json.loads(body)["serverTime"] + 0.5  # it floors to the millisecond
        rtt = (after - before) * 1000
        offset = server_ms - (before + after) / 2 * 1000
        if best is None or rtt < best[1]:
            best = (offset, rtt)
    assert best is not None
    return best[0], best[1] / 2 + 0.5


def _percentiles(row: tuple[object, ...] | None) -> dict[str, float]:
    assert row is not None
    count, pct, worst, mean = row
    if not count:
        return {"count": 0}
    return {
        "count": int(count),  # type: ignore[call-overload]
        "p50_ms": round(pct[0], 1),  # type: ignore[index]
        "p90_ms": round(pct[1], 1),  # type: ignore[index]
        "p99_ms": round(pct[2], 1),  # type: ignore[index]
        "p999_ms": round(pct[3], 1),  # type: ignore[index]
        "max_ms": round(float(worst), 1),  # type: ignore[arg-type]
        "mean_ms": round(float(mean), 1),  # type: ignore[arg-type]
    }


def sent_latency_stats(url: str, start: float, end: float, sent_log: Path) -> dict[str, float]:
    """Closed frame sent by the simulator → row committed (the issue's definition).

    The simulator's ``--sent-log`` has the wall-clock ms each closed frame left it; the row's
    ``committed_at`` is PostgreSQL's wall clock on the same machine, so no offset is involved.
    Rows: ws rows whose frame was sent in [start, end).
    """
    with psycopg.connect(url) as conn:
        conn.execute(
            "CREATE TEMP TABLE sent (symbol text, interval text, open_ms bigint, sent_ms bigint)"
        )
        with conn.cursor().copy("COPY sent FROM STDIN WITH (DELIMITER ' ')") as copy:
            copy.write(sent_log.read_bytes())
        row = conn.execute(
            """
            SELECT count(*),
                   percentile_cont(ARRAY[0.5, 0.9, 0.99, 0.999]) WITHIN GROUP (ORDER BY ms),
                   max(ms), avg(ms)
              FROM (SELECT extract(epoch FROM c.committed_at) * 1000 - min(s.sent_ms) AS ms
                      FROM candles c
                      JOIN sent s ON s.symbol = c.symbol AND s.interval = c.interval
                                 AND c.time = timestamptz 'epoch' + s.open_ms * interval '1 ms'
                     WHERE c.source = 'ws' AND s.sent_ms >= %s AND s.sent_ms < %s
                     GROUP BY c.symbol, c.interval, c.time, c.committed_at) l
            """,
            (start * 1000, end * 1000),
        ).fetchone()
    return _percentiles(row)


def latency_stats(url: str, start: float, end: float, offset_ms: float) -> dict[str, float]:
    """Candle close → row committed, for ws rows whose candle closed in [start, end).

    This includes the simulator's own lateness in sending the closed frame."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            """
            SELECT count(*),
                   percentile_cont(ARRAY[0.5, 0.9, 0.99, 0.999]) WITHIN GROUP (ORDER BY ms),
                   max(ms), avg(ms)
              FROM (SELECT extract(epoch FROM committed_at - close_time) * 1000 - 1 + %s AS ms
                      FROM candles
                     WHERE source = 'ws'
                       AND close_time >= to_timestamp(%s) AND close_time < to_timestamp(%s)) s
            """,
            (offset_ms, start + offset_ms / 1000, end + offset_ms / 1000),
        ).fetchone()
    return _percentiles(row)


def run_serve(load: ServeLoad, workdir: Path, profile: bool = False) -> ServeResult:
    result = ServeResult(load)
    symbols = symbol_names(load.symbols)
    sim_port, http_port = free_port(), free_port()
    sent_log = workdir / f"{load.name}-sent.log"
    sim_args = [
        *KLINETRIO, "simulate", "--port", str(sim_port), "--symbols", ",".join(symbols),
        "--speed", "1", "--updates-per-second", str(load.updates_per_second),
        "--weight-limit", str(2**62), "--log-level", "WARNING",
        "--sent-log", str(sent_log),
    ]  # fmt: skip
    with (
        bench_database(load.name) as url,
        process(sim_args, f"{load.name}-simulate", workdir) as sim,
    ):
        wait_until(
            lambda: http_get(f"http://127.0.0.1:{sim_port}/api/v3/ping")[0] == 200,
            30,
            "the simulator",
        )
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("KLINETRIO_")},
            "KLINETRIO_DATABASE_URL": url,
            "KLINETRIO_SYMBOLS": ",".join(symbols),
            "KLINETRIO_INTERVALS": load.intervals,
            "KLINETRIO_WS_URL": f"ws://127.0.0.1:{sim_port}",
            "KLINETRIO_REST_URL": f"http://127.0.0.1:{sim_port}",
            "KLINETRIO_HTTP_ADDR": f"127.0.0.1:{http_port}",
            # Nothing to fetch at start: the run measures the live path, not a day of history.
            "KLINETRIO_SYNC_LOOKBACK": "0s",
        }
        started = time.monotonic()
        with process([*KLINETRIO, "serve"], f"{load.name}-serve", workdir, env) as serve:
            try:
                wait_until(
                    lambda: (
                        serve.poll() is None
                        and http_get(f"http://127.0.0.1:{http_port}/ready")[0] == 200
                    ),
                    load.settle_timeout_s,
                    "serve to be ready",
                    0.5,
                )
                # Start-up sync: one pass per series at start and one after each subscription.
                # Measure once REST requests have stopped for 2 s.
                quiet = {"n": -1.0, "since": time.monotonic()}

                def sync_done() -> bool:
                    if serve.poll() is not None:
                        raise RuntimeError("serve exited")
                    n = metrics(http_port).get("klinetrio_rest_requests_total", 0.0)
                    if n != quiet["n"]:
                        quiet["n"], quiet["since"] = n, time.monotonic()
                    return time.monotonic() - quiet["since"] >= 2.0

                with contextlib.suppress(RuntimeError):
                    wait_until(sync_done, load.settle_s, "start-up sync to finish", 0.5)
            except RuntimeError:
                log(tail(workdir / f"{load.name}-serve.log"))
                raise
            result.startup_s = round(time.monotonic() - started - 2.0, 1)
            pids = backend_pids(url)
            offset_before = exchange_offset(sim_port)
            time.sleep(2.0)  # let the first candles of every series pass (no gap checks before)

            spy = None
            if profile:
                spy_out = workdir / f"{load.name}-serve.pyspy.txt"
                spy = subprocess.Popen(
                    [str(BIN / "py-spy"), "record", "--pid", str(serve.pid), "--duration",
                     str(int(load.measure_s)), "--rate", "250", "--format", "raw",
                     "--nonblocking", "--threads", "--output", str(spy_out)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                result.sim_profile = str(workdir / f"{load.name}-simulate.pyspy.txt")
                spy_sim = subprocess.Popen(
                    [str(BIN / "py-spy"), "record", "--pid", str(sim.pid), "--duration",
                     str(int(load.measure_s)), "--rate", "100", "--format", "raw",
                     "--nonblocking", "--output", result.sim_profile],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip

            probe_streams = [f"{s.lower()}@kline_{i}" for s in symbols[:10] for i in ("1s", "1m")]
            probe = subprocess.Popen(
                [sys.executable, str(ROOT / "bench" / "probe.py"), f"ws://127.0.0.1:{sim_port}",
                 str(offset_before[0]), str(load.measure_s), *probe_streams],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            m0 = metrics(http_port)
            t0, c0 = time.time(), cpu_seconds(serve.pid)
            s0, p0 = cpu_seconds(sim.pid), cpu_of(pids)
            rss_samples = []
            while time.time() - t0 < load.measure_s:
                time.sleep(1.0)
                rss_samples.append(rss_mb(serve.pid))
            t1, c1 = time.time(), cpu_seconds(serve.pid)
            s1, p1 = cpu_seconds(sim.pid), cpu_of(pids)
            m1 = metrics(http_port)
            offset_after = exchange_offset(sim_port)
            with contextlib.suppress(Exception):
                result.exchange_latency = json.loads(probe.communicate(timeout=30)[0])
            result.writer_latency = histogram_quantiles(m0, m1, "klinetrio_writer_latency_seconds")
            if spy is not None:
                spy.wait(timeout=60)
                spy_sim.wait(timeout=60)
                result.profile = str(workdir / f"{load.name}-serve.pyspy.txt")
            time.sleep(2.0)  # candles that closed at the end of the window get committed
            result.rss_hwm_mb = round(rss_mb(serve.pid, "VmHWM"), 1)
            result.window_s = round(t1 - t0, 2)
            result.frames = int(m1["klinetrio_frames_total"] - m0["klinetrio_frames_total"])
            result.closed = int(
                m1["klinetrio_closed_candles_total"] - m0["klinetrio_closed_candles_total"]
            )
            result.rest_requests = int(
                m1.get("klinetrio_rest_requests_total", 0)
                - m0.get("klinetrio_rest_requests_total", 0)
            )
            result.frames_per_s = round(result.frames / (t1 - t0), 1)
            result.closed_per_s = round(result.closed / (t1 - t0), 1)
            result.serve_cpu_cores = round((c1 - c0) / (t1 - t0), 3)
            result.sim_cpu_cores = round((s1 - s0) / (t1 - t0), 3)
            result.pg_cpu_cores = round((p1 - p0) / (t1 - t0), 3)
            result.rss_mb = round(sorted(rss_samples)[len(rss_samples) // 2], 1)
            result.rss_max_mb = round(max(rss_samples), 1)
            result.connections = sum(
                1
                for line in http_get(f"http://127.0.0.1:{http_port}/metrics")[1]
                .decode()
                .splitlines()
                if line.startswith("klinetrio_connection_up{")
            )
            result.streams = load.streams
            offset = (offset_before[0] + offset_after[0]) / 2
            result.clock_offset_ms = round(offset, 2)
            result.clock_offset_error_ms = round(
                max(offset_before[1], offset_after[1])
                + abs(offset_before[0] - offset_after[0]) / 2,
                2,
            )
            result.latency_from_close = latency_stats(url, t0, t1, offset)
            result.latency = sent_latency_stats(url, t0, t1, sent_log)
            if m1.get("klinetrio_decode_errors_total") or m1.get("klinetrio_reconnects_total"):
                log(
                    f"  warning: decode errors/reconnects during {load.name}: "
                    f"{m1.get('klinetrio_decode_errors_total')}/{m1.get('klinetrio_reconnects_total')}"
                )
    return result


# --- backfill --------------------------------------------------------------------------------


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


def summarize_profile(path: str, top: int = 25) -> str:
    """py-spy's raw (collapsed) stacks → the functions with the most samples, self and total."""
    self_counts: collections.Counter[str] = collections.Counter()
    total_counts: collections.Counter[str] = collections.Counter()
    samples = 0
    idle = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        samples += count
        leaf = frames[-1]
        if any(
            k in leaf
            for k in ("epoll", "select.", "_wait (threading", "wait (threading", "get (queue")
        ):
            idle += count
        self_counts[_short(leaf)] += count
        for frame in set(map(_short, frames[1:])):
            total_counts[frame] += count
    lines = [f"{samples} samples ({idle} idle in epoll/lock waits)", "self%  total%  function"]
    for name, count in self_counts.most_common(top):
        lines.append(
            f"{100 * count / samples:5.1f}  {100 * total_counts[name] / samples:6.1f}  {name}"
        )
    lines.append("-- by total (inclusive) --")
    for name, count in total_counts.most_common(top):
        lines.append(
            f"{100 * self_counts[name] / samples:5.1f}  {100 * count / samples:6.1f}  {name}"
        )
    return "\n".join(lines)


def _short(frame: str) -> str:
    # "func (path/to/module.py:123)" → "func (module.py:123)"
    m = re.match(r"(.*) \((.*?)([^/]+\.py)(?::\d+)?\)$", frame)
    return f"{m[1]} ({m[3]})" if m else frame


# --- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description="klinetrio benchmarks")
    parser.add_argument("--quick", action="store_true", help="smaller loads, under a minute")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy serve (full load) and backfill"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, profiles)")
    parser.add_argument("--window", type=float, help="override the full-load window (seconds)")
    scenarios = ("idle", "full", "backfill", "archive", "store")
    parser.add_argument("--only", choices=scenarios, action="append")
    args = parser.parse_args()
    only = set(args.only or scenarios)

    m = machine()
    log(f"machine: {machine_line(m)}")
    if args.quick:
        idle = ServeLoad("idle", 50, "1s,1m", 0.5, 8.0)
        full = ServeLoad("full", 300, ALL_INTERVALS, 0.5, 12.0, settle_s=6.0)
        backfill_symbols, backfill_days = 2, 30
    else:
        idle = ServeLoad("idle", 50, "1s,1m", 0.5, 30.0)
        full = ServeLoad("full", 1500, ALL_INTERVALS, 0.5, 125.0)
        backfill_symbols, backfill_days = 4, 60

    if args.window:
        full.measure_s = args.window
    workdir = Path(tempfile.mkdtemp(prefix="klinetrio-bench-"))
    out: dict[str, object] = {}
    extra: dict[str, object] = {"mode": "quick" if args.quick else "full", "machine": m}
    started = time.monotonic()
    try:
        if "idle" in only:
            log(
                f"idle: {idle.streams} streams ({idle.symbols} symbols x {idle.intervals}), "
                f"{idle.updates_per_second:g} updates/s/stream, {idle.measure_s:g}s window"
            )
            r = run_serve(idle, workdir)
            log(f"  {_serve_line(r)}")
            out["rss_idle_mb"] = r.rss_mb
            extra["idle"] = _serve_dict(r)
        if "full" in only:
            log(
                f"load: {full.streams} streams ({full.symbols} symbols x 16 intervals), "
                f"{full.updates_per_second:g} updates/s/stream, {full.measure_s:g}s window"
            )
            r = run_serve(full, workdir, profile=args.profile)
            log(f"  {_serve_line(r)}")
            out["ingest_frames_per_s"] = r.frames_per_s
            out["ingest_cpu_cores"] = r.serve_cpu_cores
            out["closed_latency_p50_ms"] = r.latency.get("p50_ms")
            out["closed_latency_p99_ms"] = r.latency.get("p99_ms")
            out["rss_loaded_mb"] = r.rss_max_mb
            extra["load"] = _serve_dict(r)
            if r.profile:
                summary = summarize_profile(r.profile)
                log("serve profile (py-spy, full load):\n" + summary)
                if r.sim_profile:
                    log("simulator profile:\n" + summarize_profile(r.sim_profile, 12))
                extra["serve_profile"] = r.profile
        if "backfill" in only:
            log(
                f"backfill: {backfill_symbols} symbols x {backfill_days} days of 1m "
                f"({backfill_symbols * backfill_days * 1440:,} candles)"
            )
            b = run_backfill(backfill_symbols, backfill_days, workdir, profile=args.profile)
            log(
                f"  {b.candles:,} candles in {b.wall_s:.2f}s = {b.candles_per_s:,}/s end to end "
                f"({b.steady_candles_per_s:,}/s first to last commit); backfill "
                f"{b.cpu_cores:.2f} cores, exchange {b.sim_cpu_cores:.2f}, PostgreSQL "
                f"{b.pg_cpu_cores:.2f}; RSS max {b.rss_max_mb:.0f} MB"
            )
            out["backfill_candles_per_s"] = b.candles_per_s
            extra["backfill"] = b.__dict__
            if b.profile:
                log("backfill profile (py-spy):\n" + summarize_profile(b.profile))
        if "archive" in only:
            log(f"archive: {ARCHIVE_SYMBOL} x 2025 of 1m (525,600 candles) from the archives")
            a = run_archive(workdir)
            log(
                f"  {a.candles:,} candles from {a.files} files in {a.wall_s:.2f}s ="
                f" {a.candles_per_s:,}/s end to end ({a.steady_candles_per_s:,}/s first to last"
                f" commit); raw COPY ceiling {a.ceiling_per_s:,}/s (1 connection"
                f" {a.ceiling_1_per_s:,}/s, 2 connections {a.ceiling_2_per_s:,}/s) ="
                f" {100 * a.share_of_ceiling:.0f} % of it; REST backfill of the same year"
                f" {a.rest_candles_per_s:,}/s ({a.rest_wall_s:.1f}s) = x{a.times_rest:.1f}"
                f" (REST 50 ms away: {a.rest_50ms_candles_per_s:,}/s);"
                f" bulk path text {a.text_copy_per_s:,}/s vs binary {a.binary_copy_per_s:,}/s;"
                f" backfill {a.cpu_cores:.2f} cores, PostgreSQL {a.pg_cpu_cores:.2f}, exchange"
                f" {a.sim_cpu_cores:.2f}; RSS max {a.rss_max_mb:.0f} MB"
            )
            out["archive_candles_per_s"] = a.candles_per_s
            out["archive_copy_ceiling_per_s"] = a.ceiling_per_s
            out["archive_rest_candles_per_s"] = a.rest_candles_per_s
            extra["archive"] = a.__dict__
        if "store" in only:
            run_store_scenario(out, extra)
    finally:
        if not args.keep and not args.profile:
            for p in workdir.iterdir():
                p.unlink()
            workdir.rmdir()
        else:
            log(f"logs and profiles in {workdir}")
    extra["elapsed_s"] = round(time.monotonic() - started, 1)
    keys = (
        "ingest_frames_per_s", "ingest_cpu_cores", "closed_latency_p50_ms",
        "closed_latency_p99_ms", "backfill_candles_per_s", "rss_idle_mb", "rss_loaded_mb",
        "compressed_mib_per_million_1m", "backup_s_per_million", "restore_s_per_million",
        "archive_candles_per_s", "archive_copy_ceiling_per_s", "archive_rest_candles_per_s",
    )  # fmt: skip
    summary = {k: out.get(k) for k in keys}
    log("figures: " + ", ".join(f"{k}={v}" for k, v in summary.items()))
    if args.json:
        print(json.dumps({**summary, **extra}, default=str))


def run_store_scenario(out: dict[str, object], extra: dict[str, object]) -> None:
    """Compressed size and backup/restore time per million 1m candles (bench/store.py)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from store import line, run_store

    timescale_url = os.environ.get("BENCH_TIMESCALE_URL") or os.environ.get(
        "KLINETRIO_TEST_TIMESCALE_URL"
    )
    log("store: 1,002,240 real 1m candles (3 archive days x 232, one series)")
    plain = run_store(ADMIN_URL, False, log)
    log(f"  {line(plain)}")
    extra["store_postgresql"] = plain.__dict__
    out["backup_s_per_million"] = plain.per_million(plain.backup_s)
    out["restore_s_per_million"] = plain.per_million(plain.restore_s)
    if not timescale_url:
        log("  no TimescaleDB (set BENCH_TIMESCALE_URL): compressed size not measured")
        return
    ts = run_store(timescale_url, True, log)
    log(f"  {line(ts)}")
    extra["store_timescaledb"] = ts.__dict__
    assert ts.compressed_bytes is not None
    out["compressed_mib_per_million_1m"] = round(ts.compressed_bytes / ts.candles / 2**20 * 1e6, 2)
    extra["timescaledb_backup_s_per_million"] = ts.per_million(ts.backup_s)
    extra["timescaledb_restore_s_per_million"] = ts.per_million(ts.restore_s)


def _serve_line(r: ServeResult) -> str:
    lat = r.latency
    return (
        f"exchange-side p50/p99 {r.exchange_latency.get('p50_ms')}/{r.exchange_latency.get('p99_ms')} ms, "
        f"writer receipt-to-commit p50/p99 <= {r.writer_latency.get('p50_le_s')}/{r.writer_latency.get('p99_le_s')} s; "
        f"{r.frames_per_s:,.0f} frames/s ({r.closed_per_s:,.0f} closed/s) over {r.connections} "
        f"connections; serve {r.serve_cpu_cores:.2f} cores, simulator {r.sim_cpu_cores:.2f}, "
        f"PostgreSQL {r.pg_cpu_cores:.2f}; closed latency (frame sent → committed) p50 "
        f"{lat.get('p50_ms')} ms, p99 {lat.get('p99_ms')} ms, max {lat.get('max_ms')} ms "
        f"(n={lat.get('count')}); from the candle's close p50 {r.latency_from_close.get('p50_ms')} "
        f"ms, p99 {r.latency_from_close.get('p99_ms')} ms (clock ±{r.clock_offset_error_ms} ms); RSS {r.rss_mb:.0f} MB (max {r.rss_max_mb:.0f}, peak "
        f"{r.rss_hwm_mb:.0f}); ready+settled in {r.startup_s:.0f}s; {r.rest_requests} REST "
        f"requests (start-up sync) in the window"
    )


def _serve_dict(r: ServeResult) -> dict[str, object]:
    d = dict(r.__dict__)
    d["load"] = r.load.__dict__
    return d


if __name__ == "__main__":
    main()
