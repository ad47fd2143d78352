"""Interval parsing and open-time arithmetic, checked by hand and against real Binance data."""

from __future__ import annotations

import csv
import io
import itertools
import json
import random
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from klinetrio.core.intervals import DAY_MS, HOUR_MS, INTERVALS, MINUTE_MS, WEEK_MS, Interval
from klinetrio.errors import SettingsError

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"

# The contract's list, in its order.
ALL_INTERVALS = (
    "1s",
    "1m",
    "3m",
    "5m",
    "15m",
    "30m",
    "1h",
    "2h",
    "4h",
    "6h",
    "8h",
    "12h",
    "1d",
    "3d",
    "1w",
    "1M",
)
FIXED = {
    "1s": 1_000,
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
    "3d": 259_200_000,
    "1w": 604_800_000,
}
# Fixed intervals whose candles open on multiples of their length since the epoch.
EPOCH_ALIGNED = [name for name in FIXED if name not in ("1w", "3d")]

# Real exchange anomalies in the files, not faults of the arithmetic.
# The spot trading halt of 2023-03-24: the 13:00 UTC hour has no candle at all ...
HALT_2023_03_24_13H = 1679662800000
REAL_HOLES = {("1h", HALT_2023_03_24_13H)}
# ... and the candles during which trading stopped carry the halt's time as their close time:
# 2023-03-24 12:00 (halt at 12:39:41.646) and the 1d candle of 2018-02-08 (Binance's outage).
TRUNCATED_CLOSE = {("1h", 1679659200000): 1679661581646, ("1d", 1518048000000): 1518049694788}


def ms(*args: int) -> int:
    """Epoch milliseconds of a UTC civil time."""
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)  # type: ignore[misc]


def utc(t_ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=t_ms)


def data_params(pattern: str) -> list[object]:
    """One parameter per file matching ``pattern`` under the shared data, or one that skips."""
    files = sorted(DATA.glob(pattern)) if DATA.is_dir() else []
    if not files:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"needs {DATA / pattern}"))]
    return [pytest.param(path, id=path.name, marks=pytest.mark.shared_data) for path in files]


def need(path: Path | None) -> Path:
    if path is None or not path.exists():
        pytest.skip(f"needs {DATA}")
    return path


def rest_interval(path: Path) -> Interval:
    return Interval.parse(path.name.split("_")[1])


def rest_rows(path: Path) -> list[list[object]]:
    rows = json.loads(path.read_text())
    assert rows, path
    return rows


def csv_rows(path: Path) -> list[tuple[int, int]]:
    """(open, close) of every data row of an archive CSV, in the file's own unit."""
    with path.open(newline="") as fh:
        return [(int(r[0]), int(r[6])) for r in csv.reader(fh) if r and r[0].isdigit()]


# --- parsing ---------------------------------------------------------------------------------


def test_intervals_constant_lists_every_binance_interval_in_order() -> None:
    assert INTERVALS == ALL_INTERVALS


@pytest.mark.parametrize("name", ALL_INTERVALS)
def test_parse_accepts_every_binance_interval(name: str) -> None:
    interval = Interval.parse(name)
    assert interval.name == name
    assert str(interval) == name


@pytest.mark.parametrize(("name", "length"), FIXED.items())
def test_fixed_intervals_have_their_length_in_ms(name: str, length: int) -> None:
    assert Interval.parse(name).fixed_ms == length
    assert Interval.parse(name).nominal_ms == length


def test_one_lowercase_m_is_a_minute_and_one_capital_m_a_month() -> None:
    minute, month = Interval.parse("1m"), Interval.parse("1M")
    assert minute != month
    assert minute.fixed_ms == MINUTE_MS
    assert month.fixed_ms is None
    assert month.nominal_ms == 31 * DAY_MS
    assert minute.next_open(ms(2024, 1, 1)) == ms(2024, 1, 1, 0, 1)
    assert month.next_open(ms(2024, 1, 1)) == ms(2024, 2, 1)


def test_parse_strips_surrounding_whitespace() -> None:
    assert Interval.parse(" 1h\n").name == "1h"


