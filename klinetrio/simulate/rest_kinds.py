"""The REST endpoints of the kinds beside klines: ``aggTrades``, ``depth`` and ``ticker/24hr``
of each market (``/api/v3``, ``/fapi/v1``, ``/dapi/v1``), with Binance's parameters, limits,
weights and error bodies. They answer from the same trades and books the streams send (see
``trades`` and ``books``), so a trade lost on a connection is still here.

Weights (Binance's documentation)::

    aggTrades     spot 4                          futures 20
    depth         spot 5 / 25 / 50 / 250 for      futures 2 (5..50), 5 (100), 10 (500),
                  limit <=100 / 500 / 1000 / 5000          20 (1000)
    ticker/24hr   spot 2 for a symbol (or up to   futures 1 for a symbol, 40 for all
                  20), 40 up to 100, 80 for all
"""

from __future__ import annotations

from typing import Any

import msgspec

from klinetrio.simulate.books import Ticker24h
from klinetrio.simulate.venues import Venue
from klinetrio.simulate.web import Request, Response

KIND_ENDPOINTS = ("aggTrades", "depth", "ticker/24hr")
AGG_TRADES_WEIGHT = {"spot": 4, "usdm": 20, "coinm": 20}
HOUR_MS = 3_600_000
_AGG_DEFAULT, _AGG_MAX = 500, 1000
_FUTURES_DEPTHS = (5, 10, 20, 50, 100, 500, 1000)


def api_error(code: int, msg: str, status: int = 400) -> Response:
    """An answer in Binance's error shape (``{"code": -1121, "msg": "Invalid symbol."}``)."""
    return Response.json({"code": code, "msg": msg}, status)


def mandatory(name: str) -> Response:
    return api_error(
        -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    )


def illegal(name: str) -> Response:
    return api_error(
        -1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'."
    )


def _bad_limit() -> Response:
    return api_error(-1130, "Data sent for parameter 'limit' is not valid.")


