"""Gap finding: ``missing_ranges`` and ``empty_ranges`` by hand and against a brute force."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from klinetrio.core.gaps import SyncRequest, empty_ranges, missing_ranges
from klinetrio.core.intervals import DAY_MS, HOUR_MS, MINUTE_MS, Interval

H = HOUR_MS
T0 = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000)  # a Monday midnight
HOUR = Interval.parse("1h")
MONTH = Interval.parse("1M")


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)  # type: ignore[misc]


def h(n: float) -> int:
    """``n`` hours after T0."""
    return T0 + int(n * H)


# --- a reference that knows nothing of the code under test -----------------------------------


def ref_open_times(name: str, start: int, end: int) -> list[int]:
    """Aligned open times in ``[start, end)`` by a plain walk (1m, 1h, 1d or 1M)."""
    if name == "1M":
        dt = datetime.fromtimestamp(start / 1000, UTC)
        year, month = dt.year, dt.month
        out = []
        while True:
            t = ms(year, month, 1)
            if t >= end:
                return out
            if t >= start:
                out.append(t)
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    step = {"1m": MINUTE_MS, "1h": HOUR_MS, "1d": DAY_MS}[name]
    t = -(-start // step) * step
    return list(range(t, end, step))


def ref_next(name: str, t: int) -> int:
    """The first open time after ``t``."""
    if name == "1M":
        return ref_open_times(name, t + 1, t + 32 * DAY_MS)[0]
    step = {"1m": MINUTE_MS, "1h": HOUR_MS, "1d": DAY_MS}[name]
    return t - t % step + step


def ref_opens_from(name: str, start: int, n: int) -> list[int]:
    """The first ``n`` open times at or after ``start``."""
    opens = [ref_next(name, start - 1)]
    while len(opens) < n:
        opens.append(ref_next(name, opens[-1]))
    return opens


def reference(
    name: str,
    start: int,
    end: int,
    runs: list[tuple[int, int]],
    holes: list[tuple[int, int]],
) -> list[tuple[int, int]]:
    """Maximal ranges ``[first missing, min(next open after the last missing, end))``."""
    stored = {t for first, last in runs for t in ref_open_times(name, first, last + 1)}
    missing = [
        t
        for t in ref_open_times(name, start, end)
        if t not in stored and not any(lo <= t < hi for lo, hi in holes)
    ]
    ranges: list[tuple[int, int]] = []
    for t in missing:
        if ranges and ranges[-1][1] == t:
            ranges[-1] = (ranges[-1][0], ref_next(name, t))
        else:
            ranges.append((t, ref_next(name, t)))
    return [(a, min(b, end)) for a, b in ranges]


def _runs(opens: list[int], stored: list[bool], rng: random.Random) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    previous_stored = False
    for t, here in zip(opens, stored, strict=True):
        if here and previous_stored and rng.random() > 0.2:
            runs[-1] = (runs[-1][0], t)
        elif here:
            runs.append((t, t))
        previous_stored = here
    return runs


# --- by hand ---------------------------------------------------------------------------------


def test_empty_table_misses_the_whole_window() -> None:
    assert missing_ranges(HOUR, h(0), h(24), []) == [(h(0), h(24))]


def test_fully_stored_window_misses_nothing() -> None:
    assert missing_ranges(HOUR, h(0), h(24), [(h(0), h(23))]) == []


def test_runs_reaching_beyond_the_window_cover_it() -> None:
    assert missing_ranges(HOUR, h(5), h(10), [(h(-100), h(200))]) == []


def test_gap_at_the_start() -> None:
    assert missing_ranges(HOUR, h(0), h(24), [(h(3), h(23))]) == [(h(0), h(3))]


def test_gap_in_the_middle() -> None:
    assert missing_ranges(HOUR, h(0), h(24), [(h(0), h(9)), (h(12), h(23))]) == [(h(10), h(12))]


def test_gap_at_the_end() -> None:
    assert missing_ranges(HOUR, h(0), h(24), [(h(0), h(20))]) == [(h(21), h(24))]


def test_several_gaps_come_back_in_order() -> None:
    runs = [(h(2), h(3)), (h(6), h(6)), (h(10), h(15))]
    assert missing_ranges(HOUR, h(0), h(20), runs) == [
        (h(0), h(2)),
        (h(4), h(6)),
        (h(7), h(10)),
        (h(16), h(20)),
    ]


def test_runs_need_not_be_sorted() -> None:
    runs = [(h(10), h(15)), (h(2), h(3))]
    assert missing_ranges(HOUR, h(0), h(20), runs) == [
        (h(0), h(2)),
        (h(4), h(10)),
        (h(16), h(20)),
    ]


def test_adjacent_runs_leave_no_gap_between_them() -> None:
    runs = [(h(0), h(4)), (h(5), h(9)), (h(10), h(23))]
    assert missing_ranges(HOUR, h(0), h(24), runs) == []


def test_overlapping_and_nested_runs_merge() -> None:
    runs = [(h(0), h(10)), (h(3), h(5)), (h(8), h(14))]
    assert missing_ranges(HOUR, h(0), h(24), runs) == [(h(15), h(24))]


def test_runs_partly_outside_the_window_are_clipped() -> None:
    runs = [(h(-5), h(2)), (h(20), h(30))]
    assert missing_ranges(HOUR, h(0), h(24), runs) == [(h(3), h(20))]


def test_runs_entirely_outside_the_window_change_nothing() -> None:
    runs = [(h(-10), h(-2)), (h(30), h(40))]
    assert missing_ranges(HOUR, h(0), h(24), runs) == [(h(0), h(24))]


def test_unaligned_start_is_rounded_up_to_the_next_open() -> None:
    assert missing_ranges(HOUR, h(0.5), h(3), []) == [(h(1), h(3))]
    assert missing_ranges(HOUR, h(0) + 1, h(3), [(h(1), h(1))]) == [(h(2), h(3))]


def test_unaligned_end_keeps_the_candle_that_opens_before_it() -> None:
    result = missing_ranges(HOUR, h(0), h(2.5), [])
    assert result == [(h(0), h(2.5))]
    assert HOUR.count(*result[0]) == 3


def test_window_smaller_than_a_candle_with_no_open_time_misses_nothing() -> None:
    assert missing_ranges(HOUR, h(0.25), h(0.75), []) == []


@pytest.mark.parametrize(("start", "end"), [(h(5), h(5)), (h(6), h(5))])
def test_empty_or_reversed_window_misses_nothing(start: int, end: int) -> None:
    assert missing_ranges(HOUR, start, end, []) == []
    assert missing_ranges(HOUR, start, end, [(h(0), h(1))], [(h(2), h(3))]) == []


def test_holes_are_not_missing() -> None:
    runs = [(h(0), h(9)), (h(14), h(23))]
    assert missing_ranges(HOUR, h(0), h(24), runs, [(h(10), h(14))]) == []
    assert missing_ranges(HOUR, h(0), h(24), runs, [(h(11), h(13))]) == [
        (h(10), h(11)),
        (h(13), h(14)),
    ]


def test_holes_and_runs_together_cover_a_window() -> None:
    holes = [(h(0), h(3)), (h(20), h(30))]
    assert missing_ranges(HOUR, h(0), h(24), [(h(3), h(19))], holes) == []


def test_hole_overlapping_stored_candles_subtracts_only_what_is_missing() -> None:
    assert missing_ranges(HOUR, h(0), h(10), [(h(0), h(4))], [(h(2), h(7))]) == [(h(7), h(10))]


def test_real_halt_of_2023_03_24_is_not_a_gap() -> None:
    # BTCUSDT spot has no 1h candle at 2023-03-24 13:00 UTC: a real trading halt.
    halt = ms(2023, 3, 24, 13)
    start, end = ms(2023, 3, 1), ms(2023, 4, 1)
    stored = [(start, halt - H), (halt + H, end - H)]
    assert missing_ranges(HOUR, start, end, stored) == [(halt, halt + H)]
    assert missing_ranges(HOUR, start, end, stored, [(halt, halt + H)]) == []
    # The hole as the syncer records it from a REST page with no row for that hour:
    assert empty_ranges(HOUR, ms(2023, 3, 24, 10), ms(2023, 3, 24, 16), [
        ms(2023, 3, 24, 10), ms(2023, 3, 24, 11), ms(2023, 3, 24, 12),
        ms(2023, 3, 24, 14), ms(2023, 3, 24, 15),
    ]) == [(halt, halt + H)]  # fmt: skip


def test_monthly_gaps_follow_the_calendar() -> None:
    runs = [(ms(2024, 1, 1), ms(2024, 2, 1)), (ms(2024, 5, 1), ms(2024, 5, 1))]
    assert missing_ranges(MONTH, ms(2024, 1, 1), ms(2025, 1, 1), runs) == [
        (ms(2024, 3, 1), ms(2024, 5, 1)),
        (ms(2024, 6, 1), ms(2025, 1, 1)),
    ]


def test_monthly_unaligned_bounds() -> None:
    assert missing_ranges(MONTH, ms(2024, 1, 15), ms(2024, 4, 10), []) == [
        (ms(2024, 2, 1), ms(2024, 4, 10))
    ]
    assert MONTH.count(ms(2024, 2, 1), ms(2024, 4, 10)) == 3


def test_stored_december_covers_up_to_january() -> None:
    runs = [(ms(2023, 12, 1), ms(2023, 12, 1))]
    assert missing_ranges(MONTH, ms(2023, 11, 1), ms(2024, 2, 1), runs) == [
        (ms(2023, 11, 1), ms(2023, 12, 1)),
        (ms(2024, 1, 1), ms(2024, 2, 1)),
    ]


def test_weekly_gaps_start_on_mondays() -> None:
    week = Interval.parse("1w")
    mondays = [ms(2024, 1, 1) + n * 7 * DAY_MS for n in range(10)]
    runs = [(mondays[0], mondays[2]), (mondays[5], mondays[5])]
    assert missing_ranges(week, mondays[0], mondays[9], runs) == [
        (mondays[3], mondays[5]),
        (mondays[6], mondays[9]),
    ]


def test_weekly_gaps_are_whole_weeks_apart() -> None:
    # Independent of where weeks are anchored: a window with nothing stored is one range,
    # and a stored week in the middle splits it into two, one week apart.
    week = Interval.parse("1w")
    start = week.floor(ms(2024, 1, 10))
    stored = start + 3 * 7 * DAY_MS
    result = missing_ranges(week, start, start + 6 * 7 * DAY_MS, [(stored, stored)])
    assert result == [(start, stored), (stored + 7 * DAY_MS, start + 6 * 7 * DAY_MS)]


def test_gap_after_an_unaligned_hole_starts_at_an_open_time() -> None:
    assert missing_ranges(HOUR, h(0), h(5), [], [(h(0), h(1.5))]) == [(h(2), h(5))]


# --- empty_ranges ----------------------------------------------------------------------------


def test_empty_ranges_of_a_full_page_is_nothing() -> None:
    got = [h(n) for n in range(10)]
    assert empty_ranges(HOUR, h(0), h(10), got) == []


def test_empty_ranges_of_an_empty_page_is_the_whole_range() -> None:
    assert empty_ranges(HOUR, h(0), h(10), []) == [(h(0), h(10))]


def test_empty_ranges_finds_every_run_of_absent_candles() -> None:
    got = [h(n) for n in (1, 2, 5, 9)]
    assert empty_ranges(HOUR, h(0), h(10), got) == [
        (h(0), h(1)),
        (h(3), h(5)),
        (h(6), h(9)),
    ]


def test_empty_ranges_ignores_rows_outside_the_range() -> None:
    got = [h(-1), h(0), h(1), h(12)]
    assert empty_ranges(HOUR, h(0), h(4), got) == [(h(2), h(4))]


# --- brute force -----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
def test_missing_ranges_matches_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    for case in range(60):
        name = rng.choice(["1m", "1h", "1d", "1M"])
        interval = Interval.parse(name)
        base = ms(2019, 1, 1) + rng.randrange(0, 5 * 365 * DAY_MS)
        opens = ref_opens_from(name, base, rng.randrange(3, 42))
        density = rng.random()
        stored = [rng.random() < density for _ in opens]
        runs = _runs(opens, stored, rng)
        if rng.random() < 0.2:
            rng.shuffle(runs)
        holes = []
        for _ in range(rng.randrange(0, 4)):
            i = rng.randrange(0, len(opens) - 1)
            j = rng.randrange(i + 1, len(opens))
            holes.append((opens[i], opens[j]))
        i = rng.randrange(0, len(opens) - 1)
        j = rng.randrange(i, len(opens))
        start, end = opens[i], opens[j]
        if rng.random() < 0.3:
            start += rng.randrange(0, ref_next(name, start) - start)
        if rng.random() < 0.3 and j + 1 < len(opens):
            end += rng.randrange(0, opens[j + 1] - end)
        expected = reference(name, start, end, runs, holes)
        got = missing_ranges(interval, start, end, runs, holes)
        context = (seed, case, name, start, end, runs, holes)
        assert got == expected, context
        for a, b in got:
            assert a < b, context
            assert interval.is_aligned(a), context


@pytest.mark.parametrize("seed", range(4))
def test_empty_ranges_matches_brute_force(seed: int) -> None:
    rng = random.Random(1000 + seed)
    for case in range(60):
        name = rng.choice(["1m", "1h", "1d", "1M"])
        interval = Interval.parse(name)
        opens = ref_opens_from(name, ms(2020, 1, 1) + rng.randrange(0, 3 * 365 * DAY_MS), 30)
        got_opens = sorted(t for t in opens if rng.random() < 0.6)
        start, end = opens[rng.randrange(0, 10)], opens[rng.randrange(10, 30)]
        expected = reference(name, start, end, [(t, t) for t in got_opens], [])
        assert empty_ranges(interval, start, end, got_opens) == expected, (seed, case)


def test_missing_plus_stored_plus_holes_is_every_open_time() -> None:
    # The partition property, over a long 1m window.
    minute = Interval.parse("1m")
    rng = random.Random(99)
    opens = list(range(T0, T0 + 2000 * MINUTE_MS, MINUTE_MS))
    stored = [rng.random() < 0.7 for _ in opens]
    runs = _runs(opens, stored, rng)
    holes = [(opens[100], opens[150]), (opens[1500], opens[1510])]
    gaps = missing_ranges(minute, opens[0], T0 + 2000 * MINUTE_MS, runs, holes)
    in_gaps = {t for a, b in gaps for t in minute.open_times(a, b)}
    in_runs = {t for first, last in runs for t in minute.open_times(first, last + 1)}
    in_holes = {t for lo, hi in holes for t in minute.open_times(lo, hi)}
    assert in_gaps | in_runs | in_holes == set(opens)
    assert not in_gaps & (in_runs | in_holes)
    assert sum(minute.count(a, b) for a, b in gaps) == len(in_gaps)


# --- pending requests --------------------------------------------------------------------------


def test_a_later_explicit_start_never_shadows_a_request_from_the_newest_candle() -> None:
    merged = SyncRequest.of(None).merge(SyncRequest.of(h(5)))
    assert merged == SyncRequest(from_newest=True, start=h(5))
    assert SyncRequest.of(h(5)).merge(SyncRequest.of(None)) == merged


def test_the_earliest_explicit_start_wins() -> None:
    assert SyncRequest.of(h(5)).merge(SyncRequest.of(h(3))) == SyncRequest(start=h(3))


def test_after_a_pass_only_what_lies_beyond_it_remains() -> None:
    covered = (h(0), h(10))
    assert SyncRequest.of(None).after(covered) == SyncRequest(start=h(10))
    assert SyncRequest.of(h(4)).after(covered) == SyncRequest(start=h(10))
    assert SyncRequest.of(h(12)).after(covered) == SyncRequest(start=h(12))
    # A request from before the pass's range keeps its start: the pass never looked there.
    assert SyncRequest.of(h(-3)).after(covered) == SyncRequest(start=h(-3))
    assert SyncRequest(True, h(-3)).after(covered) == SyncRequest(start=h(-3))
