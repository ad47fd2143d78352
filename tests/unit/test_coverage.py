"""Coverage arithmetic: by hand, on real REST files, and against a brute-force count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from klinetrio.core.coverage import Coverage, MissingRange, coverage, summary
from klinetrio.core.intervals import HOUR_MS, INTERVALS, Interval

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
T0 = 1_672_531_200_000  # 2023-01-01 00:00 UTC


def runs_of(interval: Interval, opens: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for t in sorted(opens):
        if runs and interval.next_open(runs[-1][1]) == t:
            runs[-1] = (runs[-1][0], t)
        else:
            runs.append((t, t))
    return runs


def test_complete_series_with_a_confirmed_hole_is_100_percent() -> None:
    iv = Interval.parse("1h")
    hole = T0 + 5 * HOUR_MS
    opens = [T0 + i * HOUR_MS for i in range(24) if T0 + i * HOUR_MS != hole]
    cov = coverage(
        "spot", "BTCUSDT", iv, T0, T0 + 24 * HOUR_MS, runs_of(iv, opens), [(hole, hole + HOUR_MS)]
    )
    assert (cov.expected, cov.present, cov.holes, cov.missing) == (24, 23, 1, 0)
    assert cov.complete_pct == 100.0
    assert cov.first == T0
    assert cov.last == T0 + 23 * HOUR_MS
    assert cov.missing_ranges == ()


def test_missing_candles_are_reported_as_ranges() -> None:
    iv = Interval.parse("1h")
    gone = {3, 4, 10}
    opens = [T0 + i * HOUR_MS for i in range(24) if i not in gone]
    cov = coverage("spot", "BTCUSDT", iv, T0, T0 + 24 * HOUR_MS, runs_of(iv, opens), [])
    assert cov.missing == 3
    assert cov.missing_ranges == (
        MissingRange(T0 + 3 * HOUR_MS, T0 + 5 * HOUR_MS, 2),
        MissingRange(T0 + 10 * HOUR_MS, T0 + 11 * HOUR_MS, 1),
    )
    assert cov.complete_pct == pytest.approx(100 * 21 / 24)


def test_empty_range_is_complete_and_nothing_stored_is_all_missing() -> None:
    iv = Interval.parse("1d")
    assert coverage("spot", "X", iv, T0, T0, [], []).complete_pct == 100.0
    cov = coverage("spot", "X", iv, T0, T0 + 3 * 86_400_000, [], [])
    assert (cov.expected, cov.missing, cov.first, cov.last) == (3, 3, None, None)
    assert cov.complete_pct == 0.0


def test_a_stored_candle_inside_a_hole_counts_as_present_once() -> None:
    iv = Interval.parse("1h")
    opens = [T0 + i * HOUR_MS for i in range(4)]
    cov = coverage(
        "spot", "X", iv, T0, T0 + 4 * HOUR_MS, runs_of(iv, opens), [(T0, T0 + 4 * HOUR_MS)]
    )
    assert (cov.present, cov.holes, cov.missing) == (4, 0, 0)


@pytest.mark.parametrize(
    ("name", "start"),
    [
        ("1h", "BTCUSDT_1h_2023-03-01.json"),
        ("1d", "BTCUSDT_1d_2018-01-01.json"),
        ("3d", "BTCUSDT_3d_2020-01-01.json"),
        ("1w", "BTCUSDT_1w_2020-01-01.json"),
        ("1M", "BTCUSDT_1M_2010-01-01.json"),
    ],
)
def test_real_rest_files_are_what_the_arithmetic_expects(name: str, start: str) -> None:
    path = DATA / "rest" / start
    if not path.exists():
        pytest.skip("needs ../shared/data")
    rows = json.loads(path.read_text())
    iv = Interval.parse(name)
    opens = [int(r[0]) for r in rows]
    end = iv.next_open(opens[-1])
    cov = coverage("spot", "BTCUSDT", iv, opens[0], end, runs_of(iv, opens), [])
    if name == "1h":  # 2023-03-24 13:00 never existed: the one missing hour of the month
        assert cov.missing_ranges == (MissingRange(1679662800000, 1679666400000, 1),)
        assert cov.expected == len(rows) + 1
    else:
        assert cov.missing == 0
        assert cov.expected == len(rows)
    assert cov.present == len(rows)


@st.composite
def cases(draw: st.DrawFn) -> tuple[Interval, int, int, list[int], list[tuple[int, int]]]:
    iv = Interval.parse(draw(st.sampled_from(INTERVALS)))
    base = iv.floor(draw(st.integers(0, 2_000_000_000_000)))
    grid = [base]
    for _ in range(40):
        grid.append(iv.next_open(grid[-1]))
    span = grid[-1] - grid[0]
    start = grid[0] + draw(st.integers(-span // 4, span))
    end = start + draw(st.integers(-10, span))
    stored = sorted(draw(st.sets(st.sampled_from(grid))))
    holes = [
        (a, a + draw(st.integers(1, span // 3)))
        for a in draw(st.lists(st.integers(grid[0] - span // 4, grid[-1]), max_size=4))
    ]
    return iv, start, end, stored, holes


@settings(max_examples=300, deadline=None)
@given(cases())
@example((Interval("1m"), 1, 120001, [0, 120000], []))  # a run clipped to no candle at all
def test_coverage_equals_a_brute_force_count(
    case: tuple[Interval, int, int, list[int], list[tuple[int, int]]],
) -> None:
    iv, start, end, stored, holes = case
    cov = coverage("spot", "X", iv, start, end, runs_of(iv, stored), holes)
    expected = list(iv.open_times(start, end))
    present = [t for t in expected if t in set(stored)]
    in_holes = [t for t in expected if t not in set(stored) and any(a <= t < b for a, b in holes)]
    missing = [t for t in expected if t not in set(stored) and t not in set(in_holes)]
    assert cov.expected == len(expected)
    assert cov.present == len(present)
    assert cov.holes == len(in_holes)
    assert cov.missing == len(missing)
    listed = [t for r in cov.missing_ranges for t in iv.open_times(r.start, r.end)]
    assert listed == missing
    assert [t for r in cov.hole_ranges for t in iv.open_times(r.start, r.end)] == in_holes
    assert all(r.count == iv.count(r.start, r.end) for r in cov.missing_ranges)
    assert cov.first == (present[0] if present else None)
    assert cov.last == (present[-1] if present else None)
    assert 0.0 <= cov.complete_pct <= 100.0


def test_summary_adds_up() -> None:
    a = Coverage("spot", "A", "1h", 0, 1, 0, 0, 10, 8, 1, 1)
    b = Coverage("spot", "B", "1h", 0, 1, 0, 0, 10, 10, 0, 0)
    total = summary([a, b])
    assert total["series"] == 2
    assert total["missing"] == 1
    assert total["complete_pct"] == pytest.approx(95.0)
