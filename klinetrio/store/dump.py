"""``pg_dump`` and ``pg_restore``: finding the right ones, and the steps around them.

A custom-format dump is only as portable as the tools that made and read it: ``pg_restore``
refuses an archive from a newer ``pg_dump``, and a ``pg_dump`` older than the server refuses to
dump it. So klinetrio uses the tools of the server's own major version: the embedded
distribution's for the embedded database, otherwise the first match among the usual places
(Debian/Ubuntu's ``/usr/lib/postgresql/N/bin``, RHEL's ``/usr/pgsql-N/bin``, Homebrew, ``PATH``).
When none matches, the error says which version is needed.

TimescaleDB: ``pg_dump`` copes with hypertables, compressed chunks and continuous aggregates as
they are (its warnings about circular foreign keys in TimescaleDB's catalog are expected). A
restore must run between ``timescaledb_pre_restore()`` and ``timescaledb_post_restore()`` in a
database where the extension exists, and must not be parallel.

Everything here blocks (connections, subprocesses): call it from the CLI or a worker thread.
The passwords of URLs travel in ``PGPASSWORD``, never on a command line others can read.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
from loguru import logger
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from klinetrio.errors import BackupError
from klinetrio.settings import redact_url
from klinetrio.store.connect import connect, translate_errors

_VERSION = re.compile(r"\b(\d+)(?:\.\d+)?")


@dataclass(frozen=True, slots=True)
class Tool:
    """A PostgreSQL client program, and how to point it at one database."""

    path: Path
    dbname: str  # a conninfo string without the password
    env: dict[str, str]

    def argv(self, *args: str) -> list[str]:
        return [str(self.path), *args]


def server_major(url: str) -> int:
    conn = connect(url)
    try:
        with translate_errors("reading the server version"):
            return conn.info.server_version // 10000
    finally:
        conn.close()


@functools.cache
def tool_major(path: Path) -> int | None:
    try:
        out = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _VERSION.search(out)
    return int(match[1]) if match else None


def _candidates(name: str, major: int, first: Sequence[Path]) -> list[Path]:
    dirs = [
        *first,
        Path(f"/usr/lib/postgresql/{major}/bin"),
        Path(f"/usr/pgsql-{major}/bin"),
        Path(f"/opt/homebrew/opt/postgresql@{major}/bin"),
        Path(f"/usr/local/opt/postgresql@{major}/bin"),
    ]
    found = [d / name for d in dirs]
    on_path = shutil.which(name)
    if on_path:
        found.append(Path(on_path))
    embedded = embedded_bin_dir()
    if embedded is not None:
        found.append(embedded / name)
    return found


def embedded_bin_dir() -> Path | None:
    """The embedded distribution's binaries, if the package is installed."""
    from klinetrio.errors import EmbeddedDatabaseError
    from klinetrio.store.embedded_host import bin_dir

    try:
        return bin_dir()
    except EmbeddedDatabaseError:
        return None


def find_tool(name: str, major: int, *, first: Sequence[Path] = ()) -> Path:
    """The ``name`` program (``pg_dump``, ``pg_restore``) of PostgreSQL ``major``."""
    tried = []
    for path in _candidates(name, major, first):
        if path in tried or not path.is_file():
            continue
        tried.append(path)
        if tool_major(path) == major:
            return path
    seen = ", ".join(f"{p} ({tool_major(p)})" for p in tried) or "none found"
    raise BackupError(
        f"no {name} of PostgreSQL {major} found (tried: {seen}); install PostgreSQL {major}'s "
        f"client programs, e.g. `apt install postgresql-client-{major}`"
    )


def tool_for(name: str, url: str, *, embedded: bool) -> Tool:
    """``name`` of the server's major version, set up to reach the database of ``url``."""
    major = server_major(url)
    first = [d for d in [embedded_bin_dir()] if d is not None] if embedded else []
    path = find_tool(name, major, first=first)
    params = conninfo_to_dict(url)
    password = params.pop("password", None)
    # The user's PG* variables (PGSSLROOTCERT, PGPASSFILE...) reach pg_dump as they reach
    # psycopg; the URL's own parts win over them, as in libpq.
    env = dict(os.environ)
    env["LC_ALL"] = "C"  # English messages, which the error translation reads
    if password is not None:
        env["PGPASSWORD"] = str(password)
    params.setdefault("application_name", "klinetrio")
    return Tool(path, make_conninfo(**{k: str(v) for k, v in params.items()}), env)


def dump_argv(tool: Tool, out: Path) -> list[str]:
    return tool.argv("--format=custom", "--no-password", f"--file={out}", f"--dbname={tool.dbname}")


