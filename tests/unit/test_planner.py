"""The planner: which months from monthly files, which days from daily files, which spans from
REST — exact cover, never an overlap, never a gap, never a file that cannot exist yet."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klinetrio.core.intervals import DAY_MS, Interval
from klinetrio.core.models import parse_utc_ms
from klinetrio.core.planner import (
    MODES,
    Mode,
    Piece,
    fallback,
    has_archives,
    period_name,
    period_span,
    plan,
)
from klinetrio.errors import SettingsError

H1 = Interval("1h")


def ms(text: str) -> int:
    return parse_utc_ms(text, "test")


def test_a_fresh_backfill_takes_months_then_days_then_rest() -> None:
    now = ms("2023-05-20T12:30")
    pieces = plan(H1, [(ms("2023-01-01"), ms("2023-05-20T12:00"))], now)
    monthly = [p.period for p in pieces if p.source == "monthly"]
    daily = [p.period for p in pieces if p.source == "daily"]
    rest = [p for p in pieces if p.source == "rest"]
    assert monthly == ["2023-01", "2023-02", "2023-03", "2023-04"]
    assert daily == [f"2023-05-{d:02d}" for d in range(1, 20)]
    assert rest == [Piece("rest", ms("2023-05-20"), ms("2023-05-20T12:00"))]


def test_the_edges_of_a_range_inside_a_day_come_from_rest() -> None:
    now = ms("2024-06-01")
    pieces = plan(H1, [(ms("2024-03-01T12:00"), ms("2024-03-03T06:00"))], now)
    assert pieces == [
        Piece("rest", ms("2024-03-01T12:00"), ms("2024-03-02")),
        Piece("daily", ms("2024-03-02"), ms("2024-03-03"), "2024-03-02"),
        Piece("rest", ms("2024-03-03"), ms("2024-03-03T06:00")),
    ]


def test_archive_mode_takes_the_edges_from_daily_files_but_never_today() -> None:
    now = ms("2024-03-03T08:00")
    pieces = plan(H1, [(ms("2024-03-01T12:00"), ms("2024-03-03T06:00"))], now, "archive")
    assert pieces == [
        Piece("daily", ms("2024-03-01T12:00"), ms("2024-03-02"), "2024-03-01"),
        Piece("daily", ms("2024-03-02"), ms("2024-03-03"), "2024-03-02"),
        Piece("rest", ms("2024-03-03"), ms("2024-03-03T06:00")),
    ]


def test_a_month_not_ended_is_never_monthly() -> None:
    now = ms("2024-02-29T23:59")
    pieces = plan(H1, [(ms("2024-02-01"), ms("2024-02-29T23:00"))], now)
    assert {p.source for p in pieces} == {"daily", "rest"}
    assert len([p for p in pieces if p.source == "daily"]) == 28


def test_rest_mode_and_long_intervals_are_rest_only() -> None:
    span = (ms("2020-01-06"), ms("2024-01-01"))  # a Monday
    now = ms("2025-01-01")
    assert plan(H1, [span], now, "rest") == [Piece("rest", *span)]
    for name in ("3d", "1w", "1M"):
        assert not has_archives(Interval(name))
        assert [p.source for p in plan(Interval(name), [span], now)] == ["rest"]
    for name in ("1s", "1m", "5m", "1h", "12h", "1d"):
        assert has_archives(Interval(name))


def test_fallback_of_a_month_is_its_days_and_of_a_day_is_rest() -> None:
    now = ms("2024-06-01")
    month = Piece("monthly", ms("2024-02-01"), ms("2024-03-01"), "2024-02")
    days = fallback(month, now)
    assert [p.period for p in days] == [f"2024-02-{d:02d}" for d in range(1, 30)]
    assert all(p.source == "daily" for p in days)
    assert fallback(days[3], now) == [Piece("rest", days[3].start, days[3].end)]


def test_period_names_and_spans() -> None:
    assert period_name(ms("2024-02-01"), monthly=True) == "2024-02"
    assert period_name(ms("2024-02-29T13:00"), monthly=False) == "2024-02-29"
    assert period_span("2024-02") == (ms("2024-02-01"), ms("2024-03-01"))
    assert period_span("2024-02-29") == (ms("2024-02-29"), ms("2024-03-01"))
    assert period_span("2023-12") == (ms("2023-12-01"), ms("2024-01-01"))
    for bad in ("2023-02-29", "2023-13", "2023-1", "2023-01-00", "x"):
        with pytest.raises(SettingsError):
            period_span(bad)


# --- properties --------------------------------------------------------------------------------

START = ms("2019-11-01")
SPAN_DAYS = 150
STEPS = {"1m": 60_000, "1h": 3_600_000, "12h": 12 * 3_600_000, "1d": DAY_MS, "1w": 7 * DAY_MS}


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Interval, list[tuple[int, int]], int, Mode]:
    name = draw(st.sampled_from(sorted(STEPS)))
    interval = Interval(name)
    step = STEPS[name]
    slots = SPAN_DAYS * DAY_MS // step
    cuts = sorted(set(draw(st.lists(st.integers(0, slots), min_size=2, max_size=12))))
    ranges = []
    for a, b in zip(cuts[0::2], cuts[1::2], strict=False):
        ranges.append((interval.ceil(START + a * step), interval.ceil(START + b * step)))
    now = START + draw(st.integers(0, (SPAN_DAYS + 40) * DAY_MS))
    mode = draw(st.sampled_from(MODES))
    return interval, [(a, b) for a, b in ranges if a < b], now, mode


def _covers_exactly(pieces: list[Piece], ranges: list[tuple[int, int]]) -> None:
    assert all(p.start < p.end for p in pieces)
    assert all(a.end <= b.start for a, b in itertools.pairwise(pieces))  # no overlap
    merged: list[list[int]] = []
    for p in pieces:
        if merged and merged[-1][1] == p.start:
            merged[-1][1] = p.end
        else:
            merged.append([p.start, p.end])
    expected: list[list[int]] = []
    for a, b in ranges:
        if expected and expected[-1][1] == a:
            expected[-1][1] = b
        else:
            expected.append([a, b])
    assert merged == expected  # no gap, nothing outside


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_pieces_cover_the_ranges_exactly_with_files_that_can_exist(
    scenario: tuple[Interval, list[tuple[int, int]], int, Mode],
) -> None:
    interval, ranges, now, mode = scenario
    pieces = plan(interval, ranges, now, mode)
    _covers_exactly(pieces, ranges)
    for p in pieces:
        if p.source == "rest":
            continue
        assert mode != "rest"
        assert has_archives(interval)
        file_start, file_end = period_span(p.period)
        assert file_end <= now  # only files of periods that have ended
        assert file_start <= p.start < p.end <= file_end
        assert (p.source == "monthly") == (len(p.period) == 7)
        if p.source == "monthly" or mode == "auto":
            assert (p.start, p.end) == (file_start, file_end)  # whole months and whole days
    for a, b in itertools.pairwise(pieces):
        assert not (a.source == b.source == "rest" and a.end == b.start)  # REST spans merged


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_fallbacks_cover_their_piece_exactly(
    scenario: tuple[Interval, list[tuple[int, int]], int, Mode],
) -> None:
    interval, ranges, now, mode = scenario
    for piece in plan(interval, ranges, now, mode):
        if piece.is_archive:
            replacement = fallback(piece, now, mode)
            _covers_exactly(replacement, [(piece.start, piece.end)])
            assert all(p.source != "monthly" for p in replacement)
            if piece.source == "daily":
                assert [p.source for p in replacement] == ["rest"]
