"""The REST face of the fake exchange: ``/api/v3/klines``, ``/time``, ``/exchangeInfo``,
``/ping``, with Binance's parameters, limits, weights and error bodies."""

from __future__ import annotations

import math
import random

import msgspec
import trio
from loguru import logger

from klinetrio.core.intervals import INTERVALS
from klinetrio.simulate.clock import ExchangeClock
from klinetrio.simulate.faults import Verdict, WeightLimiter
from klinetrio.simulate.market import Market, partial_bar
from klinetrio.simulate.state import Exchange
from klinetrio.simulate.web import Request, Response

_MAX_LIMIT = 1000
_DEFAULT_LIMIT = 500

_KLINE_WEIGHT = 2
_ROUTE_WEIGHT = {
    "/api/v3/klines": _KLINE_WEIGHT,
    "/api/v3/exchangeInfo": 20,
    "/api/v3/time": 1,
    "/api/v3/ping": 1,
}
_QUOTES = ("FDUSD", "USDT", "USDC", "BUSD", "TUSD", "BTC", "ETH", "BNB", "EUR", "TRY", "BRL")


def _api_error(code: int, msg: str, status: int = 400) -> Response:
    return Response.json({"code": code, "msg": msg}, status)


def _mandatory(name: str) -> Response:
    return _api_error(
        -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    )


def _illegal(name: str) -> Response:
    return _api_error(
        -1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'."
    )


def _split_symbol(symbol: str) -> tuple[str, str]:
    for quote in _QUOTES:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)], quote
    return symbol[:-4], symbol[-4:]


