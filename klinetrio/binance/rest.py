"""Binance's REST API (klines, aggTrades, exchangeInfo, time) of one market, weight-aware, for
Trio.

One client talks to one market (``binance.markets``): spot's ``/api/v3/...``, USD-M's
``/fapi/v1/...`` or COIN-M's ``/dapi/v1/...``, each with its own weights, page size and weight
budget, because Binance meters each market's host separately.

A thin Trio shell over :mod:`klinetrio.core.weights`: every request first reserves its
weight in one budget shared by every task using the client, and every response brings the
budget in step with the server's ``X-MBX-USED-WEIGHT-1M``. Reservations queue on a fair
``trio.Lock`` that the waiting task holds while it sleeps, so tasks go out in arrival order and
a 418 ban recorded by any task holds back all of them: once banned, Binance only lengthens the
ban for every further request, so nothing may be sent until it passes.

Faults, and what happens to them (see :mod:`klinetrio.errors`):

- 429 (``RateLimited``) and 418 (``IpBanned``) are handled inside: wait ``Retry-After`` (every
  task waits), run at a reduced rate for a while, retry. The caller's deadline bounds the wait.
- 5xx, timeouts and connection errors (``ExchangeUnavailable``) are retried with capped,
  jittered backoff up to ``max_attempts`` attempts, then raised.
- Anything else the exchange says is final: ``UnknownSymbol`` for code -1121, ``ExchangeError``
  with Binance's message otherwise, and for a body that does not decode.

The ``httpx.AsyncClient`` is injected (tests swap its transport) and owned by whoever built it,
usually with ``make_http_client`` (``binance.rest_http``, beside the helpers that read each
answer); its timeouts bound each attempt. Our own methods take no timeouts: callers use
``trio.fail_after``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import httpx
import msgspec
import trio
from loguru import logger

from klinetrio.binance.markets import SPOT, Market
from klinetrio.binance.rest_http import api_error, ban_duration, decode_body, header_int
from klinetrio.binance.wire import (
    ExchangeInfo,
    OpenInterestRow,
    RatioRow,
    RestKline,
    exchange_info_decoder,
    open_interest_rows_decoder,
    ratio_rows_decoder,
    rest_klines_decoder,
    server_time_decoder,
)
from klinetrio.binance.wire_kinds import RestAggTrade, rest_agg_trades_decoder
from klinetrio.core.backoff import Backoff
from klinetrio.core.intervals import Interval
from klinetrio.core.models import format_ms
from klinetrio.core.weights import (
    DEFAULT_RATE_LIMITED_WAIT,
    USED_WEIGHT_HEADER,
    WeightBudget,
    parse_retry_after,
    request_weight_limit,
)
from klinetrio.errors import (
    ExchangeError,
    ExchangeUnavailable,
    IpBanned,
    RateLimited,
    SettingsError,
)

# Spot's request weights (klines: 2 for any limit since 2023); other markets: see ``markets``.
KLINES_WEIGHT = SPOT.klines_weight(SPOT.kline_page)
EXCHANGE_INFO_WEIGHT = SPOT.exchange_info_weight
SERVER_TIME_WEIGHT = SPOT.server_time_weight
MAX_KLINES_LIMIT = SPOT.kline_page
AGG_TRADES_PAGE = 1000  # the most aggTrades one request may ask for, on every market
# With both startTime and endTime, Binance allows at most an hour between them.
AGG_TRADES_WINDOW_MS = 3_600_000
# /futures/data/*: 1000 requests per 5 minutes per IP, beside the request weight.
FUTURES_DATA_REQUESTS = 1000
FUTURES_DATA_WINDOW_S = 300.0

OnPage = Callable[[list[RestKline]], Awaitable[None]]


class RestStatistics(msgspec.Struct, frozen=True):
    """Counters of one :class:`RestClient`, for ``/metrics``."""

    requests: int
    """HTTP requests sent (every attempt counts)."""
    weight_used: int
    """Request weight of those requests, by Binance's table."""
    rate_limited: int
    """HTTP 429 answers."""
    banned: int
    """HTTP 418 answers."""
    retries: int
    """Attempts repeated after a 429, a 418 or a transient fault."""
    server_used_weight: int
    """The last ``X-MBX-USED-WEIGHT-1M`` the server reported."""
    weight_limit: int
    """The exchange's request-weight limit per window, as adopted."""
    kline_requests: int = 0
    """Of ``requests``, those for klines (every attempt counts)."""


