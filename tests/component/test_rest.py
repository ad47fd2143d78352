"""RestClient against a fake Binance behind ``httpx.MockTransport``, on Trio's autojump clock.

The fake serves real Binance bodies from ``../shared/data/rest`` (sliced by ``startTime``,
``endTime`` and ``limit`` as Binance does), meters weight per fixed minute of the mock clock as
Binance does, answers 429 when the budget is exceeded, and counts every request that arrives
while a 429's Retry-After or a 418 ban is known to the client: those would get a real IP banned
(for longer), so every test asserts there are none.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing
from loguru import logger

from klinetrio.binance.rest import RestClient, closed_only
from klinetrio.binance.rest_http import make_http_client
from klinetrio.binance.wire import RestKline
from klinetrio.core.weights import WeightBudget
from klinetrio.errors import ExchangeError, ExchangeUnavailable, UnknownSymbol

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
REST = DATA / "rest"
BASE_URL = "https://api.binance.com"
HOUR_MS = 3_600_000
MARCH_2023 = 1677628800000  # 2023-03-01T00:00Z
APRIL_2023 = 1680307200000
DEC_2024 = 1733011200000  # 2024-12-01T00:00Z; December 2024 and January 2025 are contiguous
FEB_2025 = 1738368000000
MISSING_HOUR = 1679662800000  # 2023-03-24T13:00Z: a trading halt, no candle exists
WEIGHTS = {"/api/v3/klines": 2, "/api/v3/exchangeInfo": 20, "/api/v3/time": 1}
DEADLINE = 24 * 3600.0  # virtual seconds: the autojump clock makes long waits instant

pytestmark = pytest.mark.shared_data

Row = list[object]


def _require_data() -> None:
    if not REST.is_dir():
        pytest.skip(f"shared test data not found at {DATA}")


def _load(name: str) -> list[Row]:
    rows: list[Row] = json.loads((REST / name).read_text())
    return rows


def _error_bodies() -> list[bytes]:
    lines = (REST / "error_bodies.txt").read_text().splitlines()
    return [line.encode() for line in lines if line.startswith("{")]


def _error_body(code: int, contains: str = "") -> bytes:
    for body in _error_bodies():
        error = json.loads(body)
        if error["code"] == code and contains in error["msg"]:
            return body
    raise LookupError(code)


@dataclass
class Seen:
    at: float
    path: str
    params: dict[str, str]
    weight: int


@dataclass
class Block:
    """A 429 pause or a 418 ban, as the fake server enforces it."""

    status: int
    until: float
    known_at: float  # when the client received the answer that announced it
    body: bytes


@dataclass
class FakeBinance:
    """Just enough of Binance's REST API: klines, exchangeInfo, time, weight and bans."""

    series: dict[tuple[str, str], list[Row]] = field(default_factory=dict)
    weight_limit: int = 6000
    latency: float = 0.0
    server_time_ms: int = 1634944350000
    exchange_info_body: bytes = b'{"timezone":"UTC","serverTime":0,"rateLimits":[],"symbols":[]}'
    used_by_others: dict[int, int] = field(default_factory=dict)
    script: deque[tuple[int, dict[str, str], bytes] | Exception] = field(default_factory=deque)
    seen: list[Seen] = field(default_factory=list)
    used: dict[int, int] = field(default_factory=dict)
    rate_limited: int = 0
    violations: int = 0
    block: Block | None = None

    async def handler(self, request: httpx.Request) -> httpx.Response:
        now = trio.current_time()
        path = request.url.path
        params = dict(request.url.params)
        weight = WEIGHTS[path]
        minute = math.floor(now / 60)
        used = self.used.get(minute, self.used_by_others.get(minute, 0)) + weight
        self.used[minute] = used
        self.seen.append(Seen(now, path, params, weight))
        response = self._respond(request, now, path, params, used)
        await trio.sleep(self.latency)
        return response

    def window_weights(self) -> dict[int, int]:
        """Weight our client sent per fixed minute (without others' weight)."""
        totals: dict[int, int] = {}
        for seen in self.seen:
            minute = math.floor(seen.at / 60)
            totals[minute] = totals.get(minute, 0) + seen.weight
        return totals

    def _respond(
        self,
        request: httpx.Request,
        now: float,
        path: str,
        params: dict[str, str],
        used: int,
    ) -> httpx.Response:
        headers = {"X-MBX-USED-WEIGHT-1M": str(used)}
        block = self.block
        if block is not None and now < block.until:
            if now >= block.known_at:
                self.violations += 1
            retry = {"Retry-After": str(math.ceil(block.until - now))}
            return httpx.Response(block.status, headers=headers | retry, content=block.body)
        if self.script:
            scripted = self.script.popleft()
            if isinstance(scripted, Exception):
                raise scripted
            status, extra, body = scripted
            if status in (418, 429):
                until = now + float(extra["Retry-After"])
                self.block = Block(status, until, now + self.latency, body)
            return httpx.Response(status, headers=headers | extra, content=body)
        if used > self.weight_limit:
            self.rate_limited += 1
            retry_after = str(math.ceil((math.floor(now / 60) + 1) * 60 - now))
            self.block = Block(429, now + float(retry_after), now + self.latency, b"")
            return httpx.Response(
                429, headers=headers | {"Retry-After": retry_after}, content=_error_body(-1003)
            )
        if path == "/api/v3/time":
            return httpx.Response(200, headers=headers, json={"serverTime": self.server_time_ms})
        if path == "/api/v3/exchangeInfo":
            return httpx.Response(200, headers=headers, content=self.exchange_info_body)
        key = (params["symbol"], params["interval"])
        if key not in self.series:
            return httpx.Response(400, headers=headers, content=_error_body(-1121))
        start = int(params.get("startTime", 0))
        end = int(params.get("endTime", 2**62))
        limit = int(params.get("limit", 500))
        rows = [row for row in self.series[key] if start <= _open_time(row) <= end][:limit]
        return httpx.Response(200, headers=headers, json=rows)


