"""The read API over the store: Binance's klines, klinetrio's candles, metadata and coverage.

``query_routes(store, now_ms)`` returns Starlette routes (with each market's ``ping`` and
``time``, which Binance clients call first); every handler parses its parameters
(``params``), runs one or a few queries of ``store.reads`` through the read-only
``StoreReader`` and answers. Bad parameters are 400s (Binance's body on the Binance paths), an
unknown series a 404, an unreachable database a 503; never a 500 for anything a client sends.

``/api/candles`` carries a strong ETag (a hash of the body), answers ``If-None-Match`` with
304, and lets clients cache settled history for a day; a range that reaches the present (no
``end``, or an end within one interval of now) is ``no-cache``: its newest candle may still
come. Settled answers are also kept here for ``SETTLED_TTL_S`` (a small LRU), so a client
revalidating history costs no query: that is well inside the day clients are told they may
keep it, and a range healed by a backfill shows within the TTL.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import msgspec
import trio
from loguru import logger
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from klinetrio.api.params import (
    BadRequest,
    BinanceError,
    CandlesQuery,
    parse_candles,
    parse_klines,
    parse_series_filter,
)
from klinetrio.binance.markets import MARKETS, Market
from klinetrio.core.coverage import as_json, summary
from klinetrio.errors import DatabaseError
from klinetrio.store import reads
from klinetrio.store.reader import StoreReader
from klinetrio.store.trade_coverage import trade_coverage, trades_json, trades_summary

JSON = "application/json"
BINANCE_JSON = "application/json;charset=UTF-8"
CSV = "text/csv; charset=utf-8"
SETTLED_CACHE = "public, max-age=86400"
SETTLED_TTL_S = 60.0
SETTLED_ENTRIES = 2048
_encoder = msgspec.json.Encoder()


def _json(body: object, status: int = 200) -> Response:
    return Response(_encoder.encode(body), status, media_type=JSON)


def _binance_error(exc: BinanceError) -> Response:
    body = _encoder.encode({"code": exc.code, "msg": exc.msg})
    return Response(body, exc.status, media_type=BINANCE_JSON)


def _unavailable(exc: DatabaseError) -> Response:
    logger.warning("API read failed: {why}", why=exc)
    return _json({"error": "the store is unavailable; try again"}, 503)


def _query(request: Request) -> Mapping[str, str]:
    # A repeated parameter counts once, its first value (as Binance reads it).
    found: dict[str, str] = {}
    for key, value in request.query_params.multi_items():
        found.setdefault(key, value)
    return found


def etag_of(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def etag_matches(header: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (or is ``*``); weak tags compare
    by their value, as RFC 9110 says for this header."""
    if not header:
        return False
    for part in header.split(","):
        tag = part.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


@dataclass(frozen=True, slots=True)
class _Answer:
    body: bytes
    media: str
    etag: str
    expires: float


class SettledAnswers:
    """The newest answers to settled ``/api/candles`` queries, each for ``ttl_s`` (LRU)."""

    def __init__(self, ttl_s: float = SETTLED_TTL_S, entries: int = SETTLED_ENTRIES) -> None:
        self.ttl_s = ttl_s
        self.entries = entries
        self._answers: OrderedDict[CandlesQuery, _Answer] = OrderedDict()
        self.hits = 0

    def get(self, query: CandlesQuery) -> _Answer | None:
        answer = self._answers.get(query)
        if answer is None:
            return None
        if answer.expires <= trio.current_time():
            del self._answers[query]
            return None
        self._answers.move_to_end(query)
        self.hits += 1
        return answer

    def put(self, query: CandlesQuery, body: bytes, media: str, etag: str) -> None:
        self._answers[query] = _Answer(body, media, etag, trio.current_time() + self.ttl_s)
        self._answers.move_to_end(query)
        while len(self._answers) > self.entries:
            self._answers.popitem(last=False)


