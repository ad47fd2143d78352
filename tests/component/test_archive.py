"""The archive client against the simulator's ``/data/...`` face on 127.0.0.1:0 (and, for the
faults a simulator cannot make, a swapped transport on Trio's autojump clock).

The simulator rebuilds data.binance.vision's files from the replayed rows; for the real daily
zips of ``../shared/data`` its CSV must be byte for byte the one inside Binance's zip.
"""

from __future__ import annotations

import argparse
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from klinetrio.binance.archive import ArchiveClient
from klinetrio.binance.vision import ChunkReader, KlineChunk
from klinetrio.core.intervals import Interval
from klinetrio.core.models import parse_utc_ms
from klinetrio.errors import ArchiveError, ChecksumMismatch, ExchangeUnavailable, SettingsError
from klinetrio.simulate import Simulator, SimulatorConfig, add_arguments, config_from_args
from klinetrio.simulate.archives import build_zip

pytestmark = pytest.mark.shared_data
NOW = parse_utc_ms("2025-06-03T12:30", "now")


@asynccontextmanager
async def archive(
    shared_data: Path, **overrides: Any
) -> AsyncIterator[tuple[Simulator, ArchiveClient]]:
    values: dict[str, Any] = {
        "port": 0,
        "start_ms": NOW,
        "data_dir": str(shared_data / "vision" / "spot"),
    }
    values.update(overrides)
    sim = Simulator(SimulatorConfig(**values))
    async with trio.open_nursery() as nursery:
        port = await nursery.start(sim.serve)
        async with httpx.AsyncClient() as http:
            yield sim, ArchiveClient(http, f"http://127.0.0.1:{port}")
        nursery.cancel_scope.cancel()


async def chunks_of(client: ArchiveClient, *args: str) -> list[KlineChunk] | None:
    verified = await client.fetch(*args)  # type: ignore[arg-type]
    if verified is None:
        return None
    with verified:
        reader = ChunkReader(verified.file, verified.name, interval=Interval(args[2]))
        out = []
        while (chunk := reader.read()) is not None:
            out.append(chunk)
        reader.close()
    return out


async def test_the_simulators_daily_zip_holds_binances_own_csv(shared_data: Path) -> None:
    with trio.fail_after(20):
        async with archive(shared_data) as (sim, client):
            chunks = await chunks_of(client, "daily", "BTCUSDT", "1m", "2020-01-02")
    assert chunks is not None
    real = shared_data / "vision" / "spot" / "BTCUSDT-1m-2020-01-02.zip"
    with zipfile.ZipFile(real) as z:
        assert b"".join(c.csv for c in chunks) == z.read("BTCUSDT-1m-2020-01-02.csv")
    stats = client.statistics()
    assert (stats.files, stats.requests, stats.mismatches) == (1, 2, 0)  # CHECKSUM, then the zip
    assert sim.statistics().archive_files_served == 1


async def test_monthly_files_keep_the_halt_and_switch_to_microseconds_in_2025(
    shared_data: Path,
) -> None:
    with trio.fail_after(20):
        async with archive(shared_data) as (_, client):
            march = await chunks_of(client, "monthly", "BTCUSDT", "1h", "2023-03")
            january = await chunks_of(client, "monthly", "BTCUSDT", "1h", "2025-01")
    assert march is not None
    assert january is not None
    spot = shared_data / "vision" / "spot"
    body = (spot / "BTCUSDT-1h-2023-03.csv").read_bytes()
    assert b"".join(c.csv for c in march) == body[body.index(b"\n") + 1 :]  # 743 rows, no header
    assert b"".join(c.csv for c in january) == (spot / "BTCUSDT-1h-2025-01.csv").read_bytes()


async def test_what_the_archive_lacks_is_not_published(shared_data: Path) -> None:
    with trio.fail_after(20):
        async with archive(shared_data, archive_missing=("2020-01-03", "2025-02")) as (sim, client):
            # --archive-missing-days: a day, and a month (whose days stay published)
            assert await client.fetch("daily", "BTCUSDT", "1m", "2020-01-03") is None
            assert await client.fetch("monthly", "BTCUSDT", "1h", "2025-02") is None
            assert await client.fetch("daily", "BTCUSDT", "1h", "2025-02-03") is not None
            assert await client.fetch("daily", "BTCUSDT", "1h", "2025-06-03") is None  # today
            assert await client.fetch("monthly", "BTCUSDT", "1h", "2025-06") is None  # this month
            assert await client.fetch("monthly", "BTCUSDT", "1h", "2023-07") is None  # no candles
            assert await client.fetch("daily", "NOPEUSDT", "1h", "2023-03-01") is None
            stats = client.statistics()
    assert stats.not_published == 6
    assert stats.files == 1
    assert sim.statistics().archive_not_found == 6