def _open_time(row: Row) -> int:
    value = row[0]
    assert isinstance(value, int)
    return value


@pytest.fixture
def fake() -> FakeBinance:
    _require_data()
    hours = sorted(
        _load("BTCUSDT_1h_2023-03-01.json")
        + _load("BTCUSDT_1h_2024-12-01.json")
        + _load("BTCUSDT_1h_2025-01-01.json"),
        key=_open_time,
    )
    return FakeBinance(
        series={
            ("BTCUSDT", "1h"): hours,
            ("BTCUSDT", "1m"): _load("BTCUSDT_1m_2021-10-22_with-open-candle.json"),
        }
    )


@pytest.fixture
async def http(fake: FakeBinance) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handler)) as client:
        yield client


@pytest.fixture
def error_logs() -> Iterator[list[str]]:
    messages: list[str] = []
    logger.enable("klinetrio")
    sink = logger.add(lambda m: messages.append(str(m.record["message"])), level="ERROR")
    yield messages
    logger.remove(sink)
    logger.disable("klinetrio")


class Collector:
    def __init__(self) -> None:
        self.pages: list[list[RestKline]] = []

    async def __call__(self, rows: list[RestKline]) -> None:
        self.pages.append(rows)

    @property
    def rows(self) -> list[RestKline]:
        return [row for page in self.pages for row in page]


def _klines_requests(fake: FakeBinance) -> list[Seen]:
    return [seen for seen in fake.seen if seen.path == "/api/v3/klines"]


# --- plain calls ---------------------------------------------------------------------------


async def test_server_time(
    autojump_clock: trio.testing.MockClock, fake: FakeBinance, http: httpx.AsyncClient
) -> None:
    with trio.fail_after(DEADLINE):
        rest = RestClient(http, BASE_URL)
        assert await rest.server_time() == 1634944350000
        stats = rest.statistics()
        assert (stats.requests, stats.weight_used, stats.server_used_weight) == (1, 1, 1)