@pytest.mark.parametrize(
    "text",
    ["", " ", "1", "m", "1H", "1D", "1W", "1y", "2d", "2w", "60s", "10m", "1 m", "kline_1m", "1mo"],
)
def test_parse_rejects_anything_else_with_settings_error(text: str) -> None:
    with pytest.raises(SettingsError, match="unknown interval") as info:
        Interval.parse(text)
    message = str(info.value)
    assert repr(text) in message
    assert "1s" in message
    assert "1M" in message


def test_intervals_compare_and_hash_by_name() -> None:
    assert Interval.parse("1h") == Interval("1h")
    assert len({Interval.parse("1h"), Interval.parse("1h"), Interval.parse("1d")}) == 2


# --- floor, ceil, next_open, close_time ------------------------------------------------------


@pytest.mark.parametrize("name", EPOCH_ALIGNED)
def test_floor_of_fixed_interval_is_the_multiple_of_its_length_at_or_before(name: str) -> None:
    interval, step = Interval.parse(name), FIXED[name]
    rng = random.Random(name)
    for _ in range(300):
        t = rng.randrange(-10 * 365 * DAY_MS, 100 * 365 * DAY_MS)
        floor = interval.floor(t)
        assert floor % step == 0
        assert floor <= t < floor + step
        assert interval.is_aligned(floor)


@pytest.mark.parametrize("name", [*EPOCH_ALIGNED, "1M"])
def test_floor_is_idempotent_and_ceil_is_first_open_at_or_after(name: str) -> None:
    interval = Interval.parse(name)
    rng = random.Random(f"ceil {name}")
    for _ in range(300):
        t = rng.randrange(-5 * 365 * DAY_MS, 80 * 365 * DAY_MS)
        floor, ceil = interval.floor(t), interval.ceil(t)
        assert interval.floor(floor) == floor
        assert floor <= t <= ceil
        assert interval.is_aligned(ceil)
        if floor == t:
            assert ceil == t
            assert interval.is_aligned(t)
        else:
            assert ceil == interval.next_open(floor)
            assert not interval.is_aligned(t)


@pytest.mark.parametrize(
    ("name", "t", "floor"),
    [
        ("1s", ms(2024, 5, 6, 7, 8, 9) + 999, ms(2024, 5, 6, 7, 8, 9)),
        ("1m", ms(2024, 5, 6, 7, 8, 59), ms(2024, 5, 6, 7, 8)),
        ("5m", ms(2020, 5, 24, 18, 49, 39), ms(2020, 5, 24, 18, 45)),
        ("15m", ms(2020, 5, 20, 15, 44, 59), ms(2020, 5, 20, 15, 30)),
        ("4h", ms(2021, 9, 24, 3, 0), ms(2021, 9, 24, 0, 0)),
        ("8h", ms(2021, 9, 24, 23, 59), ms(2021, 9, 24, 16, 0)),
        ("12h", ms(2021, 9, 24, 12, 0), ms(2021, 9, 24, 12, 0)),
        ("1d", ms(2024, 2, 29, 23, 59, 59) + 999, ms(2024, 2, 29)),
        ("1m", -1, -MINUTE_MS),
        ("1d", -1, -DAY_MS),
    ],
)
def test_floor_examples(name: str, t: int, floor: int) -> None:
    assert Interval.parse(name).floor(t) == floor


@pytest.mark.parametrize(
    ("t", "floor"),
    [
        (ms(2024, 1, 31, 23, 59, 59) + 999, ms(2024, 1, 1)),
        (ms(2024, 2, 29, 12), ms(2024, 2, 1)),
        (ms(2023, 12, 1), ms(2023, 12, 1)),
        (ms(2000, 2, 29), ms(2000, 2, 1)),
        (ms(1970, 1, 1), 0),
        (-1, ms(1969, 12, 1)),
        (ms(1900, 3, 1) - 1, ms(1900, 2, 1)),
        (ms(2100, 3, 15), ms(2100, 3, 1)),
    ],
)
def test_month_floor_is_the_first_of_the_calendar_month(t: int, floor: int) -> None:
    assert Interval.parse("1M").floor(t) == floor


def test_month_floor_matches_datetime_over_four_centuries() -> None:
    month = Interval.parse("1M")
    rng = random.Random(1970)
    for _ in range(2000):
        t = rng.randrange(ms(1800, 1, 1), ms(2300, 1, 1))
        dt = utc(t)
        expected = datetime(dt.year, dt.month, 1, tzinfo=UTC)
        assert utc(month.floor(t)) == expected, dt