async def test_corrupted_files_fail_their_checksum_every_time(shared_data: Path) -> None:
    with trio.fail_after(20):
        async with archive(shared_data, archive_corrupt=1) as (sim, client):
            for _ in range(2):
                with pytest.raises(ChecksumMismatch, match=r"BTCUSDT-1h-2023-04\.zip"):
                    await client.fetch("monthly", "BTCUSDT", "1h", "2023-04")
            assert await client.fetch("monthly", "BTCUSDT", "1h", "2023-05") is not None
    assert client.statistics().mismatches == 2
    assert sim.statistics().archive_corrupted == 1


def test_simulator_flags_for_archives() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = config_from_args(
        parser.parse_args(
            ["--archive-corrupt", "2", "--archive-missing-days", "2023-03-05, 2023-04"]
        )
    )
    assert config.archive_corrupt == 2
    assert config.archive_missing == ("2023-03-05", "2023-04")
    for bad in (["--archive-missing-days", "2023-02-30"], ["--archive-corrupt", "-1"]):
        with pytest.raises(SettingsError):
            config_from_args(parser.parse_args(bad))


# --- faults of the network, on a swapped transport ----------------------------------------------

ROWS = b"1577836800000,1,1,1,1,1,1577836859999,1,1,1,1,0\n"


class FlakyArchive:
    """Serves one file, after ``fail`` answers of ``status`` (or dropped connections)."""

    def __init__(self, fail: int, status: int | None) -> None:
        from klinetrio.simulate.market import Bar

        bar = Bar("BTCUSDT", "1m", 1577836800000, 1577836859999, *["1"] * 6, 1, "1", "1")
        self.body, self.digest = build_zip("BTCUSDT-1m-2020-01-01.zip", [bar], False)
        self.fail = fail
        self.status = status
        self.requests = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        if self.fail > 0:
            self.fail -= 1
            if self.status is None:
                raise httpx.ReadError("connection reset", request=request)
            return httpx.Response(self.status)
        if request.url.path.endswith(".CHECKSUM"):
            return httpx.Response(200, content=f"{self.digest}  BTCUSDT-1m-2020-01-01.zip".encode())
        return httpx.Response(200, content=self.body)


async def inline(fn: Any, *args: Any) -> Any:
    """The offload seam: hashing and spooling run inline, so the autojump clock stands still
    while they work (a worker thread abandoned on cancel would let it run ahead)."""
    return fn(*args)


@pytest.mark.parametrize("status", [503, 429, None])
async def test_transient_faults_are_retried_with_backoff(
    autojump_clock: trio.testing.MockClock, status: int | None
) -> None:
    fake = FlakyArchive(fail=3, status=status)
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake)) as http:
        client = ArchiveClient(http, "https://data.binance.vision", max_attempts=5, offload=inline)
        with trio.fail_after(600):
            verified = await client.fetch("daily", "BTCUSDT", "1m", "2020-01-01")
    assert verified is not None
    verified.close()
    stats = client.statistics()
    assert (stats.retries, stats.files, stats.requests) == (3, 1, 5)


async def test_a_fault_that_lasts_is_raised_and_other_statuses_are_final(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(FlakyArchive(9, 500))) as http:
        client = ArchiveClient(http, "https://data.binance.vision", max_attempts=3, offload=inline)
        with trio.fail_after(600), pytest.raises(ExchangeUnavailable):
            await client.fetch("daily", "BTCUSDT", "1m", "2020-01-01")
    async with httpx.AsyncClient(transport=httpx.MockTransport(FlakyArchive(9, 403))) as http:
        client = ArchiveClient(http, "https://data.binance.vision", offload=inline)
        with trio.fail_after(600), pytest.raises(ArchiveError, match="403"):
            await client.fetch("daily", "BTCUSDT", "1m", "2020-01-01")
    assert client.statistics().requests == 1  # no retry