async def test_exchange_info_decodes_the_real_body_and_adopts_its_weight_limit(
    autojump_clock: trio.testing.MockClock, fake: FakeBinance, http: httpx.AsyncClient
) -> None:
    fake.exchange_info_body = (REST / "exchangeInfo_2021-10-11.json").read_bytes()
    with trio.fail_after(DEADLINE):
        rest = RestClient(http, BASE_URL)
        assert rest.statistics().weight_limit == 6000
        info = await rest.exchange_info()
        assert len(info.symbols) == 1695
        assert sum(1 for s in info.symbols if s.status == "BREAK") == 433
        assert rest.statistics().weight_limit == 1200  # the limit of 2021
        assert rest.statistics().weight_used == 20


async def test_exchange_info_for_some_symbols_sends_a_json_list(
    autojump_clock: trio.testing.MockClock, fake: FakeBinance, http: httpx.AsyncClient
) -> None:
    with trio.fail_after(DEADLINE):
        await RestClient(http, BASE_URL).exchange_info(["btcusdt", "ETHUSDT"])
        assert fake.seen[-1].params == {"symbols": '["BTCUSDT","ETHUSDT"]'}


async def test_one_page_is_sliced_by_start_time_and_limit(
    autojump_clock: trio.testing.MockClock, fake: FakeBinance, http: httpx.AsyncClient
) -> None:
    with trio.fail_after(DEADLINE):
        rows = await RestClient(http, BASE_URL).klines(
            "BTCUSDT", "1h", start_ms=MARCH_2023 + 1, limit=5
        )
        assert [r.open_time for r in rows] == [MARCH_2023 + i * HOUR_MS for i in range(1, 6)]
        first = _load("BTCUSDT_1h_2023-03-01.json")[1]
        assert rows[0].open == first[1]  # the exact decimal string, "23101.00000000"
        assert rows[0].close_time == first[6]
        assert fake.seen[-1].params == {
            "symbol": "BTCUSDT",
            "interval": "1h",
            "startTime": str(MARCH_2023 + 1),
            "limit": "5",
        }


# --- pagination ----------------------------------------------------------------------------


@pytest.mark.parametrize(("limit", "requests"), [(1000, 1), (100, 8)])
async def test_march_2023_has_743_rows_and_no_13h_on_the_24th(
    autojump_clock: trio.testing.MockClock,
    fake: FakeBinance,
    http: httpx.AsyncClient,
    limit: int,
    requests: int,
) -> None:
    with trio.fail_after(DEADLINE):
        pages = Collector()
        rest = RestClient(http, BASE_URL)
        total = await rest.klines_range(
            "BTCUSDT", "1h", start_ms=MARCH_2023, end_ms=APRIL_2023, on_page=pages, limit=limit
        )
        expected = [_open_time(r) for r in _load("BTCUSDT_1h_2023-03-01.json")]
        assert total == 743
        assert [r.open_time for r in pages.rows] == expected
        assert MISSING_HOUR not in {r.open_time for r in pages.rows}
        assert len(_klines_requests(fake)) == requests
        assert [len(p) for p in pages.pages][-1] == 743 % limit


async def test_a_range_of_exactly_one_full_page_needs_one_request(
    autojump_clock: trio.testing.MockClock, fake: FakeBinance, http: httpx.AsyncClient
) -> None:
    with trio.fail_after(DEADLINE):
        pages = Collector()
        end = DEC_2024 + 1000 * HOUR_MS
        rest = RestClient(http, BASE_URL)
        assert await rest.klines_range(
            "BTCUSDT", "1h", start_ms=DEC_2024, end_ms=end, on_page=pages
        )
        assert [len(p) for p in pages.pages] == [1000]
        assert pages.rows[-1].open_time == end - HOUR_MS
        assert len(_klines_requests(fake)) == 1
        await rest.server_time()
        stats = rest.statistics()
        assert (stats.requests, stats.kline_requests) == (2, 1)


