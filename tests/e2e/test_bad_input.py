"""Every mistake a user can make on the command line: one clear line, a non-zero exit, no
traceback, and no hang (each run has a hard timeout well under a minute).

One table: what the user did, and the words the error line must contain. The cases that need
an exchange to find out (an unknown symbol) or to get as far as opening the HTTP port (a busy
port) run against one simulator and a real database.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support.processes import assert_one_error_line, free_port, run_cli, simulator

BACKFILL = ["backfill", "--symbol", "btcusdt", "--interval", "1m"]
UNREACHABLE_DB = "postgresql://postgres@127.0.0.1:1/klinetrio"
HANG_GUARD_S = 45  # no case may take anywhere near this; it only keeps a hang from hanging CI


@dataclass(frozen=True)
class Case:
    id: str
    args: list[str]
    expected: str
    env: dict[str, str] = field(default_factory=dict)
    dotenv: str | None = None


OFFLINE = [
    Case("unknown-interval", ["serve", "--intervals", "1m,7m"], "unknown interval '7m'"),
    Case(
        "backfill-unknown-interval",
        ["backfill", "--symbol", "btcusdt", "--interval", "2m", "--start", "2024"],
        "unknown interval '2m'",
    ),
    Case("malformed-symbol", ["serve", "--symbols", "btc-usdt"], "invalid symbol 'btc-usdt'"),
    Case("no-symbol", ["serve", "--symbols", " , "], "no symbols given"),
    Case("unknown-market", ["serve", "--symbols", "margin:btcusdt"], "spot, usdm or coinm"),
    Case(
        "backfill-glob",
        [*BACKFILL[:2], "*usdt", *BACKFILL[3:], "--start", "2024"],
        "not patterns: '*usdt'",
    ),
    Case(
        "backfill-unknown-market",
        [*BACKFILL, "--start", "2024", "--market", "margin"],
        "spot, usdm or coinm",
    ),
    Case(
        "backfill-coinm-name",
        [*BACKFILL, "--start", "2024", "--market", "coinm"],
        "COIN-M",
    ),
    Case(
        "database-url-scheme",
        ["serve", "--database-url", "http://127.0.0.1/x"],
        "KLINETRIO_DATABASE_URL",
    ),
    Case(
        "database-url-port",
        ["serve", "--database-url", "postgresql://127.0.0.1:99999/x"],
        "KLINETRIO_DATABASE_URL",
    ),
    Case(
        "database-url-malformed",
        ["serve", "--database-url", "postgresql://127.0.0.1/x?sslmode=sometimes"],
        "sslmode",
    ),
    Case("unreachable-database", ["serve", "--database-url", UNREACHABLE_DB], "127.0.0.1:1"),
    Case(
        "backfill-unreachable-database",
        [*BACKFILL, "--start", "2024", "--database-url", UNREACHABLE_DB],
        "127.0.0.1:1",
    ),
    Case("ws-url", ["serve", "--ws-url", "stream.binance.com:9443"], "KLINETRIO_WS_URL"),
    Case("rest-url", ["serve", "--rest-url", "ftp://api.binance.com"], "KLINETRIO_REST_URL"),
    Case("http-addr", ["serve", "--http-addr", "localhost"], "invalid address 'localhost'"),
    Case("bad-duration", ["serve", "--sync-lookback", "3 days"], "invalid duration '3 days'"),
    Case("bad-log-level", ["serve", "--log-level", "LOUD"], "KLINETRIO_LOG_LEVEL"),
    Case(
        "unknown-variable",
        ["serve"],
        "unknown setting KLINETRIO_SYMBOL",
        env={"KLINETRIO_SYMBOL": "btcusdt"},
    ),
    Case(
        "too-many-streams",
        ["serve"],
        "at most 1024",
        env={"KLINETRIO_STREAMS_PER_CONNECTION": "2000"},
    ),
    Case("bad-dotenv-line", ["serve"], ".env:2: expected KEY=value", dotenv="# ok\nNOT A LINE\n"),
    Case(
        "dotenv-bad-value",
        ["serve"],
        "KLINETRIO_INTERVALS",
        dotenv="KLINETRIO_INTERVALS=\n KLINETRIO_INTERVALS = 1m,1x\n",
    ),
    Case(
        "start-after-end",
        [*BACKFILL, "--start", "2024-02-01", "--end", "2024-01-01"],
        "--end must be after --start",
    ),
    Case(
        "impossible-date",
        [*BACKFILL, "--start", "2024-02-30"],
        "day is out of range for month",
    ),
    Case("epoch-seconds", [*BACKFILL, "--start", "1704067200"], "13 digits"),
    Case("not-a-date", [*BACKFILL, "--start", "last tuesday"], "ISO 8601"),
    Case(
        "backfill-source",
        [*BACKFILL, "--start", "2024", "--source", "both"],
        "invalid --source 'both'",
    ),
    Case("import-path", ["import", "no/such/BTCUSDT-1m-2024-01.zip"], "no such file or directory"),
    Case("import-empty-folder", ["import", "."], "no kline files in it"),
    Case("import-market", ["import", "--market", "margin", "."], "invalid --market 'margin'"),
    Case("simulate-speed", ["simulate", "--speed", "0"], "--speed must be positive"),
    Case("simulate-data", ["simulate", "--data", "/nonexistent"], "is not a directory"),
]


@pytest.mark.parametrize("case", OFFLINE, ids=[c.id for c in OFFLINE])
def test_an_offline_mistake_is_one_error_line(tmp_path: Path, case: Case) -> None:
    if case.dotenv is not None:
        (tmp_path / ".env").write_text(case.dotenv)
    env = {"KLINETRIO_HTTP_ADDR": f"127.0.0.1:{free_port()}", **case.env}
    result = run_cli(*case.args, cwd=tmp_path, env=env, timeout=HANG_GUARD_S)
    assert_one_error_line(result, case.expected)


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with simulator(tmp_path_factory.mktemp("simulator"), "--speed", "60") as (_, base):
        yield base


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


ONLINE = [
    Case("unknown-symbol", ["serve", "--symbols", "btcusdt,nopeusdt"], "NOPEUSDT"),
    Case(
        "backfill-unknown-symbol",
        ["backfill", "--symbol", "NOPEUSDT", "--interval", "1m", "--start", "2024"],
        "NOPEUSDT",
    ),
    Case("busy-port", ["serve"], "cannot listen on 127.0.0.1:{busy}"),
]


@pytest.mark.parametrize("case", ONLINE, ids=[c.id for c in ONLINE])
def test_a_mistake_found_online_is_one_error_line(
    tmp_path: Path, exchange: str, database_url: str, busy_port: int, case: Case
) -> None:
    env = {
        "KLINETRIO_DATABASE_URL": database_url,
        "KLINETRIO_WS_URL": exchange.replace("http://", "ws://"),
        "KLINETRIO_REST_URL": exchange,
        "KLINETRIO_HTTP_ADDR": f"127.0.0.1:{busy_port if case.id == 'busy-port' else free_port()}",
    }
    result = run_cli(*case.args, cwd=tmp_path, env=env, timeout=HANG_GUARD_S)
    assert_one_error_line(result, case.expected.format(busy=busy_port))
