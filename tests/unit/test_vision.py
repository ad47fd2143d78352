"""data.binance.vision files: names and paths, CHECKSUM lines, and kline CSV rows read exactly,
against the real files in ``../shared/data/vision`` where they are present."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from klinetrio.binance.vision import (
    ChunkReader,
    KlineChunk,
    check_digest,
    file_name,
    file_path,
    parse_checksum,
    parse_chunk,
    parse_file_name,
    sha256_of,
)
from klinetrio.core.intervals import Interval
from klinetrio.core.planner import period_span
from klinetrio.errors import ArchiveFormatError, ChecksumMismatch, SettingsError

H1 = Interval("1h")
HALT = 1679662800000  # 2023-03-24T13:00Z: a spot trading halt, no candle exists


def read_all(path: Path, *, chunk_bytes: int = 1 << 20) -> list[KlineChunk]:
    name = parse_file_name(path.name)
    assert name is not None
    chunks = []
    with path.open("rb") as stream:
        reader = ChunkReader(
            stream,
            path.name,
            interval=Interval(name.interval),
            span=name.span,
            chunk_bytes=chunk_bytes,
        )
        while (chunk := reader.read()) is not None:
            chunks.append(chunk)
        reader.close()
    return chunks


def rows_of(chunks: list[KlineChunk]) -> list[list[str]]:
    return [line.split(",") for c in chunks for line in c.csv.decode().splitlines()]


def test_names_and_paths() -> None:
    assert file_name("BTCUSDT", "1M", "2024-01") == "BTCUSDT-1mo-2024-01.zip"
    assert (
        file_path("usdm", "daily", "BTCUSDT", "1m", "2024-01-02")
        == "/data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-02.zip"
    )
    assert file_path("coinm", "monthly", "BTCUSD_PERP", "1h", "2024-01").startswith(
        "/data/futures/cm/monthly/klines/BTCUSD_PERP/1h/"
    )
    assert file_path("spot", "monthly", "ETHUSDT", "1M", "2024-01").endswith(
        "/ETHUSDT/1mo/ETHUSDT-1mo-2024-01.zip"
    )
    with pytest.raises(SettingsError):
        file_path("margin", "daily", "BTCUSDT", "1m", "2024-01-02")
    name = parse_file_name("BTCUSDT-1mo-2024-01.zip")
    assert name is not None
    assert (name.symbol, name.interval, name.period, name.frequency) == (
        "BTCUSDT",
        "1M",
        "2024-01",
        "monthly",
    )
    daily = parse_file_name("BTCUSDT-1m-2020-01-01.csv")
    assert daily is not None
    assert daily.frequency == "daily"
    assert daily.span == period_span("2020-01-01")
    # COIN-M contracts and USD-M delivery contracts carry their delivery in the name.
    for symbol in ("BTCUSD_PERP", "ETHUSD_211231", "BTCUSDT_240329"):
        coin = parse_file_name(f"{symbol}-1h-2021-07.zip")
        assert coin is not None
        assert (coin.symbol, coin.interval) == (symbol, "1h")
    for bad in (
        "ADABTC-1m-2021-11-27-head.csv",
        "BTCUSDT-2m-2024-01.zip",
        "BTCUSDT-1m-2024-01.zip.CHECKSUM",
        "btcusdt-1m-2024-01.zip",
        "BTCUSDT-1m-2023-02-30.zip",
        "BTCUSDT-aggTrades-2024-01.zip",
        "BTCUSD_-1h-2021-07.zip",
    ):
        assert parse_file_name(bad) is None, bad


def test_checksum_lines_with_and_without_a_trailing_newline() -> None:
    digest = "dd579c62368ded93d3f01a1904575b932279e32936e181c062763e605793c1c2"
    name = "BTCUSDT-1m-2020-01-01.zip"
    assert parse_checksum(f"{digest}  {name}".encode(), name) == digest
    assert parse_checksum(f"{digest}  {name}\n".encode(), name) == digest
    assert parse_checksum(f"{digest.upper()} *{name}\r\n".encode(), name) == digest
    with pytest.raises(ArchiveFormatError, match="is for"):
        parse_checksum(f"{digest}  BTCUSDT-1m-2020-01-02.zip".encode(), name)
    for bad in (b"", b"<Error>NoSuchKey</Error>", f"{digest[:-1]}  {name}".encode()):
        with pytest.raises(ArchiveFormatError):
            parse_checksum(bad, name)
    check_digest(name, digest, digest)
    with pytest.raises(ChecksumMismatch, match="damaged or was changed"):
        check_digest(name, digest, "0" * 64)


@pytest.mark.shared_data
def test_the_real_checksums_match_their_zips(shared_data: Path) -> None:
    zips = sorted((shared_data / "vision").glob("*/*.zip"))
    checked = 0
    for path in zips:
        sidecar = path.with_name(path.name + ".CHECKSUM")
        if not sidecar.exists():
            continue
        with path.open("rb") as stream:
            assert parse_checksum(sidecar.read_bytes(), path.name) == sha256_of(stream)
        checked += 1
    assert checked == 7  # three spot 2020 days (no newline), four 2026 copies (with one)


@pytest.mark.shared_data
def test_monthly_csv_with_a_header_and_a_halt(shared_data: Path) -> None:
    path = shared_data / "vision" / "spot" / "BTCUSDT-1h-2023-03.csv"
    chunks = read_all(path)
    times = [t for c in chunks for t in c.open_times]
    assert len(times) == 743
    assert HALT not in times
    assert HALT - 3_600_000 in times
    assert HALT + 3_600_000 in times
    lines = path.read_bytes().splitlines(keepends=True)
    assert lines[0].startswith(b"open_time,")  # the header the repository's author added
    assert b"".join(c.csv for c in chunks) == b"".join(lines[1:])  # the rows, byte for byte


@pytest.mark.shared_data
def test_microsecond_files_keep_their_bytes_and_give_millisecond_open_times(
    shared_data: Path,
) -> None:
    path = shared_data / "vision" / "spot" / "BTCUSDT-1h-2025-01.csv"
    chunks = read_all(path, chunk_bytes=10_000)  # many small chunks: rows are never split
    assert len(chunks) > 5
    rows = rows_of(chunks)
    assert len(rows) == 744
    assert rows[0][0] == "1735689600000000"
    assert rows[0][6] == "1735693199999999"  # the µs close time, kept as written
    assert chunks[0].open_times[0] == 1735689600000
    assert b"".join(c.csv for c in chunks) == path.read_bytes()


@pytest.mark.shared_data
def test_daily_zips_and_futures_headers(shared_data: Path) -> None:
    day = read_all(shared_data / "vision" / "spot" / "BTCUSDT-1m-2020-01-02.zip")
    times = [t for c in day for t in c.open_times]
    assert times == list(range(1577923200000, 1577923200000 + 1440 * 60_000, 60_000))
    with zipfile.ZipFile(shared_data / "vision" / "spot" / "BTCUSDT-1m-2020-01-02.zip") as z:
        assert b"".join(c.csv for c in day) == z.read("BTCUSDT-1m-2020-01-02.csv")
    futures = read_all(shared_data / "vision" / "futures-um-daily" / "BTCUSDT-1h-2024-10-28.zip")
    rows = rows_of(futures)
    assert len(rows) == 24
    assert rows[0][0] == "1730073600000"
    micro = read_all(shared_data / "vision" / "spot-daily" / "BTCUSDT-1h-2026-05-08.zip")
    assert micro[0].open_times[0] == 1778198400000
    assert rows_of(micro)[0][6].endswith("999999")
    monthly = read_all(shared_data / "vision" / "futures-um" / "AVAXUSDT-1m-2025-02.csv")
    assert sum(c.rows for c in monthly) == 40_320


def _parse(data: bytes, interval: Interval = H1, span: tuple[int, int] | None = None) -> KlineChunk:
    return parse_chunk(data, interval=interval, span=span, where="x.csv")


ROW = b"1672531200000,1.1,1.2,1.0,1.15,10,1672534799999,11.5,3,5,5.75,0\n"


def test_rows_of_the_wrong_shape_name_their_line() -> None:
    assert _parse(ROW).open_times == [1672531200000]
    assert _parse(ROW.replace(b"\n", b"\r\n") + b"\n").csv == ROW  # CRLF and a blank line
    with pytest.raises(ArchiveFormatError, match=r"x.csv:2: 11 columns"):
        _parse(ROW + ROW.replace(b",0\n", b"\n"))
    with pytest.raises(ArchiveFormatError, match=r"x.csv:1: open time is not an integer"):
        _parse(ROW.replace(b"1672531200000,", b"abc,", 1))
    with pytest.raises(ArchiveFormatError, match="not a 1h open time"):
        _parse(ROW.replace(b"1672531200000,", b"1672531260000,", 1))
    with pytest.raises(ArchiveFormatError, match="outside the file's period"):
        _parse(ROW, span=period_span("2023-02"))
    with pytest.raises(ArchiveFormatError, match="not a whole millisecond"):
        _parse(ROW.replace(b"1672531200000,", b"1672531200000001,", 1))
    assert _parse(ROW.replace(b"1672531200000,", b"1672531200000000,", 1)).open_times == [
        1672531200000
    ]


def test_a_zip_must_hold_one_readable_csv() -> None:
    with pytest.raises(ArchiveFormatError, match="not a readable zip"):
        ChunkReader(io.BytesIO(b"PK\x03\x04 not really"), "X-1h-2023-01.zip", interval=H1)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.csv", ROW)
        archive.writestr("b.csv", ROW)
    with pytest.raises(ArchiveFormatError, match="expected one CSV inside"):
        ChunkReader(io.BytesIO(buffer.getvalue()), "X-1h-2023-01.zip", interval=H1)
    reader = ChunkReader(io.BytesIO(b"open_time,open\n" + ROW * 3), "X-1h-2023-01.csv", interval=H1)
    chunk = reader.read()
    assert chunk is not None
    assert chunk.rows == 3
    assert reader.read() is None
