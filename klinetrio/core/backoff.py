"""Capped, jittered exponential backoff: pure arithmetic, no clock and no Trio.

Callers own the waiting (``await trio.sleep(backoff.next_delay())``) so that tests drive it with
Trio's autojump clock and the schedule itself is tested without an event loop.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    """Delays of ``initial * factor**n`` seconds, capped at ``maximum``, with "equal jitter".

    Equal jitter keeps each delay within ``[d/2, d]``: never a hammering zero, and clients that
    failed together spread out. ``reset()`` after a success starts the schedule again.
    """

    initial: float = 1.0
    maximum: float = 60.0
    factor: float = 2.0
    jitter: bool = True
    attempts: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def peek(self) -> float:
        """The un-jittered delay the next failure will wait."""
        # Stop growing the exponent once capped: factor**attempts overflows a float after ~1000.
        delay = self.initial
        for _ in range(self.attempts):
            delay *= self.factor
            if delay >= self.maximum:
                return self.maximum
        return min(self.maximum, delay)

    def next_delay(self) -> float:
        """Record a failure and return how long to wait before the next attempt."""
        delay = self.peek()
        self.attempts += 1
        if self.jitter:
            delay = delay / 2 + self.rng.uniform(0, delay / 2)
        return delay

    def reset(self) -> None:
        self.attempts = 0