async def test_two_months_come_as_a_full_page_and_a_short_one(
    autojump_clock: trio.testing.MockClock, fake: FakeBinance, http: httpx.AsyncClient
) -> None:
    with trio.fail_after(DEADLINE):
        pages = Collector()
        rest = RestClient(http, BASE_URL)
        total = await rest.klines_range(
            "BTCUSDT", "1h", start_ms=DEC_2024, end_ms=FEB_2025, on_page=pages
        )
        assert total == 1488
        assert [len(p) for p in pages.pages] == [1000, 488]
        requests = _klines_requests(fake)
        # The second page starts just after the last open time of the first.
        assert requests[1].params["startTime"] == str(pages.pages[0][-1].open_time + 1)
        assert requests[1].params["endTime"] == str(FEB_2025 - 1)
        times = [r.open_time for r in pages.rows]
        assert times == list(range(DEC_2024, FEB_2025, HOUR_MS))


async def test_exact_multiple_of_the_page_size_with_an_open_end_stops_on_an_empty_page(
    autojump_clock: trio.testing.MockClock, fake: FakeBinance, http: httpx.AsyncClient
) -> None:
    with trio.fail_after(DEADLINE):
        pages = Collector()
        rest = RestClient(http, BASE_URL)
        total = await rest.klines_range(
            "BTCUSDT", "1h", start_ms=DEC_2024, end_ms=FEB_2025 + 100 * HOUR_MS,
            on_page=pages, limit=744,
        )  # fmt: skip
        assert total == 1488
        assert [len(p) for p in pages.pages] == [744, 744]
        assert len(_klines_requests(fake)) == 3  # the third came back empty


async def test_range_ending_mid_page_excludes_its_end(
    autojump_clock: trio.testing.MockClock, fake: FakeBinance, http: httpx.AsyncClient
) -> None:
    with trio.fail_after(DEADLINE):
        pages = Collector()
        start = DEC_2024 + 3 * HOUR_MS
        end = DEC_2024 + 503 * HOUR_MS  # a candle opens exactly here: it is not included
        rest = RestClient(http, BASE_URL)
        total = await rest.klines_range("BTCUSDT", "1h", start_ms=start, end_ms=end, on_page=pages)
        assert total == 500
        assert pages.rows[0].open_time == start
        assert pages.rows[-1].open_time == end - HOUR_MS
        assert _klines_requests(fake)[0].params["endTime"] == str(end - 1)


async def test_unaligned_start_begins_at_the_next_candle(
    autojump_clock: trio.testing.MockClock, fake: FakeBinance, http: httpx.AsyncClient
) -> None:
    with trio.fail_after(DEADLINE):
        pages = Collector()
        rest = RestClient(http, BASE_URL)
        await rest.klines_range(
            "BTCUSDT", "1h", start_ms=DEC_2024 + 1, end_ms=DEC_2024 + 3 * HOUR_MS, on_page=pages
        )
        assert [r.open_time for r in pages.rows] == [DEC_2024 + HOUR_MS, DEC_2024 + 2 * HOUR_MS]


async def test_empty_range_sends_nothing(
    autojump_clock: trio.testing.MockClock, fake: FakeBinance, http: httpx.AsyncClient
) -> None:
    with trio.fail_after(DEADLINE):
        pages = Collector()
        rest = RestClient(http, BASE_URL)
        assert await rest.klines_range(
            "BTCUSDT", "1h", start_ms=DEC_2024, end_ms=DEC_2024, on_page=pages
        ) == 0  # fmt: skip
        assert fake.seen == []
        assert pages.pages == []


