"""The weight budget's arithmetic, driven by hand-picked times: no event loop, no clock."""

from __future__ import annotations

import pytest

from klinetrio.binance.wire import RateLimit
from klinetrio.core.weights import (
    MIN_WAIT,
    WeightBudget,
    parse_banned_until_ms,
    parse_retry_after,
    request_weight_limit,
)


def test_reserves_up_to_the_safety_margin_then_waits_for_the_oldest_to_expire() -> None:
    budget = WeightBudget(limit=100, window=60.0, safety=0.9)
    assert budget.usable(0.0) == 90
    for i in range(45):
        assert budget.reserve(2, now=float(i)) == 0.0
    assert budget.used(44.0) == 90
    # Full: the next 2 can go once the reservation made at t=0 leaves the window.
    assert budget.reserve(2, now=44.0) == pytest.approx(16.0)
    assert budget.used(44.0) == 90  # a refusal books nothing
    assert budget.reserve(2, now=60.0) == 0.0
    assert budget.used(60.0) == 90


def test_wait_covers_as_many_old_reservations_as_the_request_needs() -> None:
    budget = WeightBudget(limit=100, window=60.0, safety=1.0)
    budget.reserve(30, now=0.0)
    budget.reserve(30, now=10.0)
    budget.reserve(30, now=20.0)
    # 90 used, 10 free: 40 needs 30 more, so the booking made at t=0 must leave (t=60).
    assert budget.reserve(40, now=25.0) == pytest.approx(35.0)
    # 70 needs 60 more: the first two must leave (t=70); 80 needs all three gone (t=80).
    assert budget.reserve(70, now=25.0) == pytest.approx(45.0)
    assert budget.reserve(80, now=25.0) == pytest.approx(55.0)


def test_a_request_heavier_than_the_budget_goes_through_an_empty_window() -> None:
    budget = WeightBudget(limit=10, window=60.0, safety=1.0)
    assert budget.reserve(20, now=0.0) == 0.0
    assert budget.reserve(20, now=1.0) == pytest.approx(59.0)
    assert budget.reserve(20, now=60.0) == 0.0


def test_header_wins_when_higher() -> None:
    budget = WeightBudget(limit=6000, safety=0.9)
    budget.reserve(2, now=0.0)
    budget.observe_used(5000, now=1.0)  # someone else on this IP spends weight
    assert budget.used(1.0) == 5000
    assert budget.reserve(2, now=1.0) == 0.0
    budget.observe_used(5399, now=2.0)
    assert budget.used(2.0) == 5399
    # 5399 + 2 > 5400: wait until the first bookings (t=0, t=1) have left the window.
    assert budget.reserve(2, now=2.0) == pytest.approx(58.0)


def test_header_lower_than_ours_is_ignored() -> None:
    budget = WeightBudget(limit=6000)
    for i in range(10):
        budget.reserve(20, now=float(i))
    budget.observe_used(40, now=10.0)  # the server's minute rolled over; ours is the safe side
    assert budget.used(10.0) == 200


def test_window_expiry_is_sliding() -> None:
    budget = WeightBudget(limit=100, window=60.0)
    budget.reserve(10, now=0.0)
    budget.reserve(10, now=30.0)
    assert budget.used(59.9) == 20
    assert budget.used(60.0) == 10
    assert budget.used(90.0) == 0


def test_429_pauses_everything_then_halves_the_rate_for_a_window() -> None:
    budget = WeightBudget(limit=100, window=60.0, safety=1.0)
    budget.rate_limited(retry_after=30.0, now=10.0)
    assert budget.paused_until() == 40.0
    assert budget.reserve(1, now=10.0) == pytest.approx(30.0)
    assert budget.reserve(1, now=39.0) == pytest.approx(1.0)
    assert budget.usable(40.0) == 50
    assert budget.reserve(1, now=40.0) == 0.0
    # A second 429 halves again.
    budget.rate_limited(retry_after=1.0, now=41.0)
    assert budget.usable(42.0) == 25
    # One window after the last Retry-After passed, the full rate returns.
    assert budget.usable(41.0 + 1.0 + 60.0) == 100


def test_halving_stops_at_the_minimum_factor() -> None:
    budget = WeightBudget(limit=1000, safety=1.0, min_factor=0.125)
    for _ in range(10):
        budget.rate_limited(retry_after=0.0, now=0.0)
    assert budget.usable(0.0) == 125


def test_418_bans_everything_until_retry_after_and_reports_a_new_ban_once() -> None:
    budget = WeightBudget(limit=6000)
    assert budget.banned(retry_after=120.0, now=5.0) is True
    assert budget.is_banned(5.0)
    assert budget.banned(retry_after=119.0, now=6.0) is False  # the same ban, seen again
    assert budget.banned_until() == 125.0
    for now in (5.0, 60.0, 124.9):
        assert budget.reserve(1, now=now) == pytest.approx(125.0 - now)
    assert not budget.is_banned(125.0)
    assert budget.reserve(1, now=125.0) == 0.0
    # After a ban, go gently for a window.
    assert budget.usable(125.0) < budget.usable(125.0 + 61.0)
    # A later ban is a new one.
    assert budget.banned(retry_after=60.0, now=500.0) is True


def test_wait_is_never_zero_when_refused() -> None:
    budget = WeightBudget(limit=10, window=60.0, safety=1.0)
    budget.reserve(10, now=0.0)
    assert budget.reserve(1, now=60.0 - 1e-12) >= MIN_WAIT


def test_adopt_limit() -> None:
    budget = WeightBudget()
    budget.adopt_limit(1200, 60.0)
    assert budget.usable(0.0) == 1080
    with pytest.raises(ValueError, match="invalid weight limit"):
        budget.adopt_limit(0, 60.0)


def test_request_weight_limit_prefers_the_minute_entry() -> None:
    limits = [
        RateLimit("ORDERS", "SECOND", 10, 50),
        RateLimit("REQUEST_WEIGHT", "SECOND", 10, 900),
        RateLimit("REQUEST_WEIGHT", "MINUTE", 1, 6000),
        RateLimit("RAW_REQUESTS", "MINUTE", 5, 61000),
    ]
    assert request_weight_limit(limits) == (6000, 60.0)
    assert request_weight_limit(limits[:2]) == (900, 10.0)
    assert request_weight_limit([limits[0]]) is None
    assert request_weight_limit([]) is None


@pytest.mark.parametrize(
    ("header", "expected"),
    [("120", 120.0), (" 7 ", 7.0), ("0", 0.0), ("1.5", 1.5), (None, None), ("soon", None)],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


def test_parse_retry_after_rejects_negative_and_infinite() -> None:
    assert parse_retry_after("-1") is None
    assert parse_retry_after("inf") is None


def test_parse_banned_until_from_a_real_418_body() -> None:
    message = (
        "Way too much request weight used; IP banned until 1660090423228. "
        "Please use the websocket for live updates to avoid bans."
    )
    assert parse_banned_until_ms(message) == 1660090423228
    assert parse_banned_until_ms("Too much request weight used") is None
