"""Request-weight accounting for Binance's REST API: pure logic, no Trio and no clock.

Binance meters every REST request by *weight* (``/api/v3/klines`` 2, ``/api/v3/exchangeInfo``
20, ``/api/v3/time`` 1) against a per-IP budget, ``REQUEST_WEIGHT`` per ``MINUTE`` in
``exchangeInfo``'s ``rateLimits`` (6000 today, 1200 until 2023). The escalation is what makes
care worth it:

- Over the budget, the answer is HTTP 429 with a ``Retry-After`` header (seconds).
- Keep sending after a 429 and the IP is *banned*: HTTP 418, again with ``Retry-After``, for
  2 minutes at first and up to 3 days for repeat offenders. During a ban every REST request
  from the IP fails, so nothing at all may be sent until it passes.

The server's count is authoritative and shared by everything on the IP (other processes, other
tools), and every response tells us what it is: the ``X-MBX-USED-WEIGHT-1M`` header. So the
budget here is our own estimate *kept in step with* that header: the higher of the two wins.

Our estimate is a sliding 60-second window of reservations, while Binance counts per calendar
minute. A sliding window never lets any fixed minute exceed the budget, so it is the safe side
of the two; the cost is that weight the header reveals is held for a full window from when we
saw it, a little longer than the server holds it. A safety margin (90 % by default) leaves room
for requests already in flight and for weight we do not see in time.

Times are floats in seconds from the caller's clock (``trio.current_time()``), so tests drive
the whole schedule without an event loop, and under Trio's autojump clock.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from klinetrio.binance.wire import RateLimit

USED_WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
DEFAULT_WEIGHT_LIMIT = 6000
DEFAULT_WINDOW = 60.0
DEFAULT_SAFETY = 0.9
# Used when a 429/418 arrives without a usable Retry-After (Binance always sends one).
DEFAULT_RATE_LIMITED_WAIT = 60.0
DEFAULT_BAN_WAIT = 120.0
# The shortest wait ``reserve`` returns, so that float rounding never yields a busy loop of
# zero-length sleeps just before a reservation expires.
MIN_WAIT = 0.001

_INTERVAL_SECONDS = {"SECOND": 1.0, "MINUTE": 60.0, "HOUR": 3600.0, "DAY": 86400.0}
_BANNED_UNTIL = re.compile(r"banned until (\d{10,})")


@dataclass(slots=True)
class WeightBudget:
    """The request weight we may still spend, shared by every request to one exchange.

    ``reserve(weight, now)`` returns 0.0 and books the weight, or returns how many seconds to
    wait before asking again (nothing is booked then). ``observe_used`` applies the server's
    count from a response header; ``rate_limited`` and ``banned`` record a 429 and a 418.
    """

    limit: int = DEFAULT_WEIGHT_LIMIT
    window: float = DEFAULT_WINDOW
    safety: float = DEFAULT_SAFETY
    # After each 429 the usable budget is halved, down to this fraction, for one window
    # beyond the Retry-After: something else is spending weight on this IP.
    min_factor: float = 0.125
    _log: deque[tuple[float, int]] = field(default_factory=deque, init=False, repr=False)
    _used: int = field(default=0, init=False)
    _factor: float = field(default=1.0, init=False)
    _penalty_until: float = field(default=-math.inf, init=False)
    _paused_until: float = field(default=-math.inf, init=False)
    _banned_until: float = field(default=-math.inf, init=False)

    def used(self, now: float) -> int:
        """The weight booked (or reported by the server) within the last window."""
        self._expire(now)
        return self._used

    def usable(self, now: float) -> int:
        """The most weight we allow ourselves per window right now (never less than 1)."""
        if now >= self._penalty_until:
            self._factor = 1.0
        return max(1, int(self.limit * self.safety * self._factor))

    def paused_until(self) -> float:
        """Until when nothing may be sent at all (a 429's Retry-After or a 418 ban)."""
        return self._paused_until

    def banned_until(self) -> float:
        return self._banned_until

    def is_banned(self, now: float) -> bool:
        return now < self._banned_until

    def reserve(self, weight: int, now: float) -> float:
        """Book ``weight`` and return 0.0, or return the seconds to wait before trying again.

        A request heavier than the whole usable budget is let through once the window is
        empty, rather than never.
        """
        if now < self._paused_until:
            return max(MIN_WAIT, self._paused_until - now)
        used = self.used(now)
        usable = self.usable(now)
        if used == 0 or used + weight <= usable:
            self._book(weight, now)
            return 0.0
        must_free = min(used + weight - usable, used)
        freed = 0
        for booked_at, booked in self._log:
            freed += booked
            if freed >= must_free:
                return max(MIN_WAIT, booked_at + self.window - now)
        raise AssertionError("unreachable: the log sums to the used weight")  # pragma: no cover

    def observe_used(self, used_weight: int, now: float) -> None:
        """Apply the server's ``X-MBX-USED-WEIGHT-1M``: when it is higher, it wins."""
        ours = self.used(now)
        if used_weight > ours:
            self._book(used_weight - ours, now)

    def rate_limited(self, retry_after: float, now: float) -> None:
        """Record an HTTP 429: send nothing for ``retry_after`` s, then run at a reduced rate."""
        self._paused_until = max(self._paused_until, now + retry_after)
        self._factor = max(self.min_factor, self._factor / 2)
        self._penalty_until = max(self._penalty_until, now + retry_after + self.window)

    def banned(self, retry_after: float, now: float) -> bool:
        """Record an HTTP 418; return True when this starts a ban (False if already banned).

        Several requests in flight may all come back 418; the caller logs only the first.
        """
        is_new = now >= self._banned_until
        self._banned_until = max(self._banned_until, now + retry_after)
        self._paused_until = max(self._paused_until, self._banned_until)
        self._factor = self.min_factor
        self._penalty_until = max(self._penalty_until, self._banned_until + self.window)
        return is_new

    def adopt_limit(self, limit: int, window: float = DEFAULT_WINDOW) -> None:
        """Take the limit the exchange announces (``exchangeInfo``'s ``rateLimits``)."""
        if limit <= 0 or window <= 0:
            raise ValueError(f"invalid weight limit {limit} per {window} s")
        self.limit = limit
        self.window = window

    def _book(self, weight: int, now: float) -> None:
        self._log.append((now, weight))
        self._used += weight

    def _expire(self, now: float) -> None:
        log = self._log
        horizon = now - self.window
        while log and log[0][0] <= horizon:
            self._used -= log.popleft()[1]


def request_weight_limit(rate_limits: Iterable[RateLimit]) -> tuple[int, float] | None:
    """The ``REQUEST_WEIGHT`` limit and its window in seconds from ``rateLimits``, if any.

    The one-minute entry is preferred, because that is the window the header reports.
    """
    found: list[tuple[int, float]] = []
    for rate_limit in rate_limits:
        unit = _INTERVAL_SECONDS.get(rate_limit.interval)
        if rate_limit.rateLimitType != "REQUEST_WEIGHT" or unit is None:
            continue
        found.append((rate_limit.limit, unit * rate_limit.intervalNum))
    for limit, window in found:
        if window == DEFAULT_WINDOW:
            return limit, window
    return found[0] if found else None


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header; None when absent or not a number of seconds."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


def parse_banned_until_ms(message: str) -> int | None:
    """The epoch milliseconds in a 418 message: ``"...; IP banned until 1660090423228. ..."``."""
    match = _BANNED_UNTIL.search(message)
    return int(match.group(1)) if match else None
