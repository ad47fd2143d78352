"""Binance's WebSocket connection-attempt limit as a sliding window: pure logic, times passed in.

Binance allows 300 connection attempts per 5 minutes per IP address; past that it refuses
connections and may ban the address. The limit is per IP, so every connection of a
``StreamGroup`` draws on one ``ConnectBudget``: a reconnect storm (a network outage seen by
twenty connections at once, a server that drops every connection right after the handshake) is
throttled as a whole, whatever each connection's own backoff says.

A *sliding* window is the conservative reading: if no window of ``window`` seconds, wherever it
starts, holds more than ``limit`` attempts, then neither does Binance's window, fixed or sliding.
The default window has a few seconds of slack because Binance counts attempts when they arrive,
and network delay can bring two attempts that left ``window`` seconds apart closer together.

Nothing here knows Trio or a clock: the caller passes ``now`` (any monotonic seconds, e.g.
``trio.current_time()``) and does the waiting, so tests run without an event loop.
"""

from __future__ import annotations

from collections import deque

BINANCE_CONNECT_LIMIT = 300
BINANCE_CONNECT_WINDOW_S = 300.0
# Attempts are counted where they arrive; a little slack absorbs network delay.
WINDOW_SLACK_S = 5.0
_MIN_WAIT_S = 0.001


class ConnectBudget:
    """At most ``limit`` connection attempts in any ``window`` seconds.

    ``try_acquire(now)`` either records an attempt and returns 0.0, or records nothing and
    returns how many seconds to wait before asking again. Memory is bounded by ``limit``.
    """

    __slots__ = ("_attempts", "limit", "window")

    def __init__(
        self,
        limit: int = BINANCE_CONNECT_LIMIT,
        window: float = BINANCE_CONNECT_WINDOW_S + WINDOW_SLACK_S,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if window <= 0:
            raise ValueError("window must be positive")
        self.limit = limit
        self.window = window
        self._attempts: deque[float] = deque()

    def _forget(self, now: float) -> None:
        attempts = self._attempts
        horizon = now - self.window
        while attempts and attempts[0] <= horizon:
            attempts.popleft()

    def used(self, now: float) -> int:
        """Attempts recorded within the window that ends at ``now``."""
        self._forget(now)
        return len(self._attempts)

    def wait_time(self, now: float) -> float:
        """Seconds until an attempt is allowed (0.0: now), without recording one."""
        self._forget(now)
        if len(self._attempts) < self.limit:
            return 0.0
        # The window is full: the oldest attempt must leave it first. Never answer 0.0 here,
        # even when float rounding says it is due this instant, or the caller would overdraw.
        return max(self._attempts[0] + self.window - now, _MIN_WAIT_S)

    def try_acquire(self, now: float) -> float:
        """Record an attempt at ``now`` and return 0.0, or return the wait and record nothing."""
        wait = self.wait_time(now)
        if wait > 0.0:
            return wait
        # A clock that went backwards (it should not) must not reorder the window.
        if self._attempts and now < self._attempts[-1]:
            now = self._attempts[-1]
        self._attempts.append(now)
        return 0.0
