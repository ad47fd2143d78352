"""The daily aggTrades files of ``../shared/data`` read as ``trades`` rows: spot (no header,
eight columns), USD-M and COIN-M (a header, seven columns), ids consecutive, values the file's
exact strings, a range of ids cut out, and a malformed file one clear error."""

from __future__ import annotations

import hashlib
import io
import zipfile
from datetime import datetime
from pathlib import Path

import pytest

from klinetrio.binance.trade_archive import parse_agg_trades, read_agg_trades
from klinetrio.binance.vision import agg_trades_path, parse_checksum
from klinetrio.errors import ArchiveError


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("folder", "name", "market", "count"),
    [
        ("spot-aggTrades", "PEPEUSDT-aggTrades-2024-10-27.zip", "spot", 57_229),
        ("futures-um-daily", "APEUSDT-aggTrades-2024-10-18.zip", "usdm", None),
        ("futures-cm-daily", "BTCUSD_PERP-aggTrades-2026-05-08.zip", "coinm", None),
    ],
)
def test_real_files(
    shared_data: Path, folder: str, name: str, market: str, count: int | None
) -> None:
    path = shared_data / "vision" / folder / name
    symbol = name.split("-")[0]
    with path.open("rb") as file:
        rows = read_agg_trades(file, market, symbol)
    if count is not None:
        assert len(rows) == count
    ids = [r[3] for r in rows]
    assert ids == list(range(ids[0], ids[0] + len(rows)))  # consecutive
    day_start = int(datetime.fromisoformat(name[-14:-4] + "T00:00+00:00").timestamp() * 1000)
    assert all(day_start <= r[2] < day_start + 86_400_000 for r in rows)  # ms, inside the day
    assert {r[0] for r in rows} == {market}
    assert {r[1] for r in rows} == {symbol}
    assert {r[9] for r in rows} == {"archive"}
    with zipfile.ZipFile(path) as archive:
        first_line = archive.read(archive.namelist()[0]).decode().splitlines()
    data = first_line[1] if market != "spot" else first_line[0]
    a, p, q, f, last, t, m = data.split(",")[:7]
    assert rows[0][2:9] == (int(t), int(a), p, q, int(f), int(last), m.lower() == "true")
    # Only the ids asked for.
    with path.open("rb") as file:
        middle = read_agg_trades(file, market, symbol, ids[10], ids[19])
    assert [r[3] for r in middle] == ids[10:20]
    checksum = path.with_name(path.name + ".CHECKSUM")
    if checksum.exists():
        expected = parse_checksum(checksum.read_bytes(), name)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == expected


def test_microseconds_and_bad_files() -> None:
    text = "5,0.1,2.0,7,8,1735689600123456,True,True\n"
    [row] = parse_agg_trades(text, "spot", "BTCUSDT")
    assert row == ("spot", "BTCUSDT", 1735689600123, 5, "0.1", "2.0", 7, 8, True, "archive")
    with pytest.raises(ArchiveError, match="line 2 is not a trade"):
        parse_agg_trades(text + "oops\n", "spot", "BTCUSDT")
    with pytest.raises(ArchiveError, match="line 1 is malformed"):
        parse_agg_trades("5,0.1,2.0,7\n", "spot", "BTCUSDT")
    with pytest.raises(ArchiveError, match="not a zip"):
        read_agg_trades(io.BytesIO(b"garbage"), "spot", "BTCUSDT")
    assert (
        agg_trades_path("usdm", "APEUSDT", "2024-10-18")
        == "/data/futures/um/daily/aggTrades/APEUSDT/APEUSDT-aggTrades-2024-10-18.zip"
    )
