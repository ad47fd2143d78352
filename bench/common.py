"""What every benchmark scenario shares: processes, /proc readings, throw-away databases."""

from __future__ import annotations

import collections
import contextlib
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

try:
    import psutil  # the bench extra; /proc gives the same figures without it
except ImportError:  # pragma: no cover
    psutil = None

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
    """user + system CPU time of a process, all threads included (psutil's ``cpu_times``, or
    /proc/<pid>/stat where psutil is not installed: the same two counters)."""
    if psutil is not None:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error as exc:  # callers expect what reading /proc would raise
            raise ProcessLookupError(pid) from exc
        return float(times.user + times.system)
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
    """A fresh database with klinetrio's schema plus a ``committed_at`` column in ``candles``
    and the tables of the other kinds; dropped after."""
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
            for table in ("candles", "trades", "book_tickers", "tickers", "depth_snapshots"):
                conn.execute(
                    f"ALTER TABLE {table} ADD COLUMN committed_at timestamptz"
                    " DEFAULT clock_timestamp()"
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