def query_routes(store: StoreReader, now_ms: Callable[[], int]) -> list[Route]:
    """The read routes (see the module doc) over ``store``; ``now_ms`` is the exchange's time."""
    settled = SettledAnswers()

    def klines_for(market: Market) -> Callable[[Request], object]:
        async def klines(request: Request) -> Response:
            try:
                q = parse_klines(_query(request), market)
                rows = await store.call(
                    "reading klines",
                    reads.candle_rows,
                    q.market,
                    q.symbol,
                    q.interval,
                    q.start_ms,
                    q.end_ms,
                    q.limit,
                    newest=q.newest,
                )
                if not rows and not await store.call(
                    "checking a symbol", reads.known_symbol, q.market, q.symbol
                ):
                    raise BinanceError(-1121, "Invalid symbol.")
            except BinanceError as exc:
                return _binance_error(exc)
            except DatabaseError as exc:
                return _unavailable(exc)
            body = b"[" + ",".join(rows).encode() + b"]"
            return Response(body, media_type=BINANCE_JSON)

        return klines

    def cache_control(q: CandlesQuery) -> str:
        if q.end_ms is not None and q.end_ms + q.interval.nominal_ms <= now_ms():
            return SETTLED_CACHE
        return "no-cache"

    async def candles(request: Request) -> Response:
        try:
            q = parse_candles(_query(request))
        except BadRequest as exc:
            return _json({"error": str(exc)}, 400)
        cache = cache_control(q)
        answer = settled.get(q) if cache == SETTLED_CACHE else None
        if answer is None:
            try:
                answer = await read_candles(q)
            except DatabaseError as exc:
                return _unavailable(exc)
            if answer is None:
                return _json({"error": f"no stored series {q.market} {q.symbol} {q.interval}"}, 404)
            if cache == SETTLED_CACHE:
                settled.put(q, answer.body, answer.media, answer.etag)
        headers = {"ETag": answer.etag, "Cache-Control": cache}
        if etag_matches(request.headers.get("if-none-match"), answer.etag):
            return Response(status_code=304, headers=headers)
        return Response(answer.body, media_type=answer.media, headers=headers)

    async def read_candles(q: CandlesQuery) -> _Answer | None:
        shape: reads.RowFormat = "csv" if q.format == "csv" else "object"
        rows = await store.call(
            "reading candles",
            reads.candle_rows,
            q.market,
            q.symbol,
            q.interval.name,
            q.start_ms,
            None if q.end_ms is None else q.end_ms - 1,
            q.limit,
            shape=shape,
            newest=q.start_ms is None,
        )
        if not rows and not await store.call(
            "checking a series", reads.series_exists, q.market, q.symbol, q.interval.name
        ):
            return None
        if q.format == "csv":
            body = "\n".join([reads.CSV_HEADER, *rows, ""]).encode()
            return _Answer(body, CSV, etag_of(body), 0.0)
        body = b"[" + ",".join(rows).encode() + b"]"
        return _Answer(body, JSON, etag_of(body), 0.0)

    async def metadata(request: Request) -> Response:
        try:
            f = parse_series_filter(_query(request))
            series = await store.call(
                "reading metadata",
                reads.series_metadata,
                market=f.market,
                symbols=f.symbols,
                intervals=f.intervals,
            )
        except BadRequest as exc:
            return _json({"error": str(exc)}, 400)
        except DatabaseError as exc:
            return _unavailable(exc)
        return _json(series)

    async def coverage(request: Request) -> Response:
        try:
            f = parse_series_filter(_query(request))
            report = []
            if f.candles:
                report = await store.call(
                    "measuring coverage",
                    reads.coverage_report,
                    market=f.market,
                    symbols=f.symbols,
                    intervals=f.intervals,
                    start_ms=f.start_ms,
                    end_ms=f.end_ms,
                )
            trades = []
            if f.trades:
                trades = await store.call(
                    "measuring trade coverage",
                    trade_coverage,
                    market=f.market,
                    symbols=f.symbols,
                    start_ms=f.start_ms,
                    end_ms=f.end_ms,
                )
        except BadRequest as exc:
            return _json({"error": str(exc)}, 400)
        except DatabaseError as exc:
            return _unavailable(exc)
        body: dict[str, object] = {
            "summary": summary(report),
            "series": [as_json(c) for c in report],
        }
        if trades:  # only where trades are stored: the candles' answer is unchanged
            body["trades"] = {
                "summary": trades_summary(trades),
                "symbols": [trades_json(c) for c in trades],
            }
        return _json(body)

    async def ping(request: Request) -> Response:
        return Response(b"{}", media_type=BINANCE_JSON)

    async def server_time(request: Request) -> Response:
        return Response(_encoder.encode({"serverTime": now_ms()}), media_type=BINANCE_JSON)

    routes = []
    for m in MARKETS.values():
        routes.append(Route(m.klines_path, klines_for(m), methods=["GET", "HEAD"]))
        # What Binance clients call before their first klines request.
        routes.append(Route(f"{m.api}/ping", ping, methods=["GET", "HEAD"]))
        routes.append(Route(m.time_path, server_time, methods=["GET", "HEAD"]))
    routes += [
        Route("/api/candles", candles, methods=["GET", "HEAD"]),
        Route("/api/metadata", metadata, methods=["GET", "HEAD"]),
        Route("/api/coverage", coverage, methods=["GET", "HEAD"]),
    ]
    return routes


__all__ = ["SettledAnswers", "etag_matches", "etag_of", "query_routes"]