def _number(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() and len(text) <= 20 else None


def depth_weight(market: str, limit: int) -> int:
    if market == "spot":
        if limit <= 100:
            return 5
        if limit <= 500:
            return 25
        if limit <= 1000:
            return 50
        return 250
    if limit <= 50:
        return 2
    if limit <= 100:
        return 5
    if limit <= 500:
        return 10
    return 20


def _depth_limit(market: str, request: Request) -> int:
    limit = _number(request.query.get("limit"))
    if limit is None:
        return 100 if market == "spot" else 500
    return limit


def _symbols_param(request: Request) -> list[str] | None:
    text = request.query.get("symbols")
    if text is None:
        return None
    try:
        return msgspec.json.decode(text, type=list[str])
    except msgspec.DecodeError:
        return None


def kind_weight(market: str, endpoint: str, request: Request) -> int:
    """The request weight of ``endpoint`` (one of ``KIND_ENDPOINTS``) on ``market``."""
    if endpoint == "aggTrades":
        return AGG_TRADES_WEIGHT[market]
    if endpoint == "depth":
        return depth_weight(market, _depth_limit(market, request))
    if "symbol" in request.query:
        return 2 if market == "spot" else 1
    if market != "spot":
        return 40
    symbols = _symbols_param(request)
    if symbols is None:
        return 80
    return 2 if len(symbols) <= 20 else 40 if len(symbols) <= 100 else 80


def handle_kind(venue: Venue, endpoint: str, request: Request, now_ms: int) -> Response:
    """Answer ``endpoint`` of ``venue`` at exchange time ``now_ms``."""
    if endpoint == "aggTrades":
        return _agg_trades(venue, request, now_ms)
    if endpoint == "depth":
        return _depth(venue, request, now_ms)
    return _ticker(venue, request, now_ms)


def _agg_trades(venue: Venue, request: Request, now_ms: int) -> Response:
    query = request.query
    symbol = query.get("symbol", "")
    if not symbol:
        return mandatory("symbol")
    if not venue.known(symbol, now_ms):
        return api_error(-1121, "Invalid symbol.")
    numbers: dict[str, int | None] = {}
    for name in ("fromId", "startTime", "endTime", "limit"):
        text = query.get(name)
        if text is None or text == "":
            numbers[name] = None
        elif (value := _number(text)) is not None:
            numbers[name] = value
        else:
            return illegal(name)
    limit = numbers["limit"] if numbers["limit"] is not None else _AGG_DEFAULT
    if not 1 <= limit <= _AGG_MAX:
        return _bad_limit()
    from_id, start, end = numbers["fromId"], numbers["startTime"], numbers["endTime"]
    if start is not None and end is not None:
        if start > end:
            return api_error(-1023, "Start time is greater than end time.")
        if end - start > HOUR_MS:
            return api_error(-1127, "More than 1 hours between startTime and endTime.")
    trades = venue.trades
    if from_id is not None:
        found = trades.from_id(symbol, from_id, limit, now_ms)
        if start is not None or end is not None:
            low, high = start or 0, end if end is not None else now_ms
            found = [t for t in found if low <= t.time <= high]
    elif start is not None:
        last = min(now_ms, end if end is not None else start + HOUR_MS)
        found = trades.between(symbol, start, last, limit)
    elif end is not None:
        found = [
            t for t in trades.latest(symbol, min(end, now_ms), limit) if t.time >= end - HOUR_MS
        ]
    else:
        found = trades.latest(symbol, now_ms, limit)
    spot = venue.name == "spot"
    return Response.json(b"[" + b",".join(t.rest_json(spot) for t in found) + b"]")


def _depth(venue: Venue, request: Request, now_ms: int) -> Response:
    query = request.query
    symbol = query.get("symbol", "")
    if not symbol:
        return mandatory("symbol")
    if "limit" in query and _number(query["limit"]) is None:
        return illegal("limit")
    market = venue.name
    limit = _depth_limit(market, request)
    if market == "spot":
        if limit < 1:
            return _bad_limit()
        limit = min(limit, 5000)
    elif limit not in _FUTURES_DEPTHS:
        return _bad_limit()
    if not venue.known(symbol, now_ms):
        return api_error(-1121, "Invalid symbol.")
    book = venue.books.book(symbol, now_ms, limit)
    update_id = venue.books.update_id(symbol, now_ms)
    bids = book.bids if book is not None else []
    asks = book.asks if book is not None else []
    # Field order as captured: futures add E and T, COIN-M then symbol and pair.
    body: dict[str, Any] = {"lastUpdateId": update_id}
    if market != "spot":
        body.update({"E": now_ms + 2, "T": now_ms})
    if market == "coinm":
        body.update({"symbol": symbol, "pair": symbol.partition("_")[0]})
    body.update({"bids": bids, "asks": asks})
    return Response.json(body)


def _ticker(venue: Venue, request: Request, now_ms: int) -> Response:
    query = request.query
    if "symbol" in query:
        wanted = [query["symbol"]]
    elif "symbols" in query and venue.name == "spot":
        symbols = _symbols_param(request)
        if symbols is None:
            return api_error(-1100, "Illegal characters found in parameter 'symbols'.")
        wanted = symbols
    else:
        wanted = [s for s in venue.candles.symbols if venue.status(s, now_ms) == "TRADING"]
    if any(not venue.known(s, now_ms) for s in wanted):
        return api_error(-1121, "Invalid symbol.")
    rows = [_ticker_row(venue, s, now_ms) for s in wanted]
    if "symbol" in query:
        return Response.json(rows[0])
    return Response.json(rows)


def _ticker_row(venue: Venue, symbol: str, now_ms: int) -> dict[str, Any]:
    k = venue.books.ticker(symbol, now_ms) or _empty_ticker(symbol, now_ms)
    market = venue.name
    row: dict[str, Any] = {"symbol": symbol}
    if market == "coinm":
        row["pair"] = symbol.partition("_")[0]
    row.update(
        {"priceChange": k.price_change, "priceChangePercent": k.price_change_percent,
         "weightedAvgPrice": k.weighted_avg_price}
    )  # fmt: skip
    if market == "spot":
        book = venue.books.book(symbol, now_ms, 1)
        (b, bq) = book.bids[0] if book is not None and book.bids else ("0.00000000", "0.00000000")
        (a, aq) = book.asks[0] if book is not None and book.asks else ("0.00000000", "0.00000000")
        row.update(
            {"prevClosePrice": k.prev_close, "lastPrice": k.last, "lastQty": k.last_qty,
             "bidPrice": b, "bidQty": bq, "askPrice": a, "askQty": aq}
        )  # fmt: skip
    else:
        row.update({"lastPrice": k.last, "lastQty": k.last_qty})
    row.update({"openPrice": k.open, "highPrice": k.high, "lowPrice": k.low, "volume": k.volume})
    row["baseVolume" if market == "coinm" else "quoteVolume"] = k.quote_volume
    row.update(
        {"openTime": k.open_time, "closeTime": k.close_time, "firstId": k.first_id,
         "lastId": k.last_id, "count": k.count}
    )  # fmt: skip
    return row


def _empty_ticker(symbol: str, now_ms: int) -> Ticker24h:
    zero = "0.00000000"
    return Ticker24h(
        symbol, zero, "0.000", zero, zero, zero, zero, zero, zero, zero, zero, zero,
        now_ms - 86_400_000, now_ms, -1, -1, 0,
    )  # fmt: skip


__all__ = [
    "AGG_TRADES_WEIGHT",
    "KIND_ENDPOINTS",
    "api_error",
    "depth_weight",
    "handle_kind",
    "illegal",
    "kind_weight",
    "mandatory",
]
