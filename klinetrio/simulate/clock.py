"""The exchange clock: exchange time runs ``speed`` times faster than Trio's clock."""

from __future__ import annotations

import math

import trio


class ExchangeClock:
    """Exchange time = ``start_ms`` + (real time since ``origin``) x ``speed``; real time is
    Trio's clock, so tests may drive it with an autojump clock."""

    def __init__(self, start_ms: int, speed: float, origin: float) -> None:
        self.start_ms = start_ms
        self.speed = speed
        self.origin = origin

    def now_ms(self, real: float | None = None) -> int:
        if real is None:
            real = trio.current_time()
        # The epsilon keeps now_ms(real_at(t)) == t despite float rounding.
        return math.floor(self.start_ms + (real - self.origin) * self.speed * 1000 + 1e-6)

    def real_at(self, t_ms: int) -> float:
        """The real (Trio) time at which the exchange clock reads ``t_ms``."""
        return self.origin + (t_ms - self.start_ms) / (self.speed * 1000)
