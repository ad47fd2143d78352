"""The backoff schedule: exponential, capped, equal jitter, reset, reproducible."""

from __future__ import annotations

import random

from klinetrio.core.backoff import Backoff


def delays(backoff: Backoff, n: int) -> list[float]:
    return [backoff.next_delay() for _ in range(n)]


def test_schedule_doubles_from_one_second_up_to_the_cap() -> None:
    assert delays(Backoff(jitter=False), 9) == [1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_custom_initial_factor_and_maximum() -> None:
    backoff = Backoff(initial=0.5, factor=3.0, maximum=10.0, jitter=False)
    assert delays(backoff, 5) == [0.5, 1.5, 4.5, 10.0, 10.0]


def test_peek_tells_the_next_delay_without_counting_a_failure() -> None:
    backoff = Backoff(jitter=False)
    assert backoff.peek() == backoff.peek() == 1
    assert backoff.attempts == 0
    backoff.next_delay()
    assert backoff.attempts == 1
    assert backoff.peek() == 2


def test_reset_starts_the_schedule_again() -> None:
    backoff = Backoff(jitter=False)
    delays(backoff, 4)
    backoff.reset()
    assert backoff.attempts == 0
    assert delays(backoff, 3) == [1, 2, 4]


def test_jittered_delays_stay_within_half_to_all_of_the_nominal_delay() -> None:
    backoff = Backoff(rng=random.Random(1))
    for _ in range(200):
        nominal = backoff.peek()
        delay = backoff.next_delay()
        assert nominal / 2 <= delay <= nominal
        if backoff.attempts > 12:
            backoff.reset()


def test_jitter_spreads_delays_across_the_range() -> None:
    samples = []
    rng = random.Random(5)
    for _ in range(1000):
        samples.append(Backoff(maximum=60, rng=rng).next_delay())
    assert 0.5 <= min(samples) < 0.55
    assert 0.95 < max(samples) <= 1.0
    assert 0.7 < sum(samples) / len(samples) < 0.8


def test_jittered_delay_never_exceeds_the_cap() -> None:
    backoff = Backoff(maximum=5.0, rng=random.Random(3))
    capped = delays(backoff, 50)[10:]
    assert all(2.5 <= d <= 5.0 for d in capped)


def test_same_seed_gives_the_same_delays() -> None:
    first = delays(Backoff(rng=random.Random(42)), 20)
    second = delays(Backoff(rng=random.Random(42)), 20)
    assert first == second
    assert first != delays(Backoff(rng=random.Random(43)), 20)


def test_backoffs_without_a_seed_do_not_share_a_sequence() -> None:
    assert delays(Backoff(), 10) != delays(Backoff(), 10)


def test_a_long_outage_keeps_returning_the_cap() -> None:
    backoff = Backoff(jitter=False)
    assert delays(backoff, 1100)[-1] == 60
