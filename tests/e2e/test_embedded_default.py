"""The quick start, end to end: no database configured, the real CLI as subprocesses.

``klinetrio serve`` with no ``KLINETRIO_DATABASE_URL`` keeps its candles in the embedded
PostgreSQL of ``KLINETRIO_DATA_DIR``; ``klinetrio db-url`` hands that database to psql/psycopg
while serve runs; the candles survive a restart (and the restart fills what it missed);
``klinetrio db-stop`` stops the server. Then the command line's manners: ``--version``,
and examples in every ``--help`` (bad input: ``test_bad_input.py``).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from support.processes import CLI_TIMEOUT_S, Command, free_port, run_cli, simulator, wait_http

import klinetrio

MINUTE_MS = 60_000


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A KLINETRIO_DATA_DIR of our own; its embedded server is stopped whatever happens.

    Not under tmp_path: pytest resets /tmp/pytest-of-<user> to mode 0700 at every run, which
    would lock the server's unprivileged account (when the tests run as root) out of its data.
    """
    path = Path(tempfile.mkdtemp(prefix="klinetrio-e2e-embedded-"))
    try:
        yield path
    finally:
        subprocess.run(
            [sys.executable, "-m", "klinetrio", "db-stop", "--force", "--data-dir", str(path)],
            capture_output=True,
            timeout=CLI_TIMEOUT_S,
            check=False,
        )
        shutil.rmtree(path, ignore_errors=True)


def stored(url: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url, connect_timeout=10) as conn:
        return conn.execute(
            """
            SELECT (extract(epoch FROM time) * 1000)::bigint, close::text, source
              FROM candles WHERE market = 'spot' AND symbol = 'BTCUSDT' AND interval = '1m'
             ORDER BY time
            """
        ).fetchall()


def wait_written(health_url: str, count: int, process: Command, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(health_url, timeout=5).json()["candles_written"] >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"fewer than {count} candles written:\n{process.output()[-3000:]}")


def serve_once(tmp_path: Path, name: str, env: dict[str, str]) -> tuple[Command, str]:
    http_port = free_port()
    serve = Command(
        ["serve"],
        tmp_path / f"{name}.log",
        env={**env, "KLINETRIO_HTTP_ADDR": f"127.0.0.1:{http_port}"},
    )
    base = f"http://127.0.0.1:{http_port}"
    # The first run initdb's the embedded cluster: allow for a slow disk.
    wait_http(f"{base}/ready", timeout=90, process=serve)
    return serve, base


def stop_serve(serve: Command) -> str:
    serve.signal(signal.SIGTERM)
    code = serve.wait(20)
    log = serve.output()
    assert code == 0, log[-3000:]
    assert "Traceback" not in log
    return log


def assert_contiguous(times: list[int]) -> None:
    assert times == list(range(times[0], times[-1] + MINUTE_MS, MINUTE_MS))


def test_serve_keeps_candles_in_the_embedded_database(tmp_path: Path, data_dir: Path) -> None:
    with simulator(tmp_path, "--speed", "60", "--symbols", "BTCUSDT") as (_, sim_base):
        env = {
            "KLINETRIO_DATA_DIR": str(data_dir),
            "KLINETRIO_SYMBOLS": "btcusdt",
            "KLINETRIO_INTERVALS": "1m",
            "KLINETRIO_WS_URL": sim_base.replace("http://", "ws://"),
            "KLINETRIO_REST_URL": sim_base,
            "KLINETRIO_SYNC_LOOKBACK": "10m",
        }
        assert "KLINETRIO_DATABASE_URL" not in env

        # First run: the look-back from REST, then live candles (one a second at --speed 60).
        serve, base = serve_once(tmp_path, "serve-1", env)
        try:
            wait_written(f"{base}/health", 15, serve)
            # db-url while serve runs: the URL of the very database serve writes to.
            db_url = run_cli("db-url", cwd=tmp_path, env={"KLINETRIO_DATA_DIR": str(data_dir)})
            assert db_url.returncode == 0, db_url.stderr
            url = db_url.stdout.strip()
            assert url.startswith("postgresql://"), db_url.stdout
            assert "started the embedded PostgreSQL" not in db_url.stderr  # serve's server
            first = stored(url)
            assert len(first) >= 15
            assert_contiguous([int(r[0]) for r in first])  # type: ignore[call-overload]
            assert {r[2] for r in first} == {"rest", "ws"}
            log = stop_serve(serve)
        finally:
            if serve.process.poll() is None:
                serve.kill()
        assert "using the embedded PostgreSQL" in log
        assert "stopped: " in log

        # Second run, after the first stopped: nothing lost, and the pause filled in.
        serve, base = serve_once(tmp_path, "serve-2", env)
        try:
            # The pause filled in, then a few more live candles.
            wait_written(f"{base}/health", 3, serve)
            second = stored(run_cli("db-url", cwd=tmp_path, env=env).stdout.strip())
            stop_serve(serve)
        finally:
            if serve.process.poll() is None:
                serve.kill()
    assert set(first) <= set(second)
    assert len(second) > len(first)
    assert_contiguous([int(r[0]) for r in second])  # type: ignore[call-overload]

    # With every serve gone, db-url starts the server and keeps it up until db-stop.
    db_url = run_cli("db-url", cwd=tmp_path, env={"KLINETRIO_DATA_DIR": str(data_dir)})
    assert db_url.returncode == 0, db_url.stderr
    assert "started the embedded PostgreSQL" in db_url.stderr
    assert set(second) <= set(stored(db_url.stdout.strip()))
    db_stop = run_cli("db-stop", cwd=tmp_path, env={"KLINETRIO_DATA_DIR": str(data_dir)})
    assert db_stop.returncode == 0, db_stop.stderr
    assert "embedded PostgreSQL stopped" in db_stop.stderr
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(db_url.stdout.strip(), connect_timeout=5).close()
    again = run_cli("db-stop", cwd=tmp_path, env={"KLINETRIO_DATA_DIR": str(data_dir)})
    assert again.returncode == 0
    assert "was not running" in again.stderr


def test_version(tmp_path: Path) -> None:
    result = run_cli("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == f"klinetrio {klinetrio.__version__}"


@pytest.mark.parametrize(
    "command",
    [
        "serve",
        "backfill",
        "import",
        "simulate",
        "db-url",
        "db-stop",
    ],
)
def test_help_shows_examples(tmp_path: Path, command: str) -> None:
    result = run_cli(command, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "examples:" in result.stdout
    examples = result.stdout.split("examples:", 1)[1]
    assert f"klinetrio {command}" in examples
