"""The read API in process (httpx over ASGI) on a real PostgreSQL filled with real candles:
Binance's bytes from ``/api/v3/klines``, ``/api/candles`` equal to the table with ETags and
304s, metadata and coverage, and the errors."""

from __future__ import annotations

import csv
import io
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import psycopg
import pytest
import trio
from support.vision import HALT, compact, vision_csv

from klinetrio.api import build_app
from klinetrio.core.intervals import HOUR_MS
from klinetrio.core.models import StreamKey
from klinetrio.store.coverage_monitor import CoverageMonitor
from klinetrio.store.database import Database
from klinetrio.store.reader import StoreReader

DEC_2024 = 1733011200000  # 2024-12-01 00:00 UTC
JAN_2025 = 1735689600000


def no_statistics() -> Any:
    raise AssertionError("the read API needs no statistics")


@pytest.fixture
def filled(database_url: str, shared_data: Path) -> str:
    db = Database(database_url)
    db.migrate()
    spot = shared_data / "vision" / "spot"
    months = [f"2023-0{m}" for m in range(1, 6)] + ["2024-12", "2025-01"]
    db.write([c for m in months for c in vision_csv(spot / f"BTCUSDT-1h-{m}.csv")])
    db.add_hole(StreamKey("BTCUSDT", "1h"), HALT, HALT + HOUR_MS)
    db.close()
    return database_url


@pytest.fixture
async def client(filled: str) -> AsyncIterator[httpx.AsyncClient]:
    reader = StoreReader(filled)
    app = build_app(no_statistics, store=reader, now_ms=lambda: 1764633600000)  # 2025-12-02
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://klinetrio") as http:
        yield http
    await reader.aclose()


def rest_rows(shared_data: Path, *names: str) -> list[str]:
    return [row for name in names for row in compact(shared_data / "rest" / name)]


def body_of(rows: list[str]) -> bytes:
    return ("[" + ",".join(rows) + "]").encode()


async def test_klines_are_binance_bytes_across_the_ms_to_us_switch(
    client: httpx.AsyncClient, shared_data: Path
) -> None:
    with trio.fail_after(30):
        rows = rest_rows(shared_data, "BTCUSDT_1h_2024-12-01.json", "BTCUSDT_1h_2025-01-01.json")
        assert len(rows) == 744 * 2
        cases = {
            # neither: the newest 500
            "symbol=BTCUSDT&interval=1h": rows[-500:],
            # startTime only: the first `limit` from it, across the switch
            f"symbol=BTCUSDT&interval=1h&startTime={DEC_2024 + 600 * HOUR_MS}&limit=1000": rows[
                600:1488
            ],
            f"symbol=BTCUSDT&interval=1h&startTime={DEC_2024 + 1}&limit=1": rows[1:2],
            # endTime only: the newest `limit` up to it (inclusive)
            f"symbol=BTCUSDT&interval=1h&endTime={JAN_2025}&limit=3": rows[742:745],
            # both: the first `limit` in [startTime, endTime]
            f"symbol=BTCUSDT&interval=1h&startTime={JAN_2025 - 2 * HOUR_MS}"
            f"&endTime={JAN_2025 + 2 * HOUR_MS}": rows[742:747],
            f"symbol=BTCUSDT&interval=1h&startTime={DEC_2024}&endTime={JAN_2025}&limit=1000": rows[
                :745
            ],
        }
        for query, expected in cases.items():
            response = await client.get(f"/api/v3/klines?{query}")
            assert response.status_code == 200, query
            assert response.content == body_of(expected), query


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v3/klines?symbol=NOSUCHCOIN&interval=1h", {"code": -1121, "msg": "Invalid symbol."}),
        ("/api/v3/klines?symbol=BTCUSDT&interval=2w", {"code": -1120, "msg": "Invalid interval."}),
        (
            "/api/v3/klines?interval=1h",
            {
                "code": -1102,
                "msg": "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
            },
        ),
        (
            "/api/v3/klines?symbol=BTCUSDT&interval=1h&startTime=yesterday",
            {
                "code": -1100,
                "msg": "Illegal characters found in parameter 'startTime'; legal range is "
                "'^[0-9]{1,20}$'.",
            },
        ),
        (
            "/api/v3/klines?symbol=BTCUSDT&interval=1h&limit=1001",
            {"code": -1130, "msg": "Data sent for parameter 'limit' is not valid."},
        ),
        (
            "/fapi/v1/klines?symbol=BTCUSDT&interval=1h&limit=1500",
            {"code": -1121, "msg": "Invalid symbol."},
        ),
        ("/fapi/v1/klines?symbol=BTCUSDT&interval=1s", {"code": -1120, "msg": "Invalid interval."}),
    ],
)
async def test_klines_errors_are_binance_bodies(
    client: httpx.AsyncClient, path: str, body: dict[str, Any]
) -> None:
    with trio.fail_after(30):
        response = await client.get(path)
        assert response.status_code == 400
        assert response.json() == body


