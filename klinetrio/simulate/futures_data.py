"""The futures statistics of the fake exchange: ``/futures/data/openInterestHist``,
``topLongShortPositionRatio``, ``topLongShortAccountRatio`` and ``globalLongShortAccountRatio``,
in Binance's documented shapes for USD-M (by ``symbol``) and COIN-M (by ``pair``, and
``contractType`` for open interest).

Every value is a pure function of (seed, market, symbol or pair, kind, timestamp), so two
periods that share a timestamp agree and a restarted simulator serves the same rows. A row's
``timestamp`` is the open of its period, and a row appears once its period has ended; the
oldest one is 30 days back (Binance keeps no more). Without ``startTime`` and ``endTime`` the
latest ``limit`` rows come back; with ``startTime`` the first ``limit`` from it.

Binance meters these endpoints by requests, not weight: 1000 requests per 5 minutes per IP
(``stats_request_limit`` per five weight windows here), 429 and then 418 past it.
"""

from __future__ import annotations

import math

import trio

from klinetrio.core.intervals import DAY_MS, Interval
from klinetrio.simulate.exchange_info import contract_types
from klinetrio.simulate.faults import WeightLimiter
from klinetrio.simulate.market import _mix, _unit, format_units
from klinetrio.simulate.state import Exchange
from klinetrio.simulate.venues import Venue
from klinetrio.simulate.web import Request, Response

PERIODS = ("5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d")
KEPT_MS = 30 * DAY_MS
DEFAULT_LIMIT = 30
MAX_LIMIT = 500
_RATIO_KINDS = {
    "topLongShortPositionRatio": 1,
    "topLongShortAccountRatio": 2,
    "globalLongShortAccountRatio": 3,
}
_CONTRACT_TYPES = ("ALL", "CURRENT_QUARTER", "NEXT_QUARTER", "PERPETUAL")
_MASK64 = (1 << 64) - 1


def _error(code: int, msg: str, status: int = 400) -> Response:
    return Response.json({"code": code, "msg": msg}, status)


def _key(seed: int, *parts: str) -> int:
    h = seed & _MASK64
    for part in parts:
        for ch in part.encode():
            h = _mix(h ^ ch)
        h = _mix(h ^ 0xFF)
    return h


def _smooth(key: int, t_ms: int, length_ms: int) -> float:
    """Value noise in [0, 1): a deterministic function of time that drifts over ``length_ms``."""
    pos = t_ms / length_ms
    i = math.floor(pos)
    a, b = _unit(_mix(key ^ (i & _MASK64))), _unit(_mix(key ^ ((i + 1) & _MASK64)))
    return a + (b - a) * (pos - i)


def long_share_bp(seed: int, market: str, name: str, kind: str, t_ms: int) -> int:
    """The long share in basis points (3000..7000) of ``kind`` at ``t_ms``."""
    key = _key(seed, market, name, kind)
    drift = _smooth(key, t_ms, 6 * 3_600_000)
    jitter = _unit(_mix(key ^ _mix(t_ms)))
    return 3000 + int(4000 * (0.8 * drift + 0.2 * jitter))


def ratio_fields(long_bp: int) -> tuple[str, str, str]:
    """(longShortRatio, long share, short share) as Binance's 4-decimal strings."""
    short_bp = 10_000 - long_bp
    ratio = (long_bp * 10_000 * 2 + short_bp) // (2 * short_bp)  # rounded to 4 decimals
    return f"{ratio // 10_000}.{ratio % 10_000:04d}", f"0.{long_bp:04d}", f"0.{short_bp:04d}"


def open_interest_units(seed: int, market: str, name: str, t_ms: int) -> int:
    """Open interest in 1e-8 units (whole contracts on COIN-M)."""
    key = _key(seed, market, name, "openInterest")
    size = 10 ** (2 + 4 * _unit(_mix(key)))
    level = size * (0.7 + 0.6 * _smooth(key, t_ms, 12 * 3_600_000))
    if market == "coinm":
        return int(level) * 100_000_000
    return int(level * 1000) * 100_000  # 3 decimals, as USD-M quantities


