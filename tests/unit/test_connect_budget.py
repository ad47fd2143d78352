"""The connection-attempt budget: a sliding window, times passed in, no event loop."""

from __future__ import annotations

import random

import pytest

from klinetrio.core.connect_budget import (
    BINANCE_CONNECT_LIMIT,
    BINANCE_CONNECT_WINDOW_S,
    ConnectBudget,
)


def test_defaults_stay_within_binances_limit() -> None:
    budget = ConnectBudget()
    assert budget.limit <= BINANCE_CONNECT_LIMIT
    assert budget.window >= BINANCE_CONNECT_WINDOW_S


def test_allows_limit_attempts_then_says_how_long_to_wait() -> None:
    budget = ConnectBudget(limit=3, window=10.0)
    assert [budget.try_acquire(t) for t in (0.0, 1.0, 2.0)] == [0.0, 0.0, 0.0]
    assert budget.used(2.0) == 3
    assert budget.try_acquire(2.5) == pytest.approx(7.5)  # until the attempt at 0.0 leaves
    assert budget.used(2.5) == 3  # a refused attempt is not recorded
    assert budget.try_acquire(10.0) == 0.0  # the window is (0.0, 10.0]: 0.0 has left
    assert budget.try_acquire(10.5) == pytest.approx(0.5)  # now 1.0 must leave first


def test_wait_time_does_not_record() -> None:
    budget = ConnectBudget(limit=1, window=5.0)
    assert budget.wait_time(0.0) == 0.0
    assert budget.wait_time(0.0) == 0.0
    assert budget.try_acquire(0.0) == 0.0
    assert budget.wait_time(1.0) == pytest.approx(4.0)


def test_a_full_window_never_answers_zero() -> None:
    """Float rounding at the window's edge must not let an extra attempt through."""
    budget = ConnectBudget(limit=1, window=0.1)
    budget.try_acquire(0.2)
    wait = budget.wait_time(0.2 + 0.1 - 1e-12)
    assert wait > 0.0


def test_no_window_anywhere_holds_more_than_limit() -> None:
    """A greedy caller that asks again exactly when told never exceeds the limit."""
    rng = random.Random(5)
    budget = ConnectBudget(limit=5, window=3.0)
    now, granted = 0.0, []
    while now < 60.0:
        wait = budget.try_acquire(now)
        if wait == 0.0:
            granted.append(now)
            now += rng.choice((0.0, 0.01, 0.3))
        else:
            now += wait
    assert len(granted) >= 5 * 60 // 3 - 5
    for i, start in enumerate(granted):
        inside = [t for t in granted[i:] if t < start + 3.0]
        assert len(inside) <= 5


def test_a_clock_that_steps_back_does_not_reorder_the_window() -> None:
    budget = ConnectBudget(limit=2, window=10.0)
    budget.try_acquire(5.0)
    budget.try_acquire(4.0)  # recorded as 5.0
    assert budget.try_acquire(14.9) > 0.0
    assert budget.try_acquire(15.0) == 0.0


@pytest.mark.parametrize(("limit", "window"), [(0, 1.0), (1, 0.0), (1, -1.0)])
def test_rejects_nonsense(limit: int, window: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        ConnectBudget(limit=limit, window=window)