async def test_range_without_candles_makes_one_request_and_no_page(
    autojump_clock: trio.testing.MockClock, fake: FakeBinance, http: httpx.AsyncClient
) -> None:
    with trio.fail_after(DEADLINE):
        pages = Collector()
        rest = RestClient(http, BASE_URL)
        before_listing = 1_000_000_000_000  # 2001
        assert await rest.klines_range(
            "BTCUSDT", "1h", start_ms=before_listing, end_ms=before_listing + 10 * HOUR_MS,
            on_page=pages,
        ) == 0  # fmt: skip
        assert len(fake.seen) == 1
        assert pages.pages == []


async def test_the_candle_in_progress_is_returned_and_closed_only_drops_it(
    autojump_clock: trio.testing.MockClock, fake: FakeBinance, http: httpx.AsyncClient
) -> None:
    with trio.fail_after(DEADLINE):
        rest = RestClient(http, BASE_URL)
        pages = Collector()
        await rest.klines_range(
            "BTCUSDT", "1m", start_ms=1634943780000, end_ms=1634944380000, on_page=pages
        )
        assert len(pages.rows) == 10
        now_ms = await rest.server_time()  # 1634944350000: inside the last minute
        closed = closed_only(pages.rows, now_ms)
        assert closed == pages.rows[:9]
        assert pages.rows[-1].close_time == 1634944379999
        assert closed_only(pages.rows, 1634944380000) == pages.rows


# --- exchange errors -----------------------------------------------------------------------


async def test_unknown_symbol(
    autojump_clock: trio.testing.MockClock, fake: FakeBinance, http: httpx.AsyncClient
) -> None:
    with trio.fail_after(DEADLINE):
        rest = RestClient(http, BASE_URL)
        with pytest.raises(UnknownSymbol, match=r"^unknown symbol NOSUCHCOIN$"):
            await rest.klines("nosuchcoin", "1h", start_ms=0)
        assert len(fake.seen) == 1  # never retried


@pytest.mark.parametrize(
    "body",
    [
        b'{"code":-1120,"msg":"Invalid interval."}',
        b'{"code":-1100,"msg":"Illegal characters found in parameter \'symbol\'."}',
    ],
)
async def test_other_client_errors_carry_binances_message(
    autojump_clock: trio.testing.MockClock,
    fake: FakeBinance,
    http: httpx.AsyncClient,
    body: bytes,
) -> None:
    fake.script.append((400, {}, body))
    with trio.fail_after(DEADLINE):
        rest = RestClient(http, BASE_URL)
        with pytest.raises(ExchangeError, match=json.loads(body)["msg"][:16]) as info:
            await rest.klines("BTCUSDT", "1h", start_ms=0)
        assert type(info.value) is ExchangeError
        assert len(fake.seen) == 1


@pytest.mark.parametrize(
    "body",
    [b'[[1677628800000,"23141.57000000"', b'{"serverTime": 1}', b"<html>oops</html>"],
)
async def test_malformed_body_is_an_exchange_error(
    autojump_clock: trio.testing.MockClock,
    fake: FakeBinance,
    http: httpx.AsyncClient,
    body: bytes,
) -> None:
    fake.script.append((200, {}, body))
    with trio.fail_after(DEADLINE):
        rest = RestClient(http, BASE_URL)
        with pytest.raises(ExchangeError, match="malformed response from /api/v3/klines"):
            await rest.klines("BTCUSDT", "1h", start_ms=0)


# --- transient faults ----------------------------------------------------------------------


async def test_5xx_and_transport_errors_are_retried_with_backoff(
    autojump_clock: trio.testing.MockClock, fake: FakeBinance, http: httpx.AsyncClient
) -> None:
    request = httpx.Request("GET", BASE_URL)
    fake.script.extend(
        [
            (503, {}, b"Service Unavailable"),
            httpx.ConnectError("connection refused", request=request),
            httpx.ReadTimeout("timed out", request=request),
            (502, {}, b""),
        ]
    )
    with trio.fail_after(DEADLINE):
        rest = RestClient(http, BASE_URL, backoff_initial=1.0, backoff_maximum=4.0)
        rows = await rest.klines("BTCUSDT", "1h", start_ms=MARCH_2023, limit=3)
        assert len(rows) == 3
        stats = rest.statistics()
        assert (stats.requests, stats.retries) == (5, 4)
        # Jittered delays within [d/2, d] for d = 1, 2, 4, 4.
        assert 0.5 + 1 + 2 + 2 <= trio.current_time() <= 1 + 2 + 4 + 4