@pytest.mark.parametrize(
    ("open_", "next_"),
    [
        (ms(2024, 1, 1), ms(2024, 2, 1)),
        (ms(2024, 2, 1), ms(2024, 3, 1)),
        (ms(2023, 2, 1), ms(2023, 3, 1)),
        (ms(2024, 11, 1), ms(2024, 12, 1)),
        (ms(2024, 12, 1), ms(2025, 1, 1)),
        (ms(1969, 12, 1), 0),
    ],
)
def test_month_next_open_and_close_time_follow_the_calendar(open_: int, next_: int) -> None:
    month = Interval.parse("1M")
    assert month.next_open(open_) == next_
    assert month.close_time(open_) == next_ - 1


@pytest.mark.parametrize("name", list(FIXED))
def test_fixed_next_open_adds_the_length_and_close_time_is_one_ms_before(name: str) -> None:
    interval = Interval.parse(name)
    t = ms(2024, 1, 1)
    assert interval.next_open(t) == t + FIXED[name]
    assert interval.close_time(t) == t + FIXED[name] - 1


@pytest.mark.parametrize(
    ("t", "monday"),
    [
        (ms(2020, 1, 6), ms(2020, 1, 6)),  # a Monday
        (ms(2020, 1, 12, 23, 59, 59) + 999, ms(2020, 1, 6)),  # the Sunday after it
        (ms(2024, 2, 29, 12), ms(2024, 2, 26)),  # a Thursday
        (0, ms(1969, 12, 29)),  # the epoch was a Thursday
    ],
    ids=["monday", "sunday-night", "thursday", "epoch"],
)
def test_week_floor_is_the_monday_at_or_before(t: int, monday: int) -> None:
    assert Interval.parse("1w").floor(t) == monday


def test_week_floor_always_lands_on_a_monday_midnight() -> None:
    week = Interval.parse("1w")
    rng = random.Random(7)
    for _ in range(200):
        t = rng.randrange(0, ms(2100, 1, 1))
        floor = utc(week.floor(t))
        assert floor.weekday() == 0
        assert (floor.hour, floor.minute, floor.second, floor.microsecond) == (0, 0, 0, 0)
        assert week.floor(t) <= t < week.floor(t) + WEEK_MS


def test_three_day_floor_keeps_the_real_2020_01_01_open() -> None:
    assert Interval.parse("3d").floor(ms(2020, 1, 1)) == ms(2020, 1, 1)


# --- open_times and count --------------------------------------------------------------------


@pytest.mark.parametrize("name", [*EPOCH_ALIGNED, "1M"])
def test_open_times_and_count_agree_with_a_brute_force_walk(name: str) -> None:
    interval = Interval.parse(name)
    step = FIXED.get(name, 31 * DAY_MS)
    rng = random.Random(f"open_times {name}")
    for _ in range(150):
        start = rng.randrange(ms(2019, 1, 1), ms(2026, 1, 1))
        end = start + rng.randrange(-3 * step, 40 * step)
        opens = list(interval.open_times(start, end))
        expected = []
        t = interval.floor(start)
        if t < start:
            t = interval.next_open(t)
        while t < end:
            expected.append(t)
            t = interval.next_open(t)
        assert opens == expected
        assert interval.count(start, end) == len(expected)
        assert all(start <= t < end and interval.is_aligned(t) for t in opens)


def test_open_times_is_half_open() -> None:
    hour = Interval.parse("1h")
    start = ms(2024, 1, 1)
    assert list(hour.open_times(start, start + 3 * HOUR_MS)) == [
        start,
        start + HOUR_MS,
        start + 2 * HOUR_MS,
    ]
    assert hour.count(start, start + 3 * HOUR_MS) == 3
    assert hour.count(start, start + 3 * HOUR_MS + 1) == 4
    assert hour.count(start + 1, start + 3 * HOUR_MS) == 2


@pytest.mark.parametrize("name", ["1m", "1h", "1M"])
def test_empty_and_reversed_ranges_count_nothing(name: str) -> None:
    interval = Interval.parse(name)
    t = ms(2024, 3, 1)
    assert interval.count(t, t) == 0
    assert interval.count(t + 1, t) == 0
    assert list(interval.open_times(t, t - DAY_MS)) == []
    assert interval.count(t + 1, interval.next_open(t)) == 0


