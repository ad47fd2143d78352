"""Confirming holes: a range is a hole only when two reads a minute apart found it empty.

``reconcile_empty`` by hand, then against a brute force over unit cells: every open time has a
state (not suspected, suspected since t, confirmed) and each read moves it by a simple rule.
"""

from __future__ import annotations

import random

import pytest

from klinetrio.core.gaps import Suspect, reconcile_empty

MINUTE = 60_000
APART = 60_000


def test_a_first_empty_read_only_suspects() -> None:
    confirmed, suspects = reconcile_empty([], (0, 100), [(10, 20)], now=1_000, apart_ms=APART)
    assert confirmed == []
    assert suspects == [Suspect(10, 20, 1_000)]


def test_a_second_empty_read_a_minute_later_confirms() -> None:
    first = [Suspect(10, 20, 1_000)]
    confirmed, suspects = reconcile_empty(first, (0, 100), [(10, 20)], now=61_000, apart_ms=APART)
    assert confirmed == [(10, 20)]
    assert suspects == []


def test_a_second_read_too_soon_keeps_the_first_sighting() -> None:
    first = [Suspect(10, 20, 1_000)]
    confirmed, suspects = reconcile_empty(first, (0, 100), [(10, 20)], now=60_999, apart_ms=APART)
    assert confirmed == []
    assert suspects == [Suspect(10, 20, 1_000)]  # not reset to the later read


def test_a_transient_empty_page_never_becomes_a_hole() -> None:
    first = [Suspect(10, 20, 1_000)]
    # The second read found candles everywhere: the suspect is dropped.
    confirmed, suspects = reconcile_empty(first, (0, 100), [], now=90_000, apart_ms=APART)
    assert confirmed == []
    assert suspects == []


def test_only_the_part_found_empty_twice_is_confirmed() -> None:
    first = [Suspect(10, 40, 1_000)]
    confirmed, suspects = reconcile_empty(
        first, (0, 100), [(20, 30), (50, 60)], now=70_000, apart_ms=APART
    )
    assert confirmed == [(20, 30)]
    assert suspects == [Suspect(50, 60, 70_000)]  # new: never seen empty before


def test_suspects_outside_the_checked_range_are_untouched() -> None:
    first = [Suspect(10, 20, 1_000), Suspect(200, 300, 2_000)]
    confirmed, suspects = reconcile_empty(first, (0, 100), [], now=90_000, apart_ms=APART)
    assert confirmed == []
    assert suspects == [Suspect(200, 300, 2_000)]


def test_a_suspect_straddling_the_checked_range_keeps_its_outer_part() -> None:
    first = [Suspect(50, 150, 1_000)]
    confirmed, suspects = reconcile_empty(first, (0, 100), [(50, 100)], now=70_000, apart_ms=APART)
    assert confirmed == [(50, 100)]
    assert suspects == [Suspect(100, 150, 1_000)]


def _brute(
    cells: dict[int, int | None], checked: range, empty: set[int], now: int
) -> tuple[set[int], dict[int, int | None]]:
    """The rule cell by cell: seen empty before (long enough ago) and empty now → confirmed."""
    confirmed: set[int] = set()
    after = dict(cells)
    for t in checked:
        seen = cells.get(t)
        if t not in empty:
            after.pop(t, None)
        elif seen is not None and seen <= now - APART:
            confirmed.add(t)
            after.pop(t, None)
        elif seen is None:
            after[t] = now
    return confirmed, after


def _ranges(cells: set[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for t in sorted(cells):
        if out and out[-1][1] == t:
            out[-1] = (out[-1][0], t + 1)
        else:
            out.append((t, t + 1))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_matches_the_rule_cell_by_cell(seed: int) -> None:
    rng = random.Random(seed)
    for case in range(200):
        state: dict[int, int | None] = {}
        suspects: list[Suspect] = []
        now = 0
        for _ in range(rng.randrange(1, 5)):
            now += rng.choice([10_000, 30_000, 60_000, 90_000])
            lo = rng.randrange(0, 40)
            hi = rng.randrange(lo + 1, 41)
            empty = {t for t in range(lo, hi) if rng.random() < 0.6}
            expected_confirmed, state = _brute(state, range(lo, hi), empty, now)
            confirmed, suspects = reconcile_empty(suspects, (lo, hi), _ranges(empty), now, APART)
            got = {t for a, b in confirmed for t in range(a, b)}
            assert got == expected_confirmed, (seed, case)
            cells = {t: s.seen_at for s in suspects for t in range(s.start, s.end)}
            assert cells == state, (seed, case)
            assert sum(s.end - s.start for s in suspects) == len(cells), "suspects overlap"
