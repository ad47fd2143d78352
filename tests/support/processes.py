"""Running the real ``klinetrio`` commands as subprocesses, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

CLI_TIMEOUT_S = 60


def run_cli(
    *args: str, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = CLI_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """``python -m klinetrio ARGS`` to completion, with no KLINETRIO_* from our environment."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("KLINETRIO_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "klinetrio", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,  # a directory without a .env unless the test wrote one
        timeout=timeout,
        check=False,
    )


def assert_one_error_line(result: subprocess.CompletedProcess[str], expected: str) -> None:
    """A non-zero exit, no traceback, and exactly one ``klinetrio: error:`` line, the last."""
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    errors = [line for line in result.stderr.splitlines() if line.startswith("klinetrio: error:")]
    assert len(errors) == 1, result.stderr
    assert result.stderr.rstrip("\n").splitlines()[-1] == errors[0]  # the last word
    assert expected in errors[0], errors[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Command:
    """One ``python -m klinetrio ...`` process with its output captured to a file."""

    def __init__(self, args: list[str], log: Path, env: Mapping[str, str] | None = None) -> None:
        self.log = log
        self._log_file = log.open("wb")
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("KLINETRIO_")}
        full_env.update(env or {})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "klinetrio", *args],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=log.parent,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        finally:
            self._log_file.close()

    def stop(self, timeout: float = 15) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise
        self._log_file.close()
        return self.process.returncode

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self._log_file.close()


def wait_http(
    url: str, *, timeout: float = 20.0, ok: tuple[int, ...] = (200,), process: Command | None = None
) -> httpx.Response:
    """Poll ``url`` until it answers with a status in ``ok``."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.process.poll() is not None:
            raise AssertionError(f"process exited early:\n{process.output()[-3000:]}")
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code in ok:
                return response
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.1)
    detail = process.output()[-3000:] if process is not None else ""
    raise AssertionError(f"{url} did not answer {ok} within {timeout}s ({last})\n{detail}")


@contextmanager
def simulator(tmp_path: Path, *args: str) -> Iterator[tuple[Command, str]]:
    """A running ``klinetrio simulate``; yields it and its base URL (http://127.0.0.1:PORT)."""
    port = free_port()
    sim = Command(["simulate", "--port", str(port), *args], tmp_path / "simulate.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/api/v3/ping", process=sim)
        yield sim, base
    finally:
        if sim.process.poll() is None:
            sim.stop()


def replay_dir(shared_data: Path, tmp_path: Path, names: Iterable[str]) -> Path:
    """A folder of links to the real archives in ``shared/data/vision/spot``, for ``--data``."""
    data = tmp_path / "data"
    data.mkdir()
    for name in names:
        (data / name).symlink_to(shared_data / "vision" / "spot" / name)
    return data


def hourly_archives(symbols: Iterable[str], months: Iterable[str]) -> list[str]:
    return [f"{symbol}-1h-{month}.csv" for symbol in symbols for month in months]


def wait_newest_closed(base: str, health_url: str, keys: Iterable[str], interval_ms: int) -> int:
    """Wait (at most 10 s) until serve's /health shows the newest closed candle of every key
    (e.g. ``"BTCUSDT 1h"``); return that candle's open time (exchange ms)."""
    from klinetrio.core.models import format_ms

    now = int(httpx.get(f"{base}/api/v3/time").json()["serverTime"])
    newest_closed = now - now % interval_ms - interval_ms
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        last = httpx.get(f"{health_url}/health").json()["last_candle"]
        if all(last.get(key, "") >= format_ms(newest_closed) for key in keys):
            break
        time.sleep(0.05)
    return newest_closed


def wait_until(
    predicate: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    process: Command | None = None,
    poll: float = 0.05,
) -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` (a hang guard, not a timing
    expectation: the condition is what the test waits for)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if process is not None and process.process.poll() is not None:
            raise AssertionError(
                f"process exited while waiting for {what}:\n{process.output()[-3000:]}"
            )
        if time.monotonic() > deadline:
            detail = process.output()[-3000:] if process is not None else ""
            raise AssertionError(f"no {what} within {timeout:g}s\n{detail}")
        time.sleep(poll)


def health_of(url: str) -> dict[str, Any]:
    """serve's /health as JSON ({"status": "down"} when it does not answer)."""
    try:
        body: dict[str, Any] = httpx.get(f"{url}/health", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return {"status": "down"}
    return body


def exchange_time(base: str) -> int:
    return int(httpx.get(f"{base}/api/v3/time", timeout=5).json()["serverTime"])
