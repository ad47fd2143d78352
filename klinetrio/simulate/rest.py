"""The REST face of the fake exchange: ``klines``, ``time``, ``exchangeInfo``, ``ping`` and
the kinds beside klines (``aggTrades``, ``depth``, ``ticker/24hr``: see ``rest_kinds``) of
each market (``/api/v3/...`` spot, ``/fapi/v1/...`` USD-M, ``/dapi/v1/...`` COIN-M), with
Binance's parameters, page sizes, weights and error bodies, and the futures statistics under
``/futures/data/...`` (see ``futures_data``).

Each market meters request weight on its own, as Binance's three hosts do. All markets share
one port, so a path may carry its market as a prefix (``/usdm/fapi/v1/klines``,
``/coinm/futures/data/openInterestHist``); without one, ``/futures/data/...`` belongs to COIN-M
when it is asked by ``pair`` and to USD-M otherwise.
"""

from __future__ import annotations

import math
import random

import msgspec
import trio
from loguru import logger

from klinetrio.simulate.clock import ExchangeClock
from klinetrio.simulate.exchange_info import exchange_info
from klinetrio.simulate.faults import Verdict
from klinetrio.simulate.futures_data import FuturesDataFace
from klinetrio.simulate.market import partial_bar
from klinetrio.simulate.rest_kinds import (
    KIND_ENDPOINTS,
    api_error,
    handle_kind,
    illegal,
    kind_weight,
    mandatory,
)
from klinetrio.simulate.state import Exchange
from klinetrio.simulate.venues import Venue
from klinetrio.simulate.web import Request, Response

_DEFAULT_LIMIT = 500
_API = {"/api/v3/": "spot", "/fapi/v1/": "usdm", "/dapi/v1/": "coinm"}
_ENDPOINTS = ("klines", "time", "exchangeInfo", "ping", *KIND_ENDPOINTS)


def route(request: Request) -> tuple[str, str] | None:
    """(market, endpoint) of a REST path; endpoint is ``klines``, ``time``, ``exchangeInfo``,
    ``ping`` or ``futures/data/<name>``; None for a path we do not serve."""
    path = request.path
    forced: str | None = None
    for prefix in ("/usdm/", "/coinm/"):
        if path.startswith(prefix):
            forced, path = prefix.strip("/"), path[len(prefix) - 1 :]
    if path.startswith("/futures/data/"):
        market = forced or ("coinm" if "pair" in request.query else "usdm")
        return market, path.removeprefix("/")
    for api, market in _API.items():
        if path.startswith(api) and forced in (None, market):
            endpoint = path.removeprefix(api)
            return (market, endpoint) if endpoint in _ENDPOINTS else None
    return None


def _limit_of(request: Request) -> int:
    text = request.query.get("limit", "")
    return int(text) if text.isdigit() and len(text) <= 20 else _DEFAULT_LIMIT