async def test_persistent_5xx_gives_up_after_max_attempts(
    autojump_clock: trio.testing.MockClock, fake: FakeBinance, http: httpx.AsyncClient
) -> None:
    fake.script.extend([(500, {}, b"")] * 10)
    with trio.fail_after(DEADLINE):
        rest = RestClient(http, BASE_URL, max_attempts=3)
        with pytest.raises(ExchangeUnavailable, match="HTTP 500") as info:
            await rest.server_time()
        assert len(fake.seen) == 3
        assert rest.statistics().retries == 2
        assert info.value.__cause__ is None


async def test_transport_error_is_translated_at_the_boundary(
    autojump_clock: trio.testing.MockClock, fake: FakeBinance, http: httpx.AsyncClient
) -> None:
    request = httpx.Request("GET", BASE_URL)
    fake.script.append(httpx.ConnectError("connection refused", request=request))
    with trio.fail_after(DEADLINE):
        rest = RestClient(http, BASE_URL, max_attempts=1)
        with pytest.raises(ExchangeUnavailable, match="ConnectError") as info:
            await rest.server_time()
        assert isinstance(info.value.__cause__, httpx.ConnectError)


# --- rate limits and bans ------------------------------------------------------------------


async def test_429_waits_retry_after_then_succeeds_and_slows_down(
    autojump_clock: trio.testing.MockClock, fake: FakeBinance, http: httpx.AsyncClient
) -> None:
    fake.script.append((429, {"Retry-After": "7"}, _error_body(-1003, "Too much")))
    with trio.fail_after(DEADLINE):
        budget = WeightBudget(limit=1200)
        rest = RestClient(http, BASE_URL, budget=budget)
        rows = await rest.klines("BTCUSDT", "1h", start_ms=MARCH_2023, limit=2)
        assert len(rows) == 2
        assert [s.at for s in fake.seen] == [0.0, 7.0]
        assert fake.violations == 0
        stats = rest.statistics()
        assert (stats.rate_limited, stats.retries, stats.requests) == (1, 1, 2)
        assert budget.usable(trio.current_time()) == 540  # halved for a while


async def test_418_pauses_every_task_until_the_ban_passes_and_logs_once(
    autojump_clock: trio.testing.MockClock,
    fake: FakeBinance,
    http: httpx.AsyncClient,
    error_logs: list[str],
) -> None:
    ban_body = _error_body(-1003, "1660090423228")
    fake.latency = 0.5
    fake.script.append((418, {"Retry-After": "120"}, ban_body))
    finished: dict[str, float] = {}

    async def fetch(name: str, delay: float) -> None:
        await trio.sleep(delay)
        await rest.klines("BTCUSDT", "1h", start_ms=MARCH_2023, limit=10)
        finished[name] = trio.current_time()

    with trio.fail_after(DEADLINE):
        rest = RestClient(http, BASE_URL)
        async with trio.open_nursery() as nursery:
            # a and b are in flight together when the ban starts; c and d come later.
            for name, delay in [("a", 0.0), ("b", 0.0), ("c", 1.0), ("d", 60.0)]:
                nursery.start_soon(fetch, name, delay)

        assert sorted(finished) == ["a", "b", "c", "d"]
        # The client learnt of the ban at 0.5 s; nothing was sent until it passed.
        assert fake.violations == 0
        after_ban = [s.at for s in fake.seen if s.at >= 0.5]
        assert len(after_ban) == 4
        assert min(after_ban) >= 120.5
        assert all(t >= 121.0 for t in finished.values())
        assert rest.statistics().banned == 2  # a and b both got 418
        assert error_logs == [
            "REST banned by exchange until 2022-08-10T00:13:43Z, pausing all REST work for 120 s"
        ]


