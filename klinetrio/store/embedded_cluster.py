"""The embedded PostgreSQL's cluster on disk: the data dir's layout, ``initdb`` into a scratch
directory renamed when complete, ``postmaster.pid`` judged by who really works in ``pgdata``,
the log, and running the server's programs (as the server account when klinetrio is root).
Blocking; used by ``store.embedded``, which decides when to start and stop the server.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from klinetrio.errors import EmbeddedDatabaseError
from klinetrio.store.embedded_host import (
    Account,
    bin_dir,
    binary_major,
    grant_search,
    open_binaries,
    processes_in,
)

SUPERUSER = "postgres"
_INITDB_TIMEOUT_S = 300
_LOG_ROTATE_BYTES = 10 * 2**20
_CONF = """
# Added by klinetrio: the embedded server is reached over TCP on localhost only.
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
"""


@dataclass(frozen=True, slots=True)
class Layout:
    data_dir: Path

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def scratch(self) -> Path:
        return self.data_dir / "pgdata.initdb"

    @property
    def log(self) -> Path:
        return self.data_dir / "postgresql.log"

    @property
    def lock(self) -> Path:
        return self.data_dir / "embedded.lock"

    @property
    def state(self) -> Path:
        return self.data_dir / "embedded.json"


@dataclass(frozen=True, slots=True)
class Postmaster:
    """What ``postmaster.pid`` says (its lines appear one by one while the server starts)."""

    pid: int
    port: int | None
    status: str


def prepare_pgdata(layout: Layout, account: Account | None) -> None:
    """Check an existing cluster, or make one: initdb in a scratch dir, then one atomic rename."""
    pgdata = layout.pgdata
    if account is not None:
        own_log(layout, account)
    if (pgdata / "PG_VERSION").is_file():
        check_cluster(pgdata, account)
        return
    if pgdata.exists():
        try:
            pgdata.rmdir()  # an empty directory someone made for us is fine
        except OSError:
            raise EmbeddedDatabaseError(
                f"{pgdata} exists but is not a PostgreSQL data directory; move it away"
            ) from None

    scratch = layout.scratch
    if scratch.exists():
        shutil.rmtree(scratch)  # the leftovers of an initdb that crashed
    scratch.mkdir(mode=0o700)
    if account is not None:
        os.chown(scratch, account.uid, account.gid)
    bins = bin_dir()
    offset = log_size(layout)
    began = time.monotonic()
    ok = run_program(
        layout,
        account,
        [
            str(bins / "initdb"),
            "-D",
            str(scratch),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-instructions",
        ],
        timeout=_INITDB_TIMEOUT_S,
    )
    if not ok:
        tail = log_tail(layout, offset)
        shutil.rmtree(scratch, ignore_errors=True)
        raise EmbeddedDatabaseError(f"initdb failed: {tail or 'no output'} (log: {layout.log})")
    with open(scratch / "postgresql.conf", "a", encoding="utf-8") as conf:
        conf.write(_CONF)
    os.rename(scratch, pgdata)
    logger.info(
        "embedded PostgreSQL initialized in {pgdata} in {seconds:.1f} s",
        pgdata=pgdata,
        seconds=time.monotonic() - began,
    )


def check_cluster(pgdata: Path, account: Account | None) -> None:
    version = (pgdata / "PG_VERSION").read_text().strip()
    ours = binary_major(bin_dir())
    if version != ours:
        raise EmbeddedDatabaseError(
            f"{pgdata} was made by PostgreSQL {version} but the embedded server is PostgreSQL "
            f"{ours}; upgrade it with pg_upgrade or move it away"
        )
    owner = pgdata.stat().st_uid
    expected = account.uid if account is not None else os.geteuid()
    if owner != expected:
        who = account.name if account is not None else "this user"
        raise EmbeddedDatabaseError(
            f"{pgdata} belongs to uid {owner}, but the embedded server runs as {who}; "
            f"fix it with: chown -R {expected} {pgdata}"
        )


def remove_stale_pid_file(pgdata: Path, pid: int) -> None:
    """Remove a crash's ``postmaster.pid``, but only once nothing works in ``pgdata`` any more.

    When the postmaster is killed, its backends notice within a moment and exit; wait for them.
    Where processes cannot be inspected (no ``/proc``) the file stays and PostgreSQL decides.
    """
    deadline = time.monotonic() + 10
    while (leftovers := processes_in(pgdata)) and time.monotonic() < deadline:
        time.sleep(0.1)
    if leftovers is None:
        return
    if leftovers:
        pids = " ".join(map(str, leftovers))
        raise EmbeddedDatabaseError(
            f"old PostgreSQL processes still use {pgdata} after a crash; stop them first: kill {pids}"
        )
    with suppress(FileNotFoundError):
        (pgdata / "postmaster.pid").unlink()
    logger.warning(
        "removed a stale postmaster.pid left by PostgreSQL pid {pid}, which is gone", pid=pid
    )


def read_postmaster(pgdata: Path) -> Postmaster | None:
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise EmbeddedDatabaseError(
            f"cannot read {pgdata}/postmaster.pid: {exc.strerror}"
        ) from None
    try:
        pid = abs(int(lines[0]))  # negative for a single-user backend
    except (IndexError, ValueError):
        return None  # being written this very moment: treat as absent
    port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None
    status = lines[7].strip() if len(lines) > 7 else ""
    return Postmaster(pid=pid, port=port, status=status)


def make_data_dir(data_dir: Path) -> None:
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise EmbeddedDatabaseError(f"data dir {data_dir} is not a directory") from None
    except OSError as exc:
        raise EmbeddedDatabaseError(f"cannot create data dir {data_dir}: {exc.strerror}") from None
    if not os.access(data_dir, os.W_OK | os.X_OK):
        raise EmbeddedDatabaseError(f"data dir {data_dir} is not writable")


def own_log(layout: Layout, account: Account) -> None:
    """pg_ctl opens the log as the server account: it must own it."""
    layout.log.touch(mode=0o640)
    if layout.log.stat().st_uid != account.uid:
        os.chown(layout.log, account.uid, account.gid)


def rotate_log(layout: Layout, account: Account | None) -> None:
    """Keep one old log once it passes 10 MiB; only called while the server is down."""
    with suppress(FileNotFoundError):
        if layout.log.stat().st_size > _LOG_ROTATE_BYTES:
            os.replace(layout.log, layout.log.with_name(layout.log.name + ".1"))
            if account is not None:
                own_log(layout, account)


def run_program(
    layout: Layout, account: Account | None, command: list[str], *, timeout: float
) -> bool:
    """Run a PostgreSQL program with its output appended to the log; True when it succeeded."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}  # PGDATA, PGPORT...
    env["LC_ALL"] = "C"  # English messages, which is_port_clash reads
    if account is not None:
        open_binaries(Path(command[0]).parent.parent, account)
        # Again at every run: some tools reset their directories to 0700 (pytest does).
        grant_search(layout.data_dir, account)
    try:
        with open(layout.log, "ab") as log:
            log.write(f"--- klinetrio runs {Path(command[0]).name} {command[1]}\n".encode())
            log.flush()
            done = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd="/",  # the server account may not be allowed into ours
                env=env,
                timeout=timeout,
                check=False,
                user=None if account is None else account.uid,
                group=None if account is None else account.gid,
                extra_groups=None if account is None else [],
            )
    except subprocess.TimeoutExpired:
        logger.warning("{program} took more than {timeout} s", program=command[0], timeout=timeout)
        return False
    except OSError as exc:
        raise EmbeddedDatabaseError(f"cannot run {command[0]}: {exc.strerror}") from None
    return done.returncode == 0


def log_size(layout: Layout) -> int:
    try:
        return layout.log.stat().st_size
    except FileNotFoundError:
        return 0


def log_tail(layout: Layout, offset: int, lines: int = 3) -> str:
    """The last meaningful lines written to the log since ``offset``, as one line."""
    try:
        with open(layout.log, "rb") as log:
            log.seek(max(offset, log_size(layout) - 8192))
            text = log.read().decode(errors="replace")
    except OSError:
        return ""
    wanted = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.startswith("--- klinetrio")
    ]
    return " | ".join(wanted[-lines:])