class FuturesDataFace:
    """Answers ``/futures/data/...`` for USD-M and COIN-M."""

    def __init__(self, sim: Exchange) -> None:
        self.sim = sim
        window = 5 * sim.config.weight_window
        self._limiters = {
            market: WeightLimiter(sim.config.stats_request_limit, window)
            for market in ("usdm", "coinm")
        }

    def handle(self, venue: Venue, endpoint: str, request: Request) -> Response:
        stats = self.sim.counters
        name = endpoint.removeprefix("futures/data/")
        if venue.name == "spot" or (name not in _RATIO_KINDS and name != "openInterestHist"):
            return Response.text("404 Not Found\n", 404)
        stats.futures_data_requests += 1
        verdict = self._limiters[venue.name].admit(request.client, 1, trio.current_time())
        if verdict.status != 200:
            stats.futures_data_refused += 1
            if verdict.status == 418:
                stats.rest_418 += 1
                venue.counters.rest_418 += 1
            else:
                stats.rest_429 += 1
                venue.counters.rest_429 += 1
            retry = ("Retry-After", str(max(1, math.ceil(verdict.retry_after))))
            limit = self.sim.config.stats_request_limit
            return _error(
                -1003,
                f"Too many requests; current limit of IP is {limit} requests per 5 minutes.",
                verdict.status,
            ).with_headers(retry)
        return self._rows(venue, name, request)

    def _rows(self, venue: Venue, name: str, request: Request) -> Response:
        query = request.query
        coinm = venue.name == "coinm"
        key_name = "pair" if coinm else "symbol"
        key = query.get(key_name, "")
        if not key:
            return _error(
                -1102,
                f"Mandatory parameter '{key_name}' was not sent, was empty/null, or malformed.",
            )
        period = query.get("period", "")
        if not period:
            return _error(
                -1102, "Mandatory parameter 'period' was not sent, was empty/null, or malformed."
            )
        if period not in PERIODS:
            return _error(-1120, "Invalid interval.")
        contract_type = query.get("contractType", "")
        if coinm and name == "openInterestHist":
            if not contract_type:
                return _error(
                    -1102,
                    "Mandatory parameter 'contractType' was not sent, was empty/null, or "
                    "malformed.",
                )
            if contract_type not in _CONTRACT_TYPES:
                return _error(-1100, "Illegal characters found in parameter 'contractType'.")
        numbers: dict[str, int | None] = {}
        for field in ("startTime", "endTime", "limit"):
            text = query.get(field)
            if text is None or text == "":
                numbers[field] = None
            elif text.isdigit() and len(text) <= 20:
                numbers[field] = int(text)
            else:
                return _error(
                    -1100,
                    f"Illegal characters found in parameter '{field}'; legal range is "
                    "'^[0-9]{1,20}$'.",
                )
        limit = numbers["limit"] if numbers["limit"] is not None else DEFAULT_LIMIT
        if not 1 <= limit <= MAX_LIMIT:
            return _error(-1130, "Data sent for parameter 'limit' is not valid.")
        start, end = numbers["startTime"], numbers["endTime"]
        if start is not None and end is not None and start > end:
            return _error(-1023, "Start time is greater than end time.")
        now = self.sim.clock.now_ms()
        symbols = self._symbols_of(venue, key, now)
        if not symbols:
            return _error(-1121, "Invalid symbol.")
        times = self._times(venue, symbols, period, start, end, limit, now)
        seed = self.sim.config.seed
        market = venue.name
        if name == "openInterestHist":
            if coinm:
                types = contract_types(symbols)
                wanted = [s for s in symbols if contract_type in ("ALL", types[s])]
                return Response.json(
                    [self._coinm_oi(venue, key, contract_type, wanted, t) for t in times]
                    if wanted
                    else []
                )
            return Response.json([self._usdm_oi(venue, key, t) for t in times])
        rows = []
        long_name, short_name = (
            ("longPosition", "shortPosition")
            if coinm and name == "topLongShortPositionRatio"
            else ("longAccount", "shortAccount")
        )
        for t in times:
            ratio, long_share, short_share = ratio_fields(long_share_bp(seed, market, key, name, t))
            rows.append(
                {
                    key_name: key,
                    "longShortRatio": ratio,
                    long_name: long_share,
                    short_name: short_share,
                    "timestamp": t,
                }
            )
        return Response.json(rows)

    def _symbols_of(self, venue: Venue, key: str, now: int) -> list[str]:
        """The symbols a request's ``symbol`` (USD-M) or ``pair`` (COIN-M) covers."""
        if venue.name == "usdm":
            return [key] if venue.status(key, now) is not None else []
        return [
            s
            for s in venue.candles.symbols
            if s.partition("_")[0] == key and venue.status(s, now) is not None
        ]

    def _times(
        self,
        venue: Venue,
        symbols: list[str],
        period: str,
        start: int | None,
        end: int | None,
        limit: int,
        now: int,
    ) -> list[int]:
        iv = Interval(period)
        step = iv.nominal_ms
        # A row appears once its period has ended: the newest is the one that ended last.
        first_ms = now - KEPT_MS
        last_ms = now - step
        windows = [venue.windows.get(s) for s in symbols]
        if all(w is not None for w in windows):
            first_ms = max(first_ms, min(w.listed_ms for w in windows if w is not None))
            last_ms = min(last_ms, max(w.delisted_ms for w in windows if w is not None) - step)
        lo = iv.ceil(max(first_ms, start if start is not None else first_ms))
        hi = iv.floor(min(last_ms, end if end is not None else last_ms))
        if lo > hi:
            return []
        if start is None:
            lo = max(lo, hi - (limit - 1) * step)
        else:
            hi = min(hi, lo + (limit - 1) * step)
        return list(range(lo, hi + 1, step))

    def _price(self, venue: Venue, symbol: str, t: int) -> float:
        bar = venue.candles.bar(symbol, "5m", t - 300_000)
        if bar is not None:
            return float(bar.close)
        key = _key(self.sim.config.seed, venue.name, symbol, "price")
        return 10 ** (-1 + 4 * _unit(_mix(key)))

    def _usdm_oi(self, venue: Venue, symbol: str, t: int) -> dict[str, object]:
        units = open_interest_units(self.sim.config.seed, "usdm", symbol, t)
        value = int(units * self._price(venue, symbol, t))
        return {
            "symbol": symbol,
            "sumOpenInterest": format_units(units),
            "sumOpenInterestValue": format_units(value),
            "timestamp": t,
        }

    def _coinm_oi(
        self, venue: Venue, pair: str, contract_type: str, symbols: list[str], t: int
    ) -> dict[str, object]:
        seed = self.sim.config.seed
        contracts = sum(open_interest_units(seed, "coinm", s, t) for s in symbols)
        # Value in the base coin: contracts x contract size (USD) / price.
        size = 100 if pair.startswith("BTC") else 10
        price = self._price(venue, symbols[0], t)
        value = int(contracts * size / price) if price > 0 else 0
        return {
            "pair": pair,
            "contractType": contract_type,
            "sumOpenInterest": str(contracts // 100_000_000),
            "sumOpenInterestValue": format_units(value),
            "timestamp": t,
        }


__all__ = ["PERIODS", "FuturesDataFace", "long_share_bp", "ratio_fields"]