async def test_candles_json_and_csv_equal_the_table(client: httpx.AsyncClient, filled: str) -> None:
    with trio.fail_after(30):
        with psycopg.connect(filled) as conn:
            table = conn.execute(
                "SELECT (extract(epoch FROM time) * 1000)::bigint,"
                " floor(extract(epoch FROM close_time) * 1000)::bigint, open::text, high::text,"
                " low::text, close::text, volume::text, quote_volume::text, trades,"
                " taker_buy_volume::text, taker_buy_quote_volume::text FROM candles"
                " WHERE time >= '2024-12-31 20:00Z' AND time < '2025-01-01 04:00Z' ORDER BY time"
            ).fetchall()
        assert len(table) == 8
        query = "symbol=btcusdt&interval=1h&start=2024-12-31T20:00Z&end=2025-01-01T04:00Z"
        response = await client.get(f"/api/candles?{query}")
        assert response.status_code == 200
        objects = response.json()
        assert [tuple(o.values()) for o in objects] == table
        assert list(objects[0]) == [
            "time",
            "close_time",
            "open",
            "high",
            "low",
            "close",
            "volume",
            "quote_volume",
            "trades",
            "taker_buy_volume",
            "taker_buy_quote_volume",
        ]
        as_csv = await client.get(f"/api/candles?{query}&format=csv")
        assert as_csv.headers["content-type"].startswith("text/csv")
        lines = list(csv.reader(io.StringIO(as_csv.text)))
        assert lines[0] == list(objects[0])
        assert [tuple(line) for line in lines[1:]] == [tuple(str(v) for v in row) for row in table]
        # Settled history: cacheable, and a repeat with its ETag is a 304 with no body.
        assert response.headers["cache-control"] == "public, max-age=86400"
        etag = response.headers["etag"]
        assert etag.startswith('"')
        assert etag != as_csv.headers["etag"]
        again = await client.get(f"/api/candles?{query}", headers={"If-None-Match": etag})
        assert again.status_code == 304
        assert again.content == b""
        assert again.headers["etag"] == etag
        stale = await client.get(f"/api/candles?{query}", headers={"If-None-Match": '"other"'})
        assert stale.status_code == 200
        # In ms as well as ISO, and the newest `limit` without a start; no end: no-cache.
        by_ms = await client.get(
            "/api/candles?symbol=BTCUSDT&interval=1h&start=1735675200000&end=1735704000000"
        )
        assert by_ms.content == response.content
        newest = await client.get("/api/candles?symbol=BTCUSDT&interval=1h&limit=2")
        assert newest.headers["cache-control"] == "no-cache"
        assert [o["time"] for o in newest.json()] == [
            JAN_2025 + 742 * HOUR_MS,
            JAN_2025 + 743 * HOUR_MS,
        ]


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("symbol=ETHUSDT&interval=1h", 404),
        ("symbol=BTCUSDT&interval=4h", 404),
        ("symbol=BTCUSDT&interval=1h&market=usdm", 404),
        ("interval=1h", 400),
        ("symbol=BTCUSDT", 400),
        ("symbol=BTCUSDT&interval=7m", 400),
        ("symbol=BTCUSDT&interval=1h&start=yesterday", 400),
        ("symbol=BTCUSDT&interval=1h&start=2024-13-01", 400),
        ("symbol=BTCUSDT&interval=1h&start=2025&end=2024", 400),
        ("symbol=BTCUSDT&interval=1h&limit=10001", 400),
        ("symbol=BTCUSDT&interval=1h&limit=-1", 400),
        ("symbol=BTCUSDT&interval=1h&format=xml", 400),
        ("symbol=BTCUSDT&interval=1h&market=margin", 400),
        ("symbol=BTC%00USDT&interval=1h", 400),
    ],
)
async def test_candles_bad_parameters_and_unknown_series(
    client: httpx.AsyncClient, query: str, status: int
) -> None:
    with trio.fail_after(30):
        response = await client.get(f"/api/candles?{query}")
        assert response.status_code == status
        assert isinstance(response.json()["error"], str)