class RestFace:
    """Answers the simulator's REST requests; the markets own their weight limiters."""

    def __init__(self, sim: Exchange) -> None:
        self.sim = sim
        self.config = sim.config
        self._rng = random.Random(sim.config.seed)
        self._futures_data = FuturesDataFace(sim)

    @property
    def clock(self) -> ExchangeClock:
        return self.sim.clock

    def _weight(self, venue: Venue, endpoint: str, request: Request) -> int:
        rules = venue.rules
        if endpoint == "klines":
            return rules.klines_weight(_limit_of(request))
        if endpoint == "exchangeInfo":
            return rules.exchange_info_weight
        if endpoint in KIND_ENDPOINTS:
            return kind_weight(venue.name, endpoint, request)
        return 1

    async def handle(self, request: Request) -> Response:
        stats = self.sim.counters
        routed = route(request)
        if routed is None:
            return Response.text("404 Not Found\n", 404)
        market, endpoint = routed
        venue = self.sim.venues[market]
        if endpoint.startswith("futures/data/"):
            weight = 0
        else:
            weight = self._weight(venue, endpoint, request)
        stats.rest_requests += 1
        counters = venue.counters
        counters.rest_requests += 1
        now = trio.current_time()
        verdict = venue.limiter.admit(request.client, weight, now)
        header = ("X-MBX-USED-WEIGHT-1M", str(verdict.used))
        if verdict.status == 418:
            stats.rest_418 += 1
            counters.rest_418 += 1
            logger.warning(
                "answered 418 (IP banned) to {client} on {market}: {count} so far",
                client=request.client,
                market=market,
                count=stats.rest_418,
            )
            return self._banned(verdict).with_headers(header)
        if verdict.status == 429:
            stats.rest_429 += 1
            counters.rest_429 += 1
            logger.warning(
                "answered 429 (too much weight) to {client} on {market}: {count} so far",
                client=request.client,
                market=market,
                count=stats.rest_429,
            )
            return self._too_much(venue, verdict).with_headers(header)
        counters.weight_used += weight
        injected = self._injected_error(venue)
        if injected is not None:
            stats.rest_injected_errors += 1
            stats.rest_429 += injected.status == 429
            stats.rest_418 += injected.status == 418
            counters.rest_429 += injected.status == 429
            counters.rest_418 += injected.status == 418
            return injected.with_headers(header)
        if request.method not in ("GET", "HEAD"):
            return api_error(-1000, "Method not allowed.", 405).with_headers(header)
        if endpoint == "klines":
            response = self._klines(venue, request)
        elif endpoint == "time":
            response = Response.json({"serverTime": self.clock.now_ms()})
        elif endpoint == "ping":
            response = Response.json({})
        elif endpoint == "exchangeInfo":
            response = self._exchange_info(venue, request)
        elif endpoint in KIND_ENDPOINTS:
            response = handle_kind(venue, endpoint, request, self.clock.now_ms())
        else:
            response = self._futures_data.handle(venue, endpoint, request)
        logger.debug(
            "rest {path} {status} weight {used}",
            path=request.path,
            status=response.status,
            used=verdict.used,
        )
        return response.with_headers(header)

    def _retry_after(self, seconds: float) -> tuple[str, str]:
        return ("Retry-After", str(max(1, math.ceil(seconds))))

    def _too_much(self, venue: Venue, verdict: Verdict) -> Response:
        window = self.config.weight_window
        per = "1 MINUTE" if window == 60 else f"{window:g} SECOND"
        return api_error(
            -1003,
            f"Too much request weight used; current limit is {venue.weight_limit} "
            f"request weight per {per}. Please use the websocket for live updates to avoid "
            "polling the API.",
            429,
        ).with_headers(self._retry_after(verdict.retry_after))

    def _banned(self, verdict: Verdict) -> Response:
        until_ms = self.clock.now_ms(verdict.until)
        return api_error(
            -1003,
            f"Way too much request weight used; IP banned until {until_ms}. Please use the "
            "websocket for live updates to avoid bans.",
            418,
        ).with_headers(self._retry_after(verdict.retry_after))

    def _injected_error(self, venue: Venue) -> Response | None:
        if not self.config.rest_errors:
            return None
        roll = self._rng.random()
        for status, share in self.config.rest_errors:
            if roll < share:
                now = trio.current_time()
                if status == 429:
                    return self._too_much(venue, Verdict(429, 0, 1.0, now + 1))
                if status == 418:
                    return self._banned(Verdict(418, 0, 1.0, now + 1))
                if status >= 500:
                    return api_error(
                        -1000, "An unknown error occured while processing the request.", status
                    )
                return api_error(-1000, "Injected error.", status)
            roll -= share
        return None

    def _klines(self, venue: Venue, request: Request) -> Response:
        query = request.query
        symbol = query.get("symbol", "")
        interval = query.get("interval", "")
        if not symbol:
            return mandatory("symbol")
        if not interval:
            return mandatory("interval")
        now = self.clock.now_ms()
        market = venue.candles
        if not venue.known(symbol, now):
            return api_error(-1121, "Invalid symbol.")
        if not venue.serves_interval(interval):
            return api_error(-1120, "Invalid interval.")
        numbers: dict[str, int | None] = {}
        for name in ("startTime", "endTime", "limit"):
            text = query.get(name)
            if text is None or text == "":
                numbers[name] = None
            elif text.isdigit() and len(text) <= 20:
                numbers[name] = int(text)
            else:
                return illegal(name)
        limit = numbers["limit"] if numbers["limit"] is not None else _DEFAULT_LIMIT
        if not 1 <= limit <= venue.rules.kline_page:
            return api_error(-1130, "Data sent for parameter 'limit' is not valid.")
        start, end = numbers["startTime"], numbers["endTime"]
        if start is not None and end is not None and start > end:
            return api_error(-1023, "Start time is greater than end time.")
        last = now if end is None else min(end, now)
        times = market.open_times(symbol, interval, start or 0, last, limit, latest=start is None)
        rows = []
        for t in times:
            bar = market.bar(symbol, interval, t)
            if bar is None:
                continue
            rows.append((partial_bar(bar, now) if bar.close_time >= now else bar).rest_row())
        return Response.json(rows)

    def _exchange_info(self, venue: Venue, request: Request) -> Response:
        now = self.clock.now_ms()
        shown: dict[str, str] = {}
        for symbol in venue.candles.symbols:
            status = venue.status(symbol, now)
            if status is not None:
                shown[symbol] = status
        if "symbol" in request.query:
            wanted = [request.query["symbol"]]
        elif "symbols" in request.query:
            try:
                wanted = msgspec.json.decode(request.query["symbols"], type=list[str])
            except msgspec.DecodeError:
                return api_error(-1100, "Illegal characters found in parameter 'symbols'.")
        else:
            wanted = list(shown)
        if any(s not in shown for s in wanted):
            return api_error(-1121, "Invalid symbol.")
        body = exchange_info(
            venue.name,
            {s: shown[s] for s in wanted},
            now,
            venue.weight_limit,
            self.config.weight_window,
        )
        return Response.json(body)
