"""Read-only queries behind the API and ``klinetrio coverage`` (blocking psycopg; run each with
``Database.call`` in a worker thread).

Every answer is shaped in PostgreSQL, not in Python: a klines page comes back as the JSON
fragments of Binance's layout (``numeric::text`` keeps the exact scale Binance sent), and
coverage of thousands of series is three queries, whatever their length:

1. per series, ``count``/``min``/``max`` of the stored candles in its range (an index range
   scan each, no rows travel);
2. the confirmed holes overlapping those ranges;
3. only for the series whose count falls short of what the range expects, the runs of
   consecutive candles (gaps and islands: within a run ``time - row_number * step`` is
   constant), a few rows per series instead of every candle.

Times travel as integer milliseconds. Close times are stored in µs for the 2025 spot archives;
they are floored to ms here, as Binance's REST API returns them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import msgspec
import psycopg

from klinetrio.core.coverage import Coverage, Span, coverage
from klinetrio.core.intervals import Interval

Connection = psycopg.Connection[tuple[Any, ...]]


def _ms(column: str) -> str:
    return f"floor(extract(epoch FROM {column}) * 1000)::bigint"


def _ts(param: str) -> str:
    return f"(timestamptz 'epoch' + {param} * interval '1 millisecond')"


class SeriesInfo(msgspec.Struct, frozen=True):
    """One stored series: open times of its oldest and newest candle, and how many there are."""

    market: str
    symbol: str
    interval: str
    earliest: int
    latest: int
    count: int


class CoverageRequest(msgspec.Struct, frozen=True):
    """Coverage wanted for one series over ``[start, end)`` (ms)."""

    market: str
    symbol: str
    interval: str
    start: int
    end: int


def series_metadata(
    conn: Connection,
    *,
    market: str | None = None,
    symbols: Sequence[str] = (),
    intervals: Sequence[str] = (),
) -> list[SeriesInfo]:
    """Every stored series (or those matching the filters) with earliest, latest and count."""
    rows = conn.execute(
        f"""
        SELECT market, symbol, interval, {_ms("min(time)")}, {_ms("max(time)")}, count(*)
          FROM candles
         WHERE (%(market)s::text IS NULL OR market = %(market)s)
           AND (cardinality(%(symbols)s::text[]) = 0 OR symbol = ANY(%(symbols)s::text[]))
           AND (cardinality(%(intervals)s::text[]) = 0 OR interval = ANY(%(intervals)s::text[]))
         GROUP BY market, symbol, interval
         ORDER BY market, symbol, interval
        """,
        {"market": market, "symbols": list(symbols), "intervals": list(intervals)},
    ).fetchall()
    conn.rollback()
    return [SeriesInfo(*row) for row in rows]


def delisted(conn: Connection) -> set[tuple[str, str]]:
    """(market, symbol) of every symbol the exchange lists as not TRADING."""
    rows = conn.execute("SELECT market, symbol FROM symbols WHERE status <> 'TRADING'").fetchall()
    conn.rollback()
    return {(m, s) for m, s in rows}


def _arrays(requests: Sequence[CoverageRequest]) -> dict[str, list[Any]]:
    return {
        "markets": [r.market for r in requests],
        "symbols": [r.symbol for r in requests],
        "intervals": [r.interval for r in requests],
        "starts": [r.start for r in requests],
        "ends": [r.end for r in requests],
    }


_KEYS = """
unnest(%(markets)s::text[], %(symbols)s::text[], %(intervals)s::text[],
       %(starts)s::bigint[], %(ends)s::bigint[]) WITH ORDINALITY
    AS k(market, symbol, interval, lo, hi, ord)
