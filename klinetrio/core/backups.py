"""Backup files: their names, the daily schedule, and which files a rotation keeps.

Pure functions of times and names, so the schedule and the rotation are tested without a clock,
a database or a file system.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, time, timedelta

from klinetrio.errors import SettingsError

PREFIX = "klinetrio-"
SUFFIX = ".dump"
_NAME = re.compile(r"^klinetrio-(\d{8}T\d{6}Z)\.dump$")
_STAMP = "%Y%m%dT%H%M%SZ"
_TIME_OF_DAY = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*$")
KEEP_DAILY = 30
KEEP_WEEKLY = 12


def backup_name(at: datetime) -> str:
    """``klinetrio-20240101T000000Z.dump`` for a backup started at ``at`` (UTC)."""
    return f"{PREFIX}{at.astimezone(UTC).strftime(_STAMP)}{SUFFIX}"


def parse_backup_name(name: str) -> datetime | None:
    """The start time a backup file's name records, or None for any other file."""
    match = _NAME.match(name)
    if match is None:
        return None
    try:
        return datetime.strptime(match[1], _STAMP).replace(tzinfo=UTC)
    except ValueError:
        return None


def parse_time_of_day(text: str) -> time:
    """``00:00``..``23:59`` (UTC) → a time."""
    match = _TIME_OF_DAY.match(text)
    if match is None or int(match[1]) > 23 or int(match[2]) > 59:
        raise SettingsError(
            f"invalid KLINETRIO_BACKUP_AT {text!r}; expected a UTC time of day HH:MM, e.g. 03:30"
        )
    return time(int(match[1]), int(match[2]), tzinfo=UTC)


def next_run(now: datetime, at: time) -> datetime:
    """The first moment strictly after ``now`` whose UTC time of day is ``at``."""
    now = now.astimezone(UTC)
    candidate = datetime.combine(now.date(), at.replace(tzinfo=None), tzinfo=UTC)
    if candidate <= now:
        candidate += timedelta(days=1)
    return candidate


def to_keep(
    stamps: Iterable[datetime], *, daily: int = KEEP_DAILY, weekly: int = KEEP_WEEKLY
) -> set[datetime]:
    """Which backups a rotation keeps: the newest of each of the ``daily`` most recent days that
    have one, and the newest of each of the ``weekly`` most recent ISO weeks that have one."""
    newest_of_day: dict[object, datetime] = {}
    newest_of_week: dict[object, datetime] = {}
    for stamp in stamps:
        day = stamp.astimezone(UTC).date()
        week = day.isocalendar()[:2]
        if day not in newest_of_day or stamp > newest_of_day[day]:
            newest_of_day[day] = stamp
        if week not in newest_of_week or stamp > newest_of_week[week]:
            newest_of_week[week] = stamp
    days = sorted(newest_of_day.values(), reverse=True)[:daily]
    weeks = sorted(newest_of_week.values(), reverse=True)[:weekly]
    return set(days) | set(weeks)


def to_delete(names: Iterable[str], **keep: int) -> list[str]:
    """The backup files among ``names`` that a rotation removes (other files are never named)."""
    stamped = {name: stamp for name in names if (stamp := parse_backup_name(name)) is not None}
    kept = to_keep(stamped.values(), **keep)
    return sorted(name for name, stamp in stamped.items() if stamp not in kept)