async def test_server_weight_header_holds_back_requests_when_others_share_the_ip(
    autojump_clock: trio.testing.MockClock, fake: FakeBinance, http: httpx.AsyncClient
) -> None:
    fake.weight_limit = 1200
    fake.used_by_others = {0: 1000}  # another process already spent 1000 this minute
    with trio.fail_after(DEADLINE):
        rest = RestClient(http, BASE_URL, budget=WeightBudget(limit=1200))
        pages = Collector()
        await rest.klines_range(
            "BTCUSDT", "1h", start_ms=DEC_2024, end_ms=FEB_2025, on_page=pages, limit=10
        )
        assert len(pages.rows) == 1488
        assert fake.rate_limited == 0
        assert fake.violations == 0
        # After the first answer (1002 used) only 78 more weight fits under 90 % of 1200.
        first_minute = [s for s in fake.seen if s.at < 60]
        assert len(first_minute) == 40
        assert rest.statistics().server_used_weight > 0


async def test_a_burst_of_concurrent_range_fetches_never_exceeds_the_budget(
    autojump_clock: trio.testing.MockClock, fake: FakeBinance, http: httpx.AsyncClient
) -> None:
    fake.weight_limit = 1200
    fake.exchange_info_body = (REST / "exchangeInfo_2021-10-11.json").read_bytes()
    results: dict[int, list[int]] = {}

    async def fetch(task: int) -> None:
        pages = Collector()
        await rest.klines_range(
            "BTCUSDT", "1h", start_ms=DEC_2024, end_ms=FEB_2025, on_page=pages, limit=10
        )
        results[task] = [r.open_time for r in pages.rows]

    with trio.fail_after(DEADLINE):
        rest = RestClient(http, BASE_URL)  # starts at 6000 and learns 1200 from exchangeInfo
        await rest.exchange_info()
        async with trio.open_nursery() as nursery:
            for task in range(6):
                nursery.start_soon(fetch, task)

    expected = list(range(DEC_2024, FEB_2025, HOUR_MS))
    assert all(rows == expected for rows in results.values())
    assert len(results) == 6
    assert fake.rate_limited == 0
    assert fake.violations == 0
    assert max(fake.window_weights().values()) <= 1200
    # Our own accounting, over any sliding minute, stays within 90 % of the limit.
    times = [(s.at, s.weight) for s in fake.seen]
    for at, _ in times:
        assert sum(w for t, w in times if at <= t < at + 60) <= 1080
    stats = rest.statistics()
    assert stats.requests == 1 + 6 * 149
    assert stats.weight_used == 20 + 6 * 149 * 2
    assert trio.current_time() >= 60  # the burst had to be spread out


async def test_cancelling_a_range_fetch_between_pages_stops_it(
    autojump_clock: trio.testing.MockClock, fake: FakeBinance, http: httpx.AsyncClient
) -> None:
    pages: list[int] = []

    async def slow_consumer(rows: list[RestKline]) -> None:
        pages.append(len(rows))
        await trio.sleep(10)

    with trio.fail_after(DEADLINE):
        rest = RestClient(http, BASE_URL)
        with trio.move_on_after(25):
            await rest.klines_range(
                "BTCUSDT", "1h", start_ms=DEC_2024, end_ms=FEB_2025, on_page=slow_consumer,
                limit=100,
            )  # fmt: skip
        assert pages == [100, 100, 100]
        assert len(fake.seen) == 3


async def test_make_http_client_identifies_itself() -> None:
    with trio.fail_after(10):
        async with make_http_client() as client:
            assert client.headers["User-Agent"].startswith("klinetrio/")
            assert client.timeout.connect == 10.0
