"""Pure rules of the store over years: retention specs, derived intervals, backup names, the
daily schedule and the rotation of backup files."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from klinetrio.core.backups import (
    backup_name,
    next_run,
    parse_backup_name,
    parse_time_of_day,
    to_delete,
    to_keep,
)
from klinetrio.core.derived import DerivedInterval, choose_source, divides, parse_derived_intervals
from klinetrio.core.durations import format_duration_ms, postgres_interval
from klinetrio.core.intervals import DAY_MS, HOUR_MS, MINUTE_MS, Interval
from klinetrio.core.retention import parse_retention
from klinetrio.errors import SettingsError

TABLES = ("candles", "trades")


# --- retention ---------------------------------------------------------------------------------


def test_retention_spec_is_parsed_in_order() -> None:
    assert parse_retention(" candles:400d , trades:7d,", TABLES) == (
        ("candles", 400 * DAY_MS),
        ("trades", 7 * DAY_MS),
    )
    assert parse_retention("", TABLES) == ()
    assert parse_retention("CANDLES:2w", TABLES) == (("candles", 14 * DAY_MS),)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("candles", "expected table:duration"),
        ("candles:", "expected table:duration"),
        (":7d", "expected table:duration"),
        ("book_tickers:7d", "unknown table 'book_tickers'"),
        ("candles:7x", "invalid duration"),
        ("candles:0d", "must be positive"),
        ("candles:7d,candles:8d", "named twice"),
    ],
)
def test_bad_retention_specs_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        parse_retention(text, TABLES)


def test_durations_are_spelled_exactly() -> None:
    assert format_duration_ms(7 * DAY_MS) == "1w"
    assert format_duration_ms(90 * MINUTE_MS) == "90m"
    assert format_duration_ms(1500) == "1500ms"
    assert postgres_interval(7 * DAY_MS) == "7 days"
    assert postgres_interval(90 * MINUTE_MS) == "90 minutes"


# --- derived intervals ---------------------------------------------------------------------------


def test_derived_buckets_follow_binances_alignment() -> None:
    three_days = DerivedInterval.parse("3d")
    week = DerivedInterval.parse("1w")
    ten = DerivedInterval.parse("10m")
    two_days = DerivedInterval.parse("2d")
    # The real REST files: 3d opens on 2020-01-01 (day 18262 ≡ 1 mod 3), 1w on Monday 2020-01-06.
    jan1 = 18262 * DAY_MS
    assert three_days.floor(jan1 + 5 * HOUR_MS) == jan1
    assert three_days.floor(jan1 - 1) == jan1 - 3 * DAY_MS
    assert week.floor(jan1) == jan1 - 2 * DAY_MS  # Monday 2019-12-30
    assert week.floor(1_578_268_800_000) == 1_578_268_800_000  # Monday 2020-01-06
    assert ten.floor(jan1 + 19 * MINUTE_MS) == jan1 + 10 * MINUTE_MS
    assert two_days.floor(jan1 + DAY_MS) == jan1  # day 18262 is even
    assert ten.ceil(jan1 + 1) == jan1 + 10 * MINUTE_MS
    assert ten.view == "candles_10m"
    assert DerivedInterval.parse(" 010m ").name == "10m"


def test_a_source_divides_only_when_buckets_are_exact_unions() -> None:
    assert divides(Interval("1m"), DerivedInterval.parse("45m"))
    assert divides(Interval("1d"), DerivedInterval.parse("3d"))
    assert divides(Interval("1d"), DerivedInterval.parse("1w"))
    assert divides(Interval("3d"), DerivedInterval.parse("6d"))  # both anchored on day 1
    assert divides(Interval("1w"), DerivedInterval.parse("2w"))
    assert not divides(Interval("3d"), DerivedInterval.parse("1w"))  # 7 is no multiple of 3
    assert not divides(Interval("1w"), DerivedInterval.parse("14d"))  # 14d opens on Thursdays
    assert not divides(Interval("3d"), DerivedInterval.parse("3d"))  # not longer
    assert not divides(Interval("1M"), DerivedInterval.parse("2w"))
    assert not divides(Interval("2h"), DerivedInterval.parse("3h"))


def test_the_finest_collected_interval_that_divides_is_chosen() -> None:
    assert choose_source(DerivedInterval.parse("10m"), ["1h", "5m", "1m"]) == "1m"
    assert choose_source(DerivedInterval.parse("2d"), ["1d", "1h"]) == "1h"
    assert choose_source(DerivedInterval.parse("6d"), ["3d"]) == "3d"
    with pytest.raises(SettingsError, match="cannot be built"):
        choose_source(DerivedInterval.parse("7m"), ["5m", "1h"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("7", "expected a count and a unit"),
        ("0m", "expected a count and a unit"),
        ("3M", "calendar months cannot be derived"),
        ("1m", "collected already"),
        ("120m,2h", "are the same"),
        ("90s", "cannot be built"),
    ],
)
def test_bad_derived_intervals_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        parse_derived_intervals(text, ["1m", "1h"])


def test_derived_intervals_are_deduplicated_in_order() -> None:
    assert parse_derived_intervals("2m, 10m,45m,2d,10m", ["1m"]) == ("2m", "10m", "45m", "2d")


# --- backups -------------------------------------------------------------------------------------


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def test_backup_names_round_trip() -> None:
    at = utc(2024, 3, 9, 4, 5, 6)
    assert backup_name(at) == "klinetrio-20240309T040506Z.dump"
    assert parse_backup_name(backup_name(at)) == at
    for other in ("klinetrio-20240309.dump", "notes.txt", "klinetrio-20241399T000000Z.dump"):
        assert parse_backup_name(other) is None


def test_the_daily_schedule_is_the_next_utc_time_of_day() -> None:
    at = parse_time_of_day("03:30")
    assert at == time(3, 30, tzinfo=UTC)
    assert next_run(utc(2024, 1, 1, 0, 0), at) == utc(2024, 1, 1, 3, 30)
    assert next_run(utc(2024, 1, 1, 3, 30), at) == utc(2024, 1, 2, 3, 30)  # strictly after
    assert next_run(utc(2024, 12, 31, 23, 59), at) == utc(2025, 1, 1, 3, 30)
    for bad in ("24:00", "3", "03:60", "noon"):
        with pytest.raises(SettingsError, match="KLINETRIO_BACKUP_AT"):
            parse_time_of_day(bad)


def test_rotation_keeps_30_daily_and_12_weekly() -> None:
    # Two backups a day for 200 days, ending on Sunday 2024-07-28.
    end = utc(2024, 7, 28, 12)
    stamps = [end - timedelta(hours=12 * i) for i in range(400)]
    kept = to_keep(stamps)
    days = {s.date() for s in kept}
    newest_days = {(end - timedelta(days=i)).date() for i in range(30)}
    assert newest_days <= days
    # Each kept file is its day's newest.
    assert all(s.hour == 12 for s in kept)
    weekly = sorted(s for s in kept if s.date() not in newest_days)
    # 12 weeks in all; the 5 newest already hold a daily file, 7 more reach back beyond them.
    assert len(weekly) == 12 - 5
    assert all(s.isoweekday() == 7 for s in weekly)  # the newest of a week is its Sunday's
    assert len(kept) == 30 + 7


def test_rotation_deletes_only_backup_files_it_does_not_keep() -> None:
    names = [backup_name(utc(2024, 1, 1) + timedelta(days=i)) for i in range(100)]
    gone = to_delete([*names, "README", "klinetrio-x.dump"])
    assert "README" not in gone
    assert "klinetrio-x.dump" not in gone
    assert len(gone) == 100 - len(to_keep(parse_backup_name(n) for n in names))  # type: ignore[misc]
    assert names[-1] not in gone
    assert to_delete(names[:3]) == []