@dataclass(slots=True)
class _Counters:
    requests: int = 0
    kline_requests: int = 0
    weight_used: int = 0
    rate_limited: int = 0
    banned: int = 0
    retries: int = 0
    server_used_weight: int = 0


class RestClient:
    """Binance's market-data REST endpoints of one market over an injected ``httpx.AsyncClient``.

    One instance is shared by every task that talks to one market: they share its weight
    budget. ``base_url`` is e.g. ``https://api.binance.com`` or a simulator's
    ``http://127.0.0.1:9650``; the market's paths (``/api/v3/...``) are appended.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        *,
        market: Market = SPOT,
        budget: WeightBudget | None = None,
        max_attempts: int = 5,
        backoff_initial: float = 0.5,
        backoff_maximum: float = 30.0,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._http = http
        self._base_url = base_url.rstrip("/")
        self.market = market
        self._budget = (
            budget if budget is not None else WeightBudget(limit=market.default_weight_limit)
        )
        self._futures_data_budget = WeightBudget(
            limit=FUTURES_DATA_REQUESTS, window=FUTURES_DATA_WINDOW_S
        )
        self._max_attempts = max_attempts
        self._backoff_initial = backoff_initial
        self._backoff_maximum = backoff_maximum
        self._lock = trio.Lock()
        self._counters = _Counters()

    @property
    def page_limit(self) -> int:
        """The most candles one klines request may ask for on this market."""
        return self.market.kline_page

    def statistics(self) -> RestStatistics:
        c = self._counters
        return RestStatistics(
            requests=c.requests,
            weight_used=c.weight_used,
            rate_limited=c.rate_limited,
            banned=c.banned,
            retries=c.retries,
            server_used_weight=c.server_used_weight,
            weight_limit=self._budget.limit,
            kline_requests=c.kline_requests,
        )

    async def server_time(self) -> int:
        """The exchange's clock in epoch milliseconds: klinetrio's idea of "now"."""
        path = self.market.time_path
        body = await self._get(path, {}, self.market.server_time_weight)
        return decode_body(server_time_decoder, body, path).serverTime

    async def exchange_info(self, symbols: Sequence[str] | None = None) -> ExchangeInfo:
        """Exchange information, for all symbols or only ``symbols`` (spot only: the futures
        markets always answer with every symbol, for a weight of 1).

        Also adopts the announced ``REQUEST_WEIGHT`` limit into the shared budget.
        """
        market = self.market
        params: dict[str, str] = {}
        names = [s.upper() for s in symbols or ()] if market.name == "spot" else []
        if names:
            params["symbols"] = msgspec.json.encode(names).decode()
        path = market.exchange_info_path
        body = await self._get(path, params, market.exchange_info_weight, symbols=names)
        info = decode_body(exchange_info_decoder, body, path)
        announced = request_weight_limit(info.rateLimits)
        if announced is not None and announced != (self._budget.limit, self._budget.window):
            limit, window = announced
            self._budget.adopt_limit(limit, window)
            logger.info(
                "REST weight limit of {market} {limit} per {window:.0f} s",
                market=market.title,
                limit=limit,
                window=window,
            )
        return info

    async def klines(
        self,
        symbol: str,
        interval: str,
        *,
        start_ms: int,
        end_ms: int | None = None,
        limit: int | None = None,
    ) -> list[RestKline]:
        """One page: up to ``limit`` candles (default: the market's page, 1000 or 1500) opening
        in ``[start_ms, end_ms]`` (both inclusive, as Binance has it), oldest first.

        The last row may be a candle still in progress; see :func:`closed_only`.
        """
        market = self.market
        limit = market.kline_page if limit is None else limit
        if not 1 <= limit <= market.kline_page:
            raise ValueError(f"limit must be within 1..{market.kline_page}, not {limit}")
        name = symbol.upper()
        params = {
            "symbol": name,
            "interval": interval,
            "startTime": str(start_ms),
            "limit": str(limit),
        }
        if end_ms is not None:
            params["endTime"] = str(end_ms)
        path = market.klines_path
        body = await self._get(path, params, market.klines_weight(limit), symbols=[name])
        return decode_body(rest_klines_decoder, body, path)

    async def agg_trades(
        self,
        symbol: str,
        *,
        from_id: int | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = AGG_TRADES_PAGE,
    ) -> list[RestAggTrade]:
        """One page of aggregate trades, oldest first: up to ``limit`` (at most 1000) with
        ``agg_id >= from_id``, or with times in ``[start_ms, end_ms]`` (both inclusive, at most
        an hour apart, as Binance requires), or the most recent ones when neither is given.

        Costs the market's aggTrades weight (4 on spot, 20 on futures) from the shared budget.
        """
        if not 1 <= limit <= AGG_TRADES_PAGE:
            raise ValueError(f"limit must be within 1..{AGG_TRADES_PAGE}, not {limit}")
        if from_id is not None and (start_ms is not None or end_ms is not None):
            raise ValueError("ask aggTrades by from_id or by time, not both")
        if start_ms is not None and end_ms is not None:
            if end_ms < start_ms:
                raise ValueError("end_ms is before start_ms")
            if end_ms - start_ms > AGG_TRADES_WINDOW_MS:
                raise ValueError("start_ms and end_ms may be at most an hour apart")
        name = symbol.upper()
        params = {"symbol": name, "limit": str(limit)}
        if from_id is not None:
            params["fromId"] = str(from_id)
        if start_ms is not None:
            params["startTime"] = str(start_ms)
        if end_ms is not None:
            params["endTime"] = str(end_ms)
        market = self.market
        path = market.agg_trades_path
        body = await self._get(path, params, market.agg_trades_weight, symbols=[name])
        return decode_body(rest_agg_trades_decoder, body, path)

    async def futures_data(
        self, endpoint: str, params: Mapping[str, str]
    ) -> list[RatioRow] | list[OpenInterestRow]:
        """One page of ``/futures/data/{endpoint}`` (USD-M and COIN-M only).

        These endpoints spend no request weight but have their own limit per IP (1000 requests
        per 5 minutes): a budget of their own, so statistics never starve the klines.
        """
        if not self.market.has_futures_data:
            raise ValueError(f"{self.market.title} has no /futures/data statistics")
        path = f"/futures/data/{endpoint}"
        body = await self._get(path, params, 1, budget=self._futures_data_budget)
        if endpoint == "openInterestHist":
            return decode_body(open_interest_rows_decoder, body, path)
        return decode_body(ratio_rows_decoder, body, path)

    async def klines_range(
        self,
        symbol: str,
        interval: str,
        *,
        start_ms: int,
        end_ms: int,
        on_page: OnPage,
        limit: int | None = None,
    ) -> int:
        """Fetch every candle opening in ``[start_ms, end_ms)`` page by page, oldest first.

        Each non-empty page goes to ``await on_page(rows)`` before the next is requested, so a
        slow consumer slows the fetch (backpressure) and a cancelled one stops it between
        pages. Returns the number of rows handed over. Candles the exchange does not have
        (a trading halt) are simply absent; the last row may still be in progress.
        """
        step = Interval.parse(interval)
        limit = self.market.kline_page if limit is None else limit
        total = 0
        next_start = start_ms
        while next_start < end_ms:
            rows = await self.klines(
                symbol, interval, start_ms=next_start, end_ms=end_ms - 1, limit=limit
            )
            full = len(rows) >= limit
            if rows and rows[-1].open_time >= end_ms:  # defensive: Binance never sends these
                rows = [row for row in rows if row.open_time < end_ms]
            if not rows:
                break
            last_open = rows[-1].open_time
            if last_open < next_start:  # would never advance
                raise ExchangeError(
                    f"exchange returned {symbol} {interval} klines before the requested"
                    f" start {format_ms(next_start)}"
                )
            total += len(rows)
            await on_page(rows)
            if not full or step.next_open(last_open) >= end_ms:
                break
            next_start = last_open + 1
        return total

    async def _get(
        self,
        path: str,
        params: Mapping[str, str],
        weight: int,
        *,
        symbols: Sequence[str] = (),
        budget: WeightBudget | None = None,
    ) -> bytes:
        """GET ``path`` within ``budget`` (default: the request weight budget), with retries."""
        budget = self._budget if budget is None else budget
        backoff = Backoff(initial=self._backoff_initial, maximum=self._backoff_maximum)
        attempt = 1
        while True:
            await self._reserve(weight, budget)
            if path == self.market.klines_path:
                self._counters.kline_requests += 1
            try:
                return await self._attempt(path, params, weight, symbols, budget)
            except (RateLimited, IpBanned):
                # The budget now holds every task back until Retry-After passes.
                pass
            except ExchangeUnavailable as exc:
                if attempt >= self._max_attempts:
                    raise
                delay = backoff.next_delay()
                logger.warning(
                    "REST {path} failed ({error}); attempt {attempt} of {attempts},"
                    " retrying in {delay:.1f} s",
                    path=path,
                    error=str(exc),
                    attempt=attempt,
                    attempts=self._max_attempts,
                    delay=delay,
                )
                attempt += 1
                await trio.sleep(delay)
            self._counters.retries += 1

    async def _reserve(self, weight: int, budget: WeightBudget) -> None:
        # Holding the lock while sleeping makes the queue fair (trio.Lock is FIFO), and makes a
        # ban observed meanwhile by another task hold back every waiter.
        async with self._lock:
            while True:
                wait = budget.reserve(weight, trio.current_time())
                if wait <= 0:
                    break
                logger.debug(
                    "REST waiting {wait:.3f} s for {weight} request weight",
                    wait=wait,
                    weight=weight,
                )
                await trio.sleep(wait)
        self._counters.requests += 1
        self._counters.weight_used += weight

    async def _attempt(
        self,
        path: str,
        params: Mapping[str, str],
        weight: int,
        symbols: Sequence[str],
        budget: WeightBudget,
    ) -> bytes:
        url = self._base_url + path
        try:
            response = await self._http.get(url, params=params)
        except httpx.TransportError as exc:
            raise ExchangeUnavailable(
                f"cannot reach {self._base_url}: {type(exc).__name__}: {exc}"
            ) from exc
        except httpx.HTTPError as exc:
            raise ExchangeError(f"request to {url} failed: {exc}") from exc
        now = trio.current_time()
        status = response.status_code
        used = header_int(response, USED_WEIGHT_HEADER)
        if used is not None:
            self._counters.server_used_weight = used
            self._budget.observe_used(used, now)
        logger.debug(
            "REST GET {path} {params} -> {status}, weight {weight}, used {used}",
            path=path,
            params=dict(params),
            status=status,
            weight=weight,
            used=used,
        )
        if status == 200:
            return response.content
        if status == 429:
            self._counters.rate_limited += 1
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            wait = DEFAULT_RATE_LIMITED_WAIT if retry_after is None else retry_after
            budget.rate_limited(wait, now)
            logger.warning(
                "REST rate limited by exchange (used weight {used}); pausing all REST work"
                " for {wait:.0f} s and slowing down",
                used=used,
                wait=wait,
            )
            raise RateLimited(f"rate limited by {self._base_url}", retry_after=wait)
        if status == 418:
            self._counters.banned += 1
            wait, until = ban_duration(response)
            if budget.banned(wait, now):
                logger.error(
                    "REST banned by exchange until {until}, pausing all REST work for {wait:.0f} s",
                    until=until,
                    wait=wait,
                )
            raise IpBanned(f"IP banned by {self._base_url} until {until}", retry_after=wait)
        if status >= 500:
            raise ExchangeUnavailable(f"{self._base_url}{path} answered HTTP {status}")
        raise api_error(response, path, symbols)


async def check_symbols(rest: RestClient, symbols: Sequence[str]) -> None:
    """Fail with one clear line if the market does not list every symbol; warn of halted ones.

    An unreachable exchange raises ``ExchangeUnavailable`` for the caller to judge.
    """
    names = [s.upper() for s in symbols]
    try:
        info = await rest.exchange_info(names if len(names) <= 100 else None)
    except ExchangeUnavailable:
        raise
    except ExchangeError as exc:
        raise SettingsError(str(exc)) from exc
    listed = {s.symbol: s.state for s in info.symbols}
    unknown = [s for s in names if s not in listed]
    if unknown:
        where = "the exchange" if rest.market.name == "spot" else rest.market.title
        raise SettingsError(f"unknown symbol(s) on {where}: {', '.join(unknown)}")
    halted = [s for s in names if listed[s] != "TRADING"]
    if halted:
        logger.warning("not trading now: {symbols}", symbols=", ".join(halted))


def closed_only(rows: Sequence[RestKline], now_ms: int) -> list[RestKline]:
    """The rows whose candle has closed by ``now_ms`` (the exchange's time, in ms).

    REST serves the candle in progress as the last row; only closed candles are final.
    """
    return [row for row in rows if row.close_time < now_ms]
