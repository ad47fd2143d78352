"""Daily backups for ``serve``: one ``pg_dump`` a day at ``KLINETRIO_BACKUP_AT`` (UTC), rotated.

``Backups.run`` is a task that runs until cancelled. It sleeps until the next backup time, runs
``pg_dump`` as a child process (``trio.run_process``: the Trio loop never waits on it, and a
cancellation kills it), renames the finished file into place, then removes the files the
rotation no longer keeps (30 daily, 12 weekly; files not named like a backup are never touched).
A failed backup is logged, counted and tried again at the next day's time; it never stops serve.

The schedule follows the wall clock (a backup is due at a time of day), read through
``wall_clock`` and re-read at least hourly, so a suspended machine or a changed clock delays a
backup by at most an hour. Tests give it a clock driven by Trio's, and a ``run_process`` that
runs the command inline, so the autojump clock does not run ahead while ``pg_dump`` works.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any

import trio
from loguru import logger

from klinetrio.core.backups import KEEP_DAILY, KEEP_WEEKLY, backup_name, next_run, to_delete
from klinetrio.errors import BackupError, KlinetrioError
from klinetrio.store.dump import dump_argv, first_error, tool_for
from klinetrio.threads import Offload, thread_offload

RECHECK_S = 3600.0
RunProcess = Callable[..., Awaitable[subprocess.CompletedProcess[bytes]]]


def utc_now() -> datetime:
    return datetime.now(UTC)


# Removing a half-written file on the way out: a file system call, bounded all the same.
DISCARD_DEADLINE_S = 2.0


@dataclass(frozen=True, slots=True)
class BackupStatistics:
    """A snapshot of the backup task: where, when next, and how the last one went."""

    directory: str
    at: str
    next_backup_at: str | None = None
    last_backup_at: str | None = None
    last_backup_file: str | None = None
    last_backup_bytes: int | None = None
    last_backup_seconds: float | None = None
    backups: int = 0
    failures: int = 0
    removed: int = 0
    last_error: str | None = None


class Backups:
    """``await nursery.start(backups.run)``; ``statistics()`` for ``/health``."""

    def __init__(
        self,
        database_url: str,
        directory: str | os.PathLike[str],
        *,
        at: time,
        embedded: bool,
        wall_clock: Callable[[], datetime] = utc_now,
        offload: Offload | None = None,
        run_process: RunProcess = trio.run_process,
        keep_daily: int = KEEP_DAILY,
        keep_weekly: int = KEEP_WEEKLY,
    ) -> None:
        self._url = database_url
        self._dir = Path(directory)
        self._at = at
        self._embedded = embedded
        self._clock = wall_clock
        self._offload = offload or thread_offload(trio.CapacityLimiter(1))
        self._run_process = run_process
        self._keep = {"daily": keep_daily, "weekly": keep_weekly}
        self._stats = BackupStatistics(str(self._dir), at.strftime("%H:%M"))

    def statistics(self) -> BackupStatistics:
        return self._stats

    def _update(self, **changes: Any) -> None:
        self._stats = replace(self._stats, **changes)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with logger.contextualize(component="backups"):
            try:
                await self._offload(_make_dir, self._dir)
            except OSError as exc:
                raise BackupError(f"cannot use KLINETRIO_BACKUP_DIR {self._dir}: {exc}") from None
            task_status.started()
            while True:
                due = next_run(self._clock(), self._at)
                self._update(next_backup_at=_iso(due))
                logger.info("next backup at {due}", due=_iso(due))
                await self._sleep_until(due)
                await self.backup_now()

    async def _sleep_until(self, due: datetime) -> None:
        # A loop, not one sleep: the wall clock may jump (suspend, NTP) while Trio's does not.
        while (remaining := (due - self._clock()).total_seconds()) > 0:  # noqa: ASYNC110
            await trio.sleep(min(remaining, RECHECK_S))

    async def backup_now(self) -> Path | None:
        """One backup and a rotation now; the file, or None when it failed (logged, counted)."""
        started_at = self._clock()
        started = trio.current_time()
        out = self._dir / backup_name(started_at)
        partial = out.with_name(out.name + ".partial")
        try:
            tool = await self._offload(_tool, self._url, self._embedded)
            done = await self._run_process(
                dump_argv(tool, partial),
                env=tool.env,
                stdin=b"",
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            if done.returncode != 0:
                raise BackupError(
                    f"pg_dump failed: {first_error(done.stderr.decode(errors='replace'))}"
                )
            size = await self._offload(_finish, partial, out)
        except (KlinetrioError, OSError) as exc:
            self._update(failures=self._stats.failures + 1, last_error=str(exc))
            logger.error("backup failed: {error}", error=exc)
            return None
        finally:
            with trio.move_on_after(DISCARD_DEADLINE_S, shield=True):
                await self._offload(_discard, partial)
        seconds = round(trio.current_time() - started, 3)
        self._update(
            backups=self._stats.backups + 1,
            last_backup_at=_iso(started_at),
            last_backup_file=str(out),
            last_backup_bytes=size,
            last_backup_seconds=seconds,
            last_error=None,
        )
        logger.info(
            "backup {file} written: {size:,} bytes in {seconds:.1f}s",
            file=out.name,
            size=size,
            seconds=seconds,
        )
        removed = await self._offload(_rotate, self._dir, self._keep["daily"], self._keep["weekly"])
        if removed:
            self._update(removed=self._stats.removed + len(removed))
            logger.info("rotation removed {names}", names=", ".join(removed))
        return out


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _make_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


def _tool(url: str, embedded: bool) -> Any:
    return tool_for("pg_dump", url, embedded=embedded)


def _finish(partial: Path, out: Path) -> int:
    partial.replace(out)
    return out.stat().st_size


def _discard(path: Path) -> None:
    path.unlink(missing_ok=True)


def _rotate(directory: Path, daily: int, weekly: int) -> Sequence[str]:
    gone = to_delete(os.listdir(directory), daily=daily, weekly=weekly)
    for name in gone:
        (directory / name).unlink(missing_ok=True)
    return gone
