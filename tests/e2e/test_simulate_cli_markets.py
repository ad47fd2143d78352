"""``klinetrio simulate`` with futures markets and a listing schedule, as a real process."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from support.processes import assert_one_error_line, run_cli, simulator, wait_until


def _statuses(base: str, path: str, field: str = "status") -> dict[str, str]:
    body = httpx.get(f"{base}{path}", timeout=5).json()
    return {s["symbol"]: s[field] for s in body["symbols"]}


def test_markets_and_listings_from_the_command_line(tmp_path: Path) -> None:
    with simulator(
        tmp_path,
        "--speed",
        "600",
        "--start",
        "2024-01-01",
        "--symbols",
        "BTCUSDT,usdm:BTCUSDT,coinm:BTCUSD_PERP",
        "--synthetic",
        "usdm=2",
        "--list",
        "usdm:SOLUSDT@1200",
        "--delist",
        "coinm:BTCUSD_PERP@2024-01-01T00:20Z",
    ) as (sim, base):
        assert _statuses(base, "/fapi/v1/exchangeInfo") == {
            "BTCUSDT": "TRADING",
            "UM0001USDT": "TRADING",
            "UM0002USDT": "TRADING",
            "SOLUSDT": "PENDING_TRADING",
        }
        assert _statuses(base, "/dapi/v1/exchangeInfo", "contractStatus") == {
            "BTCUSD_PERP": "TRADING"
        }
        # Twenty exchange minutes are two real seconds.
        wait_until(
            lambda: _statuses(base, "/fapi/v1/exchangeInfo")["SOLUSDT"] == "TRADING",
            timeout=20,
            what="SOLUSDT trading",
            process=sim,
        )
        assert _statuses(base, "/dapi/v1/exchangeInfo", "contractStatus") == {
            "BTCUSD_PERP": "CLOSE"
        }
        rows = httpx.get(
            f"{base}/fapi/v1/klines",
            params={"symbol": "SOLUSDT", "interval": "1m", "startTime": 0},
            timeout=5,
        ).json()
        assert rows[0][0] == 1_704_068_400_000  # 2024-01-01T00:20Z


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--symbols", "perp:BTCUSDT"], "unknown market 'perp'"),
        (["--synthetic", "usdm"], "invalid --synthetic item"),
        (["--list", "SOLUSDT"], "expected [market:]SYMBOL@T"),
        (["--data", "usdm:/nonexistent"], "is not a directory"),
    ],
)
def test_bad_market_flags_are_one_line(tmp_path: Path, args: list[str], expected: str) -> None:
    assert_one_error_line(run_cli("simulate", *args, cwd=tmp_path), expected)