def test_month_count_over_a_leap_year_and_across_years() -> None:
    month = Interval.parse("1M")
    assert month.count(ms(2024, 1, 1), ms(2025, 1, 1)) == 12
    assert month.count(ms(2024, 1, 15), ms(2025, 1, 1)) == 11
    assert month.count(ms(2017, 8, 1), ms(2026, 3, 2)) == 104
    assert list(month.open_times(ms(2024, 11, 2), ms(2025, 3, 1))) == [
        ms(2024, 12, 1),
        ms(2025, 1, 1),
        ms(2025, 2, 1),
    ]


# --- the real REST files ---------------------------------------------------------------------


@pytest.mark.parametrize("path", data_params("rest/BTCUSDT_*.json"))
def test_every_real_rest_open_time_is_aligned(path: Path | None) -> None:
    path = need(path)
    interval = rest_interval(path)
    for row in rest_rows(path):
        open_ms = row[0]
        assert isinstance(open_ms, int)
        assert interval.floor(open_ms) == open_ms, utc(open_ms)
        assert interval.is_aligned(open_ms)
        assert interval.ceil(open_ms) == open_ms


@pytest.mark.parametrize("path", data_params("rest/BTCUSDT_*.json"))
def test_next_open_of_every_real_rest_row_is_the_next_row(path: Path | None) -> None:
    path = need(path)
    interval = rest_interval(path)
    rows = rest_rows(path)
    holes_seen = 0
    for row, after in itertools.pairwise(rows):
        expected = interval.next_open(row[0])  # type: ignore[arg-type]
        if (interval.name, expected) in REAL_HOLES:
            holes_seen += 1
            expected = interval.next_open(expected)
        assert expected == after[0], utc(row[0])  # type: ignore[arg-type]
    expected_holes = sum(
        1
        for name, t in REAL_HOLES
        if name == interval.name and rows[0][0] <= t <= rows[-1][0]  # type: ignore[operator]
    )
    assert holes_seen == expected_holes


@pytest.mark.parametrize("path", data_params("rest/BTCUSDT_*.json"))
def test_close_time_of_every_real_rest_row_is_binances(path: Path | None) -> None:
    path = need(path)
    interval = rest_interval(path)
    for row in rest_rows(path):
        open_ms, close_ms = row[0], row[6]
        assert isinstance(open_ms, int)
        assert isinstance(close_ms, int)
        truncated = TRUNCATED_CLOSE.get((interval.name, open_ms))
        if truncated is not None:
            # A halt ended the candle early; the nominal close time is still the bound.
            assert close_ms == truncated
            assert open_ms < close_ms < interval.close_time(open_ms)
        else:
            assert interval.close_time(open_ms) == close_ms, utc(open_ms)


def test_real_2023_03_hourly_file_lacks_only_the_halted_hour() -> None:
    path = need(DATA / "rest" / "BTCUSDT_1h_2023-03-01.json")
    hour = Interval.parse("1h")
    opens = {row[0] for row in rest_rows(path)}
    expected = set(hour.open_times(ms(2023, 3, 1), ms(2023, 4, 1)))
    assert hour.count(ms(2023, 3, 1), ms(2023, 4, 1)) == 744
    assert expected - opens == {HALT_2023_03_24_13H}
    assert opens <= expected
    assert utc(HALT_2023_03_24_13H) == datetime(2023, 3, 24, 13, tzinfo=UTC)


@pytest.mark.parametrize(
    ("pattern", "check"),
    [
        ("rest/BTCUSDT_1w_*.json", lambda dt: dt.weekday() == 0),
        ("rest/BTCUSDT_1M_*.json", lambda dt: dt.day == 1),
        ("rest/BTCUSDT_1d_*.json", lambda dt: dt.time().isoformat() == "00:00:00"),
    ],
    ids=["1w-on-mondays", "1M-on-the-first", "1d-at-midnight"],
)
def test_real_calendar_candles_open_where_the_module_doc_says(pattern: str, check: object) -> None:
    paths = sorted(DATA.glob(pattern))
    if not paths:
        pytest.skip(f"needs {DATA / pattern}")
    for path in paths:
        for row in rest_rows(path):
            dt = utc(row[0])  # type: ignore[arg-type]
            assert check(dt), dt  # type: ignore[operator]
            assert dt.time().isoformat() == "00:00:00"