class RestFace:
    """Answers the simulator's REST requests; owns the weight limiter and the error dice."""

    def __init__(self, sim: Exchange) -> None:
        self.sim = sim
        self.config = sim.config
        self._limiter = WeightLimiter(sim.config.weight_limit, sim.config.weight_window)
        self._rng = random.Random(sim.config.seed)

    @property
    def market(self) -> Market:
        return self.sim.market

    @property
    def clock(self) -> ExchangeClock:
        return self.sim.clock

    async def handle(self, request: Request) -> Response:
        stats = self.sim.counters
        weight = _ROUTE_WEIGHT.get(request.path)
        if weight is None:
            return Response.text("404 Not Found\n", 404)
        stats.rest_requests += 1
        now = trio.current_time()
        verdict = self._limiter.admit(request.client, weight, now)
        header = ("X-MBX-USED-WEIGHT-1M", str(verdict.used))
        if verdict.status == 418:
            stats.rest_418 += 1
            logger.warning(
                "answered 418 (IP banned) to {client}: {count} so far",
                client=request.client,
                count=stats.rest_418,
            )
            return self._banned(verdict).with_headers(header)
        if verdict.status == 429:
            stats.rest_429 += 1
            logger.warning(
                "answered 429 (too much weight) to {client}: {count} so far",
                client=request.client,
                count=stats.rest_429,
            )
            return self._too_much(verdict).with_headers(header)
        injected = self._injected_error()
        if injected is not None:
            stats.rest_injected_errors += 1
            stats.rest_429 += injected.status == 429
            stats.rest_418 += injected.status == 418
            return injected.with_headers(header)
        if request.method not in ("GET", "HEAD"):
            return _api_error(-1000, "Method not allowed.", 405).with_headers(header)
        if request.path == "/api/v3/klines":
            response = self._klines(request)
        elif request.path == "/api/v3/time":
            response = Response.json({"serverTime": self.clock.now_ms()})
        elif request.path == "/api/v3/ping":
            response = Response.json({})
        else:
            response = self._exchange_info(request)
        logger.debug(
            "rest {path} {status} weight {used}",
            path=request.path,
            status=response.status,
            used=verdict.used,
        )
        return response.with_headers(header)

    def _retry_after(self, seconds: float) -> tuple[str, str]:
        return ("Retry-After", str(max(1, math.ceil(seconds))))

    def _too_much(self, verdict: Verdict) -> Response:
        window = self.config.weight_window
        per = "1 MINUTE" if window == 60 else f"{window:g} SECOND"
        return _api_error(
            -1003,
            f"Too much request weight used; current limit is {self.config.weight_limit} "
            f"request weight per {per}. Please use the websocket for live updates to avoid "
            "polling the API.",
            429,
        ).with_headers(self._retry_after(verdict.retry_after))

    def _banned(self, verdict: Verdict) -> Response:
        until_ms = self.clock.now_ms(verdict.until)
        return _api_error(
            -1003,
            f"Way too much request weight used; IP banned until {until_ms}. Please use the "
            "websocket for live updates to avoid bans.",
            418,
        ).with_headers(self._retry_after(verdict.retry_after))

    def _injected_error(self) -> Response | None:
        if not self.config.rest_errors:
            return None
        roll = self._rng.random()
        for status, share in self.config.rest_errors:
            if roll < share:
                now = trio.current_time()
                if status == 429:
                    return self._too_much(Verdict(429, 0, 1.0, now + 1))
                if status == 418:
                    return self._banned(Verdict(418, 0, 1.0, now + 1))
                if status >= 500:
                    return _api_error(
                        -1000, "An unknown error occured while processing the request.", status
                    )
                return _api_error(-1000, "Injected error.", status)
            roll -= share
        return None

    def _klines(self, request: Request) -> Response:
        query = request.query
        symbol = query.get("symbol", "")
        interval = query.get("interval", "")
        if not symbol:
            return _mandatory("symbol")
        if not interval:
            return _mandatory("interval")
        if symbol not in self.market.symbols:
            return _api_error(-1121, "Invalid symbol.")
        if interval not in INTERVALS:
            return _api_error(-1120, "Invalid interval.")
        numbers: dict[str, int | None] = {}
        for name in ("startTime", "endTime", "limit"):
            text = query.get(name)
            if text is None or text == "":
                numbers[name] = None
            elif text.isdigit() and len(text) <= 20:
                numbers[name] = int(text)
            else:
                return _illegal(name)
        limit = numbers["limit"] if numbers["limit"] is not None else _DEFAULT_LIMIT
        if not 1 <= limit <= _MAX_LIMIT:
            return _api_error(-1130, "Data sent for parameter 'limit' is not valid.")
        start, end = numbers["startTime"], numbers["endTime"]
        if start is not None and end is not None and start > end:
            return _api_error(-1023, "Start time is greater than end time.")
        now = self.clock.now_ms()
        last = now if end is None else min(end, now)
        times = self.market.open_times(
            symbol, interval, start or 0, last, limit, latest=start is None
        )
        rows = []
        for t in times:
            bar = self.market.bar(symbol, interval, t)
            if bar is None:
                continue
            rows.append((partial_bar(bar, now) if bar.close_time >= now else bar).rest_row())
        return Response.json(rows)

    def _exchange_info(self, request: Request) -> Response:
        symbols = list(self.market.symbols)
        if "symbol" in request.query:
            wanted = [request.query["symbol"]]
        elif "symbols" in request.query:
            try:
                wanted = msgspec.json.decode(request.query["symbols"], type=list[str])
            except msgspec.DecodeError:
                return _api_error(-1100, "Illegal characters found in parameter 'symbols'.")
        else:
            wanted = symbols
        if any(s not in symbols for s in wanted):
            return _api_error(-1121, "Invalid symbol.")
        window = self.config.weight_window
        limits = [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE" if window == 60 else "SECOND",
                "intervalNum": 1 if window == 60 else max(1, round(window)),
                "limit": self.config.weight_limit,
            },
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
            {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
            {
                "rateLimitType": "RAW_REQUESTS",
                "interval": "MINUTE",
                "intervalNum": 5,
                "limit": 61000,
            },
        ]
        infos = []
        for symbol in wanted:
            base, quote = _split_symbol(symbol)
            infos.append(
                {
                    "symbol": symbol,
                    "status": "TRADING",
                    "baseAsset": base,
                    "baseAssetPrecision": 8,
                    "quoteAsset": quote,
                    "quotePrecision": 8,
                    "quoteAssetPrecision": 8,
                    "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"],
                    "icebergAllowed": True,
                    "ocoAllowed": True,
                    "isSpotTradingAllowed": True,
                    "isMarginTradingAllowed": False,
                    "filters": [],
                    "permissions": ["SPOT"],
                }
            )
        return Response.json(
            {
                "timezone": "UTC",
                "serverTime": self.clock.now_ms(),
                "rateLimits": limits,
                "exchangeFilters": [],
                "symbols": infos,
            }
        )
