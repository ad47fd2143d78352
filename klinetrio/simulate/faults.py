"""Faults the fake exchange can inject: Binance's request-weight limits (429, then 418) and
the drop point of a connection. Pure: callers pass the time."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from klinetrio.simulate.config import SimulatorConfig

# Requests a client may still send after a 429 before it is banned (in-flight requests race).
_BACKOFF_TOLERANCE = 2


def drop_point(config: SimulatorConfig, rng: random.Random) -> int | None:
    """After how many frames a connection is dropped (None: never)."""
    if config.drop_after is None:
        return None
    spread = config.drop_after * config.drop_spread
    return max(1, round(config.drop_after + rng.uniform(-spread, spread)))


@dataclass(slots=True)
class _ClientWeight:
    window_start: float = -math.inf
    used: int = 0
    backoff_until: float = -math.inf
    ignored: int = 0
    banned_until: float = -math.inf


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the limiter decided: ``status`` 200, 429 or 418, and for how long to back off."""

    status: int
    used: int
    retry_after: float = 0.0
    until: float = 0.0


class WeightLimiter:
    """Binance's REQUEST_WEIGHT accounting per client address, in fixed windows.

    Over the limit → 429 until the window ends. A client that keeps sending during that back-off
    (more than ``_BACKOFF_TOLERANCE`` requests, allowing for requests already in flight) is
    banned for two windows → 418 until then. Pure: the caller passes the real time.
    """

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._clients: dict[str, _ClientWeight] = {}

    def used(self, client: str, now: float) -> int:
        state = self._clients.get(client)
        if state is None or now >= state.window_start + self.window:
            return 0
        return state.used

    def admit(self, client: str, weight: int, now: float) -> Verdict:
        state = self._clients.setdefault(client, _ClientWeight())
        if now >= state.window_start + self.window:
            state.window_start = math.floor(now / self.window) * self.window
            state.used = 0
        if now < state.banned_until:
            return Verdict(418, state.used, state.banned_until - now, state.banned_until)
        if now < state.backoff_until:
            state.ignored += 1
            if state.ignored > _BACKOFF_TOLERANCE:
                state.banned_until = now + 2 * self.window
                state.backoff_until = -math.inf
                return Verdict(418, state.used, state.banned_until - now, state.banned_until)
            return Verdict(429, state.used, state.backoff_until - now, state.backoff_until)
        state.ignored = 0
        state.used += weight
        if state.used > self.limit:
            state.backoff_until = state.window_start + self.window
            return Verdict(429, state.used, state.backoff_until - now, state.backoff_until)
        return Verdict(200, state.used)