def first_error(stderr: str) -> str:
    """The line of a PostgreSQL program's stderr worth showing (not its warnings)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if "error" in line.lower() or "fatal" in line.lower():
            return line
    return lines[-1] if lines else "no output"


def backup_to(url: str, out: Path, *, embedded: bool) -> int:
    """``pg_dump`` the database of ``url`` into ``out`` (written beside it, then renamed, so a
    failed dump never leaves a file that looks whole); the file's size in bytes."""
    tool = tool_for("pg_dump", url, embedded=embedded)
    partial = out.with_name(out.name + ".partial")
    try:
        done = subprocess.run(
            dump_argv(tool, partial),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=tool.env,
            check=False,
        )
        if done.returncode != 0:
            raise BackupError(f"pg_dump of {redact_url(url)} failed: {first_error(done.stderr)}")
        partial.replace(out)
    except OSError as exc:
        raise BackupError(f"cannot write {out}: {exc.strerror}") from None
    finally:
        partial.unlink(missing_ok=True)
    return out.stat().st_size


def archive_has_timescaledb(tool: Tool, file: Path) -> bool:
    """Whether a dump holds the TimescaleDB extension (so its restore needs the extension)."""
    done = subprocess.run(
        tool.argv("--list", str(file)),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=tool.env,
        check=False,
    )
    if done.returncode != 0:
        why = first_error(done.stderr)
        if "unsupported version" in why:
            raise BackupError(
                f"{file} was made by a newer pg_dump than {tool.path} can read ({why})"
            )
        raise BackupError(f"{file} is not a pg_dump custom-format backup ({why})")
    return re.search(r"^\d+; \d+ \d+ EXTENSION - timescaledb\b", done.stdout, re.M) is not None


def user_relations(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    """Tables, views and sequences outside the system and extension schemas: 0 means empty."""
    row = conn.execute(
        """
        SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
           AND n.nspname NOT IN ('pg_catalog', 'information_schema')
           AND n.nspname NOT LIKE 'pg\\_%%'
           AND n.nspname NOT LIKE '\\_timescaledb%%' AND n.nspname NOT LIKE 'timescaledb\\_%%'
           AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
        """
    ).fetchone()
    return int(row[0]) if row else 0  # type: ignore[call-overload]


def restore_from(url: str, file: Path, *, embedded: bool) -> None:
    """Restore a ``klinetrio backup`` file into the empty database of ``url``."""
    if not file.is_file():
        raise BackupError(f"no such backup file: {file}")
    tool = tool_for("pg_restore", url, embedded=embedded)
    timescale = archive_has_timescaledb(tool, file)
    conn = connect(url)
    conn.autocommit = True
    try:
        with translate_errors("preparing the restore"):
            count = user_relations(conn)
            if count:
                raise BackupError(
                    f"database {redact_url(url)} is not empty ({count} tables, views or "
                    "sequences); restore needs an empty database: create one and point "
                    "--database-url at it"
                )
            if timescale:
                available = conn.execute(
                    "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
                ).fetchone()
                if not available:
                    raise BackupError(
                        f"{file} holds TimescaleDB hypertables, but the server of "
                        f"{redact_url(url)} has no TimescaleDB"
                    )
                conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
                conn.execute("SELECT timescaledb_pre_restore()")
        try:
            done = subprocess.run(
                tool.argv(
                    "--no-owner",
                    "--no-privileges",
                    "--exit-on-error",
                    "--single-transaction",
                    "--no-password",
                    f"--dbname={tool.dbname}",
                    str(file),
                ),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                env=tool.env,
                check=False,
            )
        finally:
            if timescale:
                with translate_errors("finishing the restore"):
                    conn.execute("SELECT timescaledb_post_restore()")
        if done.returncode != 0:
            raise BackupError(f"pg_restore of {file} failed: {first_error(done.stderr)}")
        if timescale:
            refresh_aggregates(conn)
    finally:
        conn.close()


def refresh_aggregates(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Refresh every continuous aggregate over its whole range after a restore.

    A backup taken while a refresh policy was at work holds the aggregate half materialized:
    TimescaleDB refreshes in batches and moves the watermark with the first, so the buckets of
    the batches still to come are neither materialized nor aggregated in real time. The source
    finishes them a moment later; the restored copy would wait for the next scheduled run.
    """
    with translate_errors("refreshing the continuous aggregates"):
        views = [
            f"{schema}.{name}"
            for schema, name in conn.execute(
                "SELECT view_schema, view_name FROM timescaledb_information.continuous_aggregates"
                " ORDER BY 1, 2"
            ).fetchall()
        ]
        for view in views:
            conn.execute("CALL refresh_continuous_aggregate(%s, NULL, NULL)", (view,))
            logger.info("refreshed {view} after the restore", view=view)