async def test_metadata_and_coverage(client: httpx.AsyncClient, filled: str) -> None:
    with trio.fail_after(60):
        (series,) = (await client.get("/api/metadata")).json()
        assert series == {
            "market": "spot",
            "symbol": "BTCUSDT",
            "interval": "1h",
            "earliest": 1672531200000,
            "latest": JAN_2025 + 743 * HOUR_MS,
            "count": 3623 + 744 * 2,
        }
        five_months = "symbol=BTCUSDT&interval=1h&start=2023-01&end=2023-06"
        report = (await client.get(f"/api/coverage?{five_months}")).json()
        (c,) = report["series"]
        assert (c["expected"], c["present"], c["holes"], c["missing"]) == (3624, 3623, 1, 0)
        assert c["complete_pct"] == 100.0
        assert report["summary"]["missing"] == 0
        gone = [1673000000000 // HOUR_MS * HOUR_MS + i * HOUR_MS for i in range(5)]
        with psycopg.connect(filled) as conn:
            for t in gone:
                conn.execute("DELETE FROM candles WHERE time = to_timestamp(%s / 1000.0)", (t,))
        (c,) = (await client.get(f"/api/coverage?{five_months}")).json()["series"]
        assert (c["present"], c["holes"], c["missing"]) == (3618, 1, 5)
        assert c["missing_ranges"] == [{"start": gone[0], "end": gone[-1] + HOUR_MS, "count": 5}]
        # Without a range, the stored span: 2023-06 .. 2024-11 is missing.
        whole = (await client.get("/api/coverage")).json()["series"][0]
        assert whole["missing"] == 5 + (DEC_2024 - 1685577600000) // HOUR_MS
        assert (await client.get("/api/coverage?interval=1x")).status_code == 400
        assert (await client.get("/api/metadata?symbol=ETHUSDT")).json() == []


async def test_garbage_queries_never_get_a_500(client: httpx.AsyncClient) -> None:
    rng = random.Random(11)
    alphabet = [*"BTCUSDT1hmM0123456789=&%?;:+-_.,/ZTé\\\"'<>[]{}", "%00", "%zz", "%FF", " "]
    names = ["symbol", "interval", "start", "end", "limit", "format", "market", "startTime"]
    with trio.fail_after(120):
        for _ in range(150):
            parts = [
                f"{rng.choice(names)}={''.join(rng.choices(alphabet, k=rng.randint(0, 12)))}"
                for _ in range(rng.randint(0, 5))
            ]
            query = "&".join(parts)
            for path in ("/api/candles", "/api/v3/klines", "/api/coverage", "/api/metadata"):
                response = await client.get(f"{path}?{query}")
                assert response.status_code < 500, (path, query, response.text)


async def test_coverage_monitor_sums_the_collected_series_over_the_lookback(filled: str) -> None:
    reader = StoreReader(filled)
    keys = [StreamKey("BTCUSDT", "1h"), StreamKey("ETHUSDT", "1h")]
    monitor = CoverageMonitor(reader, lambda: keys, 160 * 86_400_000)
    try:
        with trio.fail_after(30):
            assert monitor.statistics().measured_at is None
            await monitor.measure()
            s = monitor.statistics()
            # 160 days back from 2025-01-31 23:00 reach 2024-08-25: 2024-12 and 2025-01 are
            # stored, the months before missing; ETHUSDT has nothing at all.
            assert (s.series, s.expected, s.present, s.holes) == (1, 160 * 24, 2 * 744, 0)
            assert s.missing == 160 * 24 - 2 * 744
            assert s.incomplete == {"spot BTCUSDT 1h": s.missing}
            assert s.empty == ("spot ETHUSDT 1h",)
            with psycopg.connect(filled) as conn:
                conn.execute("DELETE FROM candles WHERE time < '2024-12-01'")
            monitor = CoverageMonitor(reader, lambda: keys[:1], 62 * 86_400_000)
            await monitor.measure()
            s = monitor.statistics()
            assert (s.series, s.present, s.holes, s.missing, s.complete_pct) == (
                1,
                2 * 744,
                0,
                0,
                100.0,
            )
    finally:
        await reader.aclose()


async def test_futures_klines_serve_their_market_with_pages_of_1500(
    database_url: str, shared_data: Path
) -> None:
    path = shared_data / "vision" / "futures-um" / "AVAXUSDT-1m-2025-02.csv"
    candles = [
        msgspec.structs.replace(c, market="usdm") for c in vision_csv(path, "AVAXUSDT", "1m")
    ]
    db = Database(database_url)
    db.migrate()
    db.write(candles[:2000])
    db.close()
    with path.open() as f:
        rows = [line.strip().split(",") for line in f if line[0].isdigit()][:2000]
    expected = [
        f'[{t},"{o}","{h}","{lo}","{c}","{v}",{close},"{qv}",{n},"{tbv}","{tbqv}","0"]'
        for t, o, h, lo, c, v, close, qv, n, tbv, tbqv, _ in rows
    ]
    reader = StoreReader(database_url)
    app = build_app(no_statistics, store=reader)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://klinetrio"
        ) as http:
            with trio.fail_after(30):
                query = f"symbol=AVAXUSDT&interval=1m&startTime={rows[0][0]}&limit=1500"
                page = await http.get(f"/fapi/v1/klines?{query}")
                assert page.status_code == 200
                assert page.content == body_of(expected[:1500])
                for path_prefix in ("/api/v3", "/dapi/v1"):  # another market: not listed there
                    other = await http.get(f"{path_prefix}/klines?{query.replace('1500', '1000')}")
                    assert other.status_code == 400
                    assert other.json() == {"code": -1121, "msg": "Invalid symbol."}
                too_many = await http.get(f"/fapi/v1/klines?{query.replace('1500', '1501')}")
                assert too_many.json()["code"] == -1130
    finally:
        await reader.aclose()


async def test_an_unreachable_store_is_a_503_never_a_500() -> None:
    reader = StoreReader("postgresql://postgres@127.0.0.1:1/nowhere")
    app = build_app(no_statistics, store=reader)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://klinetrio"
    ) as http:
        with trio.fail_after(30):
            for path in (
                "/api/v3/klines?symbol=BTCUSDT&interval=1h",
                "/api/candles?symbol=BTCUSDT&interval=1h",
                "/api/metadata",
                "/api/coverage",
            ):
                response = await http.get(path)
                assert response.status_code == 503, path
                assert "unavailable" in response.json()["error"]
            page = await http.get("/")
            assert page.status_code == 200
            assert '<svg id="chart"' in page.text
    await reader.aclose()
