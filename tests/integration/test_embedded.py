"""The embedded PostgreSQL, for real: start, share, crash, restart, and fail clearly.

Each test gets its own data dir (initdb takes well under a second). Other processes are real
subprocesses running a small script, because sharing between processes is the point.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import psycopg
import pytest

from klinetrio.errors import EmbeddedDatabaseError
from klinetrio.store import embedded_host
from klinetrio.store.embedded import EmbeddedPostgres, ensure_running, running_url, stop

# A klinetrio "user" in another process: open the server (after the go file appears, so that
# several start at once), write a row, print the URL, stay until the leave file appears.
_USER_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import psycopg
    from klinetrio.store.embedded import EmbeddedPostgres

    data_dir, name, go, leave = sys.argv[1:5]
    while not Path(go).exists():
        time.sleep(0.002)
    with EmbeddedPostgres(data_dir) as pg:
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute(f"CREATE TABLE seen_{name} AS SELECT 1 AS x")
        print(pg.url, flush=True)
        deadline = time.monotonic() + 60
        while not Path(leave).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    """
)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data dir whose server is stopped after the test, whatever the test did.

    Not under ``tmp_path``: each pytest run resets ``/tmp/pytest-of-<user>`` to mode 0700, which
    would lock the server account (when root) out of a server another run is still using.
    """
    path = Path(tempfile.mkdtemp(prefix="klinetrio-embedded-")) / "data"
    yield path
    with suppress(EmbeddedDatabaseError):  # up, down or broken: never leave a server behind
        stop(path, force=True)
    shutil.rmtree(path.parent, ignore_errors=True)


def _user(data_dir: Path, name: str, go: Path, leave: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _USER_SCRIPT, str(data_dir), name, str(go), str(leave)],
        stdout=subprocess.PIPE,
        text=True,
    )


def _scalar(url: str, query: str) -> object:
    with psycopg.connect(url, connect_timeout=5) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def _postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "pgdata" / "postmaster.pid").read_text().split()[0])


def test_start_use_stop_and_data_persists(data_dir: Path) -> None:
    with EmbeddedPostgres(data_dir) as pg:
        url = pg.url
        assert url == f"postgresql://postgres@127.0.0.1:{pg.port}/klinetrio"
        assert running_url(data_dir) == url
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE t AS SELECT generate_series(1, 3) AS x")
            assert str(_scalar(url, "SELECT inet_server_addr()")) == "127.0.0.1"
        if os.geteuid() == 0:  # the root case: the server runs as the unprivileged account
            import pwd

            uid = pwd.getpwnam(embedded_host.SERVER_ACCOUNT).pw_uid
            assert (data_dir / "pgdata").stat().st_uid == uid
            assert os.stat(f"/proc/{_postmaster_pid(data_dir)}").st_uid == uid
    assert running_url(data_dir) is None
    assert not (data_dir / "pgdata" / "postmaster.pid").exists()

    with EmbeddedPostgres(data_dir) as pg:
        assert pg.url == url  # the remembered port was free: same URL
        assert _scalar(url, "SELECT sum(x) FROM t") == 6


def test_two_users_share_one_server_and_the_last_stops_it(data_dir: Path) -> None:
    first, second = EmbeddedPostgres(data_dir), EmbeddedPostgres(data_dir)
    url = first.open()
    assert second.open() == url
    first.close()
    assert running_url(data_dir) == url
    assert _scalar(second.url, "SELECT 1") == 1
    first.close()  # idempotent: must not unregister anyone else
    assert running_url(data_dir) == url
    second.close()
    assert running_url(data_dir) is None


def test_processes_starting_at_once_share_one_server(data_dir: Path, tmp_path: Path) -> None:
    go, leave = tmp_path / "go", tmp_path / "leave"
    users = [_user(data_dir, f"p{i}", go, leave) for i in range(3)]
    try:
        go.touch()
        urls = {user.stdout.readline().strip() for user in users if user.stdout}
        assert len(urls) == 1
        (url,) = urls
        assert running_url(data_dir) == url
        tables = "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'seen_p%'"
        assert _scalar(url, tables) == 3
    finally:
        leave.touch()
        codes = [user.wait(timeout=30) for user in users]
    assert codes == [0, 0, 0]
    assert running_url(data_dir) is None
    log = (data_dir / "postgresql.log").read_text()
    assert log.count("klinetrio runs initdb") == 1
    assert log.count("klinetrio runs pg_ctl start") == 1
    assert log.count("klinetrio runs pg_ctl stop") == 1


def test_a_user_killed_with_sigkill_is_pruned(data_dir: Path, tmp_path: Path) -> None:
    go, leave = tmp_path / "go", tmp_path / "leave"
    go.touch()
    victim = _user(data_dir, "victim", go, leave)
    assert victim.stdout is not None
    url = victim.stdout.readline().strip()
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    assert running_url(data_dir) == url  # nobody stopped it: the data dir is as it was

    with EmbeddedPostgres(data_dir) as pg:
        assert pg.url == url
        assert _scalar(url, "SELECT count(*) FROM seen_victim") == 1
    assert running_url(data_dir) is None  # the dead user did not keep it up


def test_recovers_from_a_killed_postmaster_and_a_stale_pid_file(data_dir: Path) -> None:
    with EmbeddedPostgres(data_dir) as pg:
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute("CREATE TABLE t AS SELECT 42 AS x")
        os.kill(_postmaster_pid(data_dir), signal.SIGKILL)
    pid_file = data_dir / "pgdata" / "postmaster.pid"
    assert pid_file.exists()
    # The worst stale file: its pid is alive (ours), so PostgreSQL alone would refuse to start.
    lines = pid_file.read_text().splitlines()
    pid_file.write_text("\n".join([str(os.getpid()), *lines[1:]]) + "\n")

    with EmbeddedPostgres(data_dir) as pg:
        assert _scalar(pg.url, "SELECT x FROM t") == 42  # crash recovery kept committed data
    assert not pid_file.exists()


def test_db_url_pins_the_server_until_db_stop(data_dir: Path) -> None:
    assert stop(data_dir) is False
    url = ensure_running(data_dir)
    assert running_url(data_dir) == url
    assert ensure_running(data_dir) == url
    with EmbeddedPostgres(data_dir) as pg:
        assert pg.url == url
    assert running_url(data_dir) == url  # pinned: outlives its users

    user = EmbeddedPostgres(data_dir)
    user.open()
    with pytest.raises(EmbeddedDatabaseError, match="in use by klinetrio process"):
        stop(data_dir)
    assert running_url(data_dir) == url
    user.close()  # the pin is gone, so the last user stops it
    assert running_url(data_dir) is None

    ensure_running(data_dir)
    assert stop(data_dir) is True
    assert running_url(data_dir) is None
    assert stop(data_dir) is False


def test_moves_to_another_port_when_the_remembered_one_is_taken(data_dir: Path) -> None:
    with EmbeddedPostgres(data_dir) as pg:
        port = pg.port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with EmbeddedPostgres(data_dir) as pg:
            assert pg.port != port
            assert _scalar(pg.url, "SELECT 1") == 1


def test_refuses_a_cluster_of_another_major_version(data_dir: Path) -> None:
    with EmbeddedPostgres(data_dir):
        pass
    (data_dir / "pgdata" / "PG_VERSION").write_text("11\n")
    with pytest.raises(EmbeddedDatabaseError, match=r"PostgreSQL 11 .* pg_upgrade"):
        EmbeddedPostgres(data_dir).open()


def _one_line_error(data_dir: Path, lock_timeout: float = 5) -> str:
    with pytest.raises(EmbeddedDatabaseError) as info:
        EmbeddedPostgres(data_dir, lock_timeout=lock_timeout).open()
    message = str(info.value)
    assert "\n" not in message
    return message


def test_clear_errors_for_an_unusable_data_dir(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("not a directory")
    assert "is not a directory" in _one_line_error(a_file)
    assert "Not a directory" in _one_line_error(a_file / "below")

    junk = tmp_path / "junk"
    (junk / "pgdata").mkdir(parents=True)
    (junk / "pgdata" / "notes.txt").write_text("mine")
    assert "not a PostgreSQL data directory" in _one_line_error(junk)


def test_clear_error_when_the_lock_is_held_too_long(tmp_path: Path) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    with open(busy / "embedded.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        began = time.monotonic()
        assert "is busy" in _one_line_error(busy, lock_timeout=0.2)
        assert time.monotonic() - began < 2
    assert running_url(busy) is None


def test_clear_error_when_the_binaries_are_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    embedded_host.bin_dir.cache_clear()
    try:
        assert "binaries are missing" in _one_line_error(tmp_path / "data")
    finally:
        monkeypatch.undo()
        embedded_host.bin_dir.cache_clear()