def test_real_three_day_candles_open_every_third_day_one_day_after_the_epochs_grid() -> None:
    paths = sorted(DATA.glob("rest/BTCUSDT_3d_*.json"))
    if not paths:
        pytest.skip(f"needs {DATA}/rest")
    three_days = Interval.parse("3d")
    for path in paths:
        for row in rest_rows(path):
            open_ms = row[0]
            assert isinstance(open_ms, int)
            assert open_ms % DAY_MS == 0
            assert (open_ms // DAY_MS) % 3 == 1, utc(open_ms)
            assert three_days.next_open(open_ms) == open_ms + 3 * DAY_MS


# --- the real archive CSVs (data.binance.vision) -----------------------------------------------


@pytest.mark.parametrize(
    "path",
    data_params("vision/spot/*-1h-*.csv")
    + data_params("vision/spot/*-1m-*-head.csv")
    + data_params("vision/futures-um/*.csv"),
)
def test_every_archive_row_is_aligned_and_consecutive(path: Path | None) -> None:
    path = need(path)
    interval = Interval.parse(path.name.split("-")[1])
    rows = csv_rows(path)
    assert rows
    micro = rows[0][0] > 10**14
    if micro:
        # Spot archives switched to microseconds on 2025-01-01: close times end in 999999.
        assert "2025" in path.name
        assert all(close % 1_000_000 == 999_999 for _, close in rows)
        assert all(open_ % 1000 == 0 for open_, _ in rows)
        rows = [(open_ // 1000, close // 1000) for open_, close in rows]
    previous = None
    for open_ms, close_ms in rows:
        assert interval.floor(open_ms) == open_ms, utc(open_ms)
        truncated = TRUNCATED_CLOSE.get((interval.name, open_ms))
        assert close_ms == (truncated or interval.close_time(open_ms)), utc(open_ms)
        if previous is not None:
            expected = interval.next_open(previous)
            if (interval.name, expected) in REAL_HOLES:
                expected = interval.next_open(expected)
            assert open_ms == expected, utc(open_ms)
        previous = open_ms


@pytest.mark.parametrize("path", data_params("vision/spot/*-1h-20*.csv"))
def test_monthly_archives_hold_every_hour_of_their_month_but_the_halt(path: Path | None) -> None:
    path = need(path)
    hour = Interval.parse("1h")
    year, month = map(int, path.stem.split("-")[2:4])
    start = ms(year, month, 1)
    end = Interval.parse("1M").next_open(start)
    rows = csv_rows(path)
    opens = [o // 1000 if o > 10**14 else o for o, _ in rows]
    expected = [t for t in hour.open_times(start, end) if ("1h", t) not in REAL_HOLES]
    assert opens == expected
    assert len(rows) == hour.count(start, end) - (path.name == "BTCUSDT-1h-2023-03.csv")


def test_2023_archives_carry_a_header_line_and_2024_ones_do_not() -> None:
    with_header = need(DATA / "vision" / "spot" / "BTCUSDT-1h-2023-01.csv")
    without = need(DATA / "vision" / "spot" / "BTCUSDT-1h-2024-11.csv")
    assert with_header.read_text().splitlines()[0].startswith("open_time,")
    assert without.read_text().splitlines()[0][0].isdigit()


@pytest.mark.parametrize("path", data_params("vision/spot/*-1m-*.zip"))
def test_daily_minute_archives_hold_1440_aligned_minutes(path: Path | None) -> None:
    path = need(path)
    minute = Interval.parse("1m")
    with zipfile.ZipFile(path) as archive:
        (name,) = archive.namelist()
        text = archive.read(name).decode()
    rows = [(int(r[0]), int(r[6])) for r in csv.reader(io.StringIO(text)) if r]
    day = ms(*map(int, path.name.removesuffix(".zip").split("-")[2:5]))
    assert [o for o, _ in rows] == list(minute.open_times(day, day + DAY_MS))
    assert all(close == minute.close_time(open_) for open_, close in rows)
    assert minute.count(day, day + DAY_MS) == len(rows) == 1440