"""


def coverage_of(
    conn: Connection,
    requests: Sequence[CoverageRequest],
    known: Sequence[tuple[int, int, int]] | None = None,
) -> list[Coverage]:
    """The coverage of each requested series over its range, in the order asked. ``known``
    gives (count, oldest, newest open time) of each range when the caller has them already
    (metadata over the whole series), which saves the first query."""
    if not requests:
        return []
    params: dict[str, Any] = _arrays(requests)
    counts = (
        [(i + 1, *k) for i, k in enumerate(known)]
        if known is not None
        else conn.execute(
            f"""
        SELECT k.ord, s.n, s.lo, s.hi FROM {_KEYS}
         CROSS JOIN LATERAL (
               SELECT count(*) AS n, {_ms("min(c.time)")} AS lo, {_ms("max(c.time)")} AS hi
                 FROM candles c
                WHERE c.market = k.market AND c.symbol = k.symbol AND c.interval = k.interval
                  AND c.time >= {_ts("k.lo")} AND c.time < {_ts("k.hi")}) s
        """,
            params,
        ).fetchall()
    )
    holes: dict[int, list[Span]] = {}
    for ordinal, lo, hi in conn.execute(
        f"""
        SELECT k.ord, {_ms("h.start_time")}, {_ms("h.end_time")} FROM {_KEYS}
          JOIN candle_holes h ON h.market = k.market AND h.symbol = k.symbol
               AND h.interval = k.interval
               AND h.end_time > {_ts("k.lo")} AND h.start_time < {_ts("k.hi")}
        """,
        params,
    ):
        holes.setdefault(int(ordinal) - 1, []).append((lo, hi))
    runs: dict[int, list[Span]] = {}
    short: list[tuple[int, int, int]] = []
    for ordinal, n, lo, hi in counts:
        index = int(ordinal) - 1
        request = requests[index]
        interval = Interval.parse(request.interval)
        if n == 0:
            runs[index] = []
        elif n == interval.count(request.start, request.end):
            runs[index] = [(lo, hi)]  # every expected candle is there: one run
        else:
            short.append((index, lo, hi))
    if short:
        gaps: dict[int, list[Span]] = {}
        for ordinal, before, after in _gaps(conn, [requests[i] for i, _, _ in short]):
            gaps.setdefault(ordinal - 1, []).append((before, after))
        for n, (index, lo, hi) in enumerate(short):
            # Between the gaps, the runs: from the oldest candle to the one before the first
            # gap, from the one after it to the one before the next, ... to the newest.
            edges = [lo]
            for before, after in gaps.get(n, []):
                edges += [before, after]
            edges.append(hi)
            runs[index] = list(zip(edges[::2], edges[1::2], strict=True))
    conn.rollback()
    result = []
    for index, r in enumerate(requests):
        interval = Interval.parse(r.interval)
        result.append(
            coverage(
                r.market,
                r.symbol,
                interval,
                r.start,
                r.end,
                runs.get(index, []),
                holes.get(index, []),
            )
        )
    return result


def coverage_report(
    conn: Connection,
    *,
    market: str | None = None,
    symbols: Sequence[str] = (),
    intervals: Sequence[str] = (),
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> list[Coverage]:
    """The coverage of every stored series matching the filters (what ``klinetrio coverage``
    and ``/api/coverage`` print).

    A range left open runs from the series' first stored candle (``start_ms``) or to the end of
    its newest (``end_ms``): nothing is expected before a series starts, and the candles after
    its newest are sync's to fetch, not yet lost. A delisted symbol's range always ends with its
    newest candle: its later silence is not a gap.
    """
    series = series_metadata(conn, market=market, symbols=symbols, intervals=intervals)
    gone = delisted(conn) if series else set()
    requests: list[CoverageRequest] = []
    known: list[tuple[int, int, int]] = []
    done: dict[int, Coverage] = {}
    for index, info in enumerate(series):
        interval = Interval.parse(info.interval)
        after_newest = interval.next_open(info.latest)
        start = info.earliest if start_ms is None else start_ms
        end = after_newest if end_ms is None else end_ms
        if (info.market, info.symbol) in gone:
            end = min(end, after_newest)
        if start_ms is None and end_ms is None and info.count == interval.count(start, end):
            # Every candle from the first to the newest is there: complete, nothing to ask.
            done[index] = Coverage(
                info.market, info.symbol, info.interval, start, end, info.earliest,
                info.latest, info.count, info.count, 0, 0,
            )  # fmt: skip
            continue
        requests.append(CoverageRequest(info.market, info.symbol, info.interval, start, end))
        known.append((info.count, info.earliest, info.latest))
    whole = start_ms is None and end_ms is None
    measured = iter(coverage_of(conn, requests, known if whole else None))
    return [done[i] if i in done else next(measured) for i in range(len(series))]


def _gaps(conn: Connection, requests: Sequence[CoverageRequest]) -> list[tuple[int, int, int]]:
    """(ordinal, before, after) for each gap between stored candles of each series: the open
    times of the candles on either side, in order. Only the gaps travel, not the candles.
    Calendar months are stepped in UTC (``+ interval '1 month'`` would follow the session's
    time zone)."""
    params = _arrays(requests)
    params["steps"] = [Interval.parse(r.interval).fixed_ms for r in requests]
    rows = conn.execute(
        f"""
        SELECT k.ord, {_ms("g.prev")}, {_ms("g.time")}
          FROM unnest(%(markets)s::text[], %(symbols)s::text[], %(intervals)s::text[],
                      %(starts)s::bigint[], %(ends)s::bigint[], %(steps)s::bigint[])
               WITH ORDINALITY AS k(market, symbol, interval, lo, hi, step, ord)
         CROSS JOIN LATERAL (
               SELECT w.prev, w.time FROM (
                   SELECT c.time, lag(c.time) OVER (ORDER BY c.time) AS prev
                     FROM candles c
                    WHERE c.market = k.market AND c.symbol = k.symbol
                      AND c.interval = k.interval
                      AND c.time >= {_ts("k.lo")} AND c.time < {_ts("k.hi")}) w
                WHERE CASE WHEN k.step IS NULL
                           THEN w.time AT TIME ZONE 'UTC'
                                > (w.prev AT TIME ZONE 'UTC') + interval '1 month'
                           ELSE w.time - w.prev > k.step * interval '1 millisecond' END
                ORDER BY w.time) g
         ORDER BY k.ord, g.time
        """,
        params,
    ).fetchall()
    return [(int(o), int(a), int(b)) for o, a, b in rows]


# One candle as Binance's REST row: ms times (close floored from µs), numbers with their stored
# scale, the ignored trailing "0".
_KLINE_ROW = f"""format('[%%s,"%%s","%%s","%%s","%%s","%%s",%%s,"%%s",%%s,"%%s","%%s","0"]',
    {_ms("time")}, open, high, low, close, volume, {_ms("close_time")}, quote_volume, trades,
    taker_buy_volume, taker_buy_quote_volume)"""
_OBJECT_ROW = f"""format('{{"time":%%s,"close_time":%%s,"open":"%%s","high":"%%s","low":"%%s",'
    '"close":"%%s","volume":"%%s","quote_volume":"%%s","trades":%%s,"taker_buy_volume":"%%s",'
    '"taker_buy_quote_volume":"%%s"}}',
    {_ms("time")}, {_ms("close_time")}, open, high, low, close, volume, quote_volume, trades,
    taker_buy_volume, taker_buy_quote_volume)"""
_CSV_ROW = f"""concat_ws(',', {_ms("time")}, {_ms("close_time")}, open, high, low, close, volume,
    quote_volume, trades, taker_buy_volume, taker_buy_quote_volume)"""
CSV_HEADER = (
    "time,close_time,open,high,low,close,volume,quote_volume,trades,"
    "taker_buy_volume,taker_buy_quote_volume"
)
RowFormat = Literal["kline", "object", "csv"]
_ROWS: dict[str, str] = {"kline": _KLINE_ROW, "object": _OBJECT_ROW, "csv": _CSV_ROW}


def candle_rows(
    conn: Connection,
    market: str,
    symbol: str,
    interval: str,
    start_ms: int | None,
    end_ms: int | None,
    limit: int,
    *,
    shape: RowFormat = "kline",
    newest: bool = False,
) -> list[str]:
    """Stored candles opening in ``[start_ms, end_ms]`` (either bound may be open), ascending,
    each rendered as one text row: the first ``limit`` of them, or the last ``limit`` when
    ``newest`` (Binance's rule when no ``startTime`` is given)."""
    order = "DESC" if newest else "ASC"
    rows = conn.execute(
        f"""
        SELECT {_ROWS[shape]} FROM candles
         WHERE market = %(market)s AND symbol = %(symbol)s AND interval = %(interval)s
           AND (%(start)s::bigint IS NULL OR time >= {_ts("%(start)s::bigint")})
           AND (%(end)s::bigint IS NULL OR time <= {_ts("%(end)s::bigint")})
         ORDER BY time {order} LIMIT %(limit)s
        """,
        {
            "market": market,
            "symbol": symbol,
            "interval": interval,
            "start": start_ms,
            "end": end_ms,
            "limit": limit,
        },
    ).fetchall()
    conn.rollback()
    texts = [row[0] for row in rows]
    if newest:
        texts.reverse()
    return texts


def newest_open_times(conn: Connection, keys: Sequence[tuple[str, str, str]]) -> list[int | None]:
    """The open time of the newest stored candle of each (market, symbol, interval), None for
    a series with none: one backward index scan each."""
    if not keys:
        return []
    rows = conn.execute(
        f"""
        SELECT k.ord, (SELECT {_ms("max(c.time)")} FROM candles c
                        WHERE c.market = k.market AND c.symbol = k.symbol
                          AND c.interval = k.interval)
          FROM unnest(%s::text[], %s::text[], %s::text[]) WITH ORDINALITY
               AS k(market, symbol, interval, ord)
         ORDER BY k.ord
        """,
        ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]),
    ).fetchall()
    conn.rollback()
    return [None if newest is None else int(newest) for _, newest in rows]


def known_symbol(conn: Connection, market: str, symbol: str) -> bool:
    """Whether ``symbol`` is listed in ``market`` or has stored candles there."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM symbols WHERE market = %(m)s AND symbol = %(s)s)"
        " OR EXISTS (SELECT 1 FROM candles WHERE symbol = %(s)s AND market = %(m)s)",
        {"m": market, "s": symbol},
    ).fetchone()
    conn.rollback()
    return bool(row and row[0])


def series_exists(conn: Connection, market: str, symbol: str, interval: str) -> bool:
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM candles WHERE symbol = %s AND interval = %s AND market = %s)",
        (symbol, interval, market),
    ).fetchone()
    conn.rollback()
    return bool(row and row[0])


__all__ = [
    "CSV_HEADER",
    "CoverageRequest",
    "RowFormat",
    "SeriesInfo",
    "candle_rows",
    "coverage_of",
    "coverage_report",
    "delisted",
    "known_symbol",
    "newest_open_times",
    "series_exists",
    "series_metadata",
]
