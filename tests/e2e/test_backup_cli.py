"""``klinetrio backup``, ``restore`` and ``export`` as a user runs them: the real CLI as
subprocesses, on the embedded database (backup in one data dir, restore into a fresh one), and
the one-line errors of every mistake a user can make with them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.candles import checksum, january_2020

from klinetrio.store.database import Database

CLI_TIMEOUT_S = 120


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLINETRIO_")}
    return subprocess.run(
        [sys.executable, "-m", "klinetrio", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


@pytest.fixture
def data_dirs() -> Iterator[tuple[Path, Path]]:
    """Two KLINETRIO_DATA_DIRs (not under tmp_path: see test_embedded_default.data_dir)."""
    dirs = (
        Path(tempfile.mkdtemp(prefix="klinetrio-e2e-backup-a-")),
        Path(tempfile.mkdtemp(prefix="klinetrio-e2e-backup-b-")),
    )
    try:
        yield dirs
    finally:
        for path in dirs:
            subprocess.run(
                [sys.executable, "-m", "klinetrio", "db-stop", "--force", "--data-dir", str(path)],
                capture_output=True,
                timeout=CLI_TIMEOUT_S,
                check=False,
            )
            shutil.rmtree(path, ignore_errors=True)


def embedded_url(data_dir: Path, cwd: Path) -> str:
    done = run_cli("db-url", "--data-dir", str(data_dir), cwd=cwd)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_backup_and_restore_on_the_embedded_database(
    data_dirs: tuple[Path, Path], shared_data: Path, tmp_path: Path
) -> None:
    source_dir, target_dir = data_dirs
    url = embedded_url(source_dir, tmp_path)
    db = Database(url)
    db.migrate()
    db.write(january_2020(shared_data))
    db.close()
    before = checksum(url)

    backups = tmp_path / "backups"
    done = run_cli("backup", "--data-dir", str(source_dir), "--dir", str(backups), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    file = Path(done.stdout.strip())
    assert file.parent == backups
    assert file.name.startswith("klinetrio-")
    assert file.name.endswith("Z.dump")
    assert "backup written" in done.stderr

    done = run_cli("restore", str(file), "--data-dir", str(target_dir), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert checksum(embedded_url(target_dir, tmp_path)) == before

    # The same file again: the target is not empty any more.
    done = run_cli("restore", str(file), "--data-dir", str(target_dir), cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("klinetrio: error: database ")
    assert "is not empty" in done.stderr
    assert "Traceback" not in done.stderr

    # Export straight to stdout: the archive's own rows, after the header.
    done = run_cli(
        "export", "--data-dir", str(source_dir), "--symbol", "btcusdt", "--interval", "1m",
        "--start", "2020-01-01", "--end", "2020-01-01T00:03", "--out", "-", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith("open_time,open,high,low,close,volume,close_time")
    assert len(done.stdout.splitlines()) == 4
    assert "exported 3 candles of BTCUSDT 1m" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["restore", "missing.dump", "--database-url", "postgresql://127.0.0.1:1/x"],
            "no such backup file",
        ),
        (["serve", "--retention", "trades:1x"], "KLINETRIO_RETENTION"),
        (["serve", "--derived-intervals", "7s"], "KLINETRIO_DERIVED_INTERVALS"),
        (["serve", "--compress-after", "soon"], "KLINETRIO_COMPRESS_AFTER"),
        (["serve", "--backup-at", "25:00"], "KLINETRIO_BACKUP_AT"),
        (
            [
                "export",
                "--symbol",
                "BTCUSDT",
                "--interval",
                "7q",
                "--start",
                "2024-01-01",
                "--out",
                "x.csv",
            ],
            "invalid derived interval",
        ),
        (
            [
                "export",
                "--symbol",
                "BTCUSDT",
                "--interval",
                "1m",
                "--start",
                "2024-01-02",
                "--end",
                "2024-01-01",
                "--out",
                "x.csv",
            ],
            "--end must be after --start",
        ),
        (
            [
                "export",
                "--symbol",
                "BTCUSDT",
                "--interval",
                "1m",
                "--start",
                "2024-01-01",
                "--format",
                "parquet",
                "--out",
                "-",
            ],
            "Parquet cannot go to stdout",
        ),
    ],
)
def test_mistakes_end_in_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    done = run_cli(*args, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("klinetrio: error: ")
    assert message in lines[-1]
    assert "Traceback" not in done.stderr
