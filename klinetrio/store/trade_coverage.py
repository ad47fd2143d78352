"""How complete the stored aggregate trades are, provably: agg ids are consecutive.

Per symbol and UTC day: the first and last stored id, the ids expected, those present and the
missing ones. A day expects every id after the previous stored day's last one up to its own
last (the first day in range: from its own first), so ids lost across midnight, or a whole day
without a stored trade, count against the next day that has one: they are missing all the same,
and the missing ranges (by id) say exactly which. What ``klinetrio coverage`` and
``/api/coverage`` print beside the candles. Blocking: call through ``Database.call``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

Connection = psycopg.Connection[tuple[object, ...]]

# Missing id ranges kept per symbol (the counts are always whole).
RANGES_KEPT = 1000


@dataclass(frozen=True, slots=True)
class TradeDay:
    day: str  # YYYY-MM-DD (UTC)
    first_id: int
    last_id: int
    expected: int
    present: int

    @property
    def missing(self) -> int:
        return self.expected - self.present


@dataclass(frozen=True, slots=True)
class TradeCoverage:
    """One symbol's trades: its days, and the id ranges ``[first, last]`` that are missing."""

    market: str
    symbol: str
    days: tuple[TradeDay, ...]
    missing_ranges: tuple[tuple[int, int], ...] = field(default=())

    @property
    def expected(self) -> int:
        return sum(d.expected for d in self.days)

    @property
    def present(self) -> int:
        return sum(d.present for d in self.days)

    @property
    def missing(self) -> int:
        return self.expected - self.present


def _where(
    market: str | None, symbols: Sequence[str], start_ms: int | None, end_ms: int | None
) -> tuple[str, dict[str, Any]]:
    clauses, params = ["TRUE"], dict[str, Any]()
    if market is not None:
        clauses.append("market = %(market)s")
        params["market"] = market
    if symbols:
        clauses.append("symbol = ANY(%(symbols)s)")
        params["symbols"] = list(symbols)
    if start_ms is not None:
        clauses.append("time >= timestamptz 'epoch' + %(start)s * interval '1 millisecond'")
        params["start"] = start_ms
    if end_ms is not None:
        clauses.append("time < timestamptz 'epoch' + %(end)s * interval '1 millisecond'")
        params["end"] = end_ms
    return " AND ".join(clauses), params


def trade_coverage(
    conn: Connection,
    *,
    market: str | None = None,
    symbols: Sequence[str] = (),
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> list[TradeCoverage]:
    """The trade coverage of every stored symbol matching the filters (``[start, end)`` by
    trade time), in (market, symbol) order; empty where no trades are stored."""
    where, params = _where(market, symbols, start_ms, end_ms)
    days = conn.execute(
        f"""
        SELECT market, symbol, day, lo, hi,
               hi - coalesce(lag(hi) OVER (PARTITION BY market, symbol ORDER BY day), lo - 1),
               n
          FROM (SELECT market, symbol, to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day,
                       min(agg_id) AS lo, max(agg_id) AS hi, count(DISTINCT agg_id) AS n
                  FROM trades WHERE {where}
                 GROUP BY market, symbol, day) AS d
         ORDER BY market, symbol, day
        """,
        params,
    ).fetchall()
    gaps = conn.execute(
        f"""
        SELECT market, symbol, agg_id + 1, next_id - 1 FROM (
            SELECT market, symbol, agg_id,
                   lead(agg_id) OVER (PARTITION BY market, symbol ORDER BY agg_id) AS next_id
              FROM trades WHERE {where}
        ) AS t
         WHERE next_id > agg_id + 1
         ORDER BY market, symbol, agg_id
        """,
        params,
    ).fetchall()
    conn.rollback()
    by_symbol: dict[tuple[str, str], list[TradeDay]] = {}
    for m, s, day, lo, hi, expected, present in days:
        by_symbol.setdefault((str(m), str(s)), []).append(
            TradeDay(str(day), int(lo), int(hi), int(expected), int(present))  # type: ignore[call-overload]
        )
    ranges: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for m, s, first, last in gaps:
        kept = ranges.setdefault((str(m), str(s)), [])
        if len(kept) < RANGES_KEPT:
            kept.append((int(first), int(last)))  # type: ignore[call-overload]
    return [
        TradeCoverage(m, s, tuple(d), tuple(ranges.get((m, s), ())))
        for (m, s), d in by_symbol.items()
    ]


def trades_summary(report: Sequence[TradeCoverage]) -> dict[str, float]:
    expected = sum(c.expected for c in report)
    present = sum(c.present for c in report)
    pct = 100.0 if expected == 0 else round(100.0 * present / expected, 4)
    return {
        "symbols": len(report),
        "expected": expected,
        "present": present,
        "missing": expected - present,
        "complete_pct": pct,
    }


def trades_json(c: TradeCoverage) -> dict[str, object]:
    return {
        "market": c.market,
        "symbol": c.symbol,
        "expected": c.expected,
        "present": c.present,
        "missing": c.missing,
        "days": [
            {
                "day": d.day,
                "first_id": d.first_id,
                "last_id": d.last_id,
                "expected": d.expected,
                "present": d.present,
                "missing": d.missing,
            }
            for d in c.days
        ],
        "missing_ranges": [list(r) for r in c.missing_ranges],
    }


__all__ = [
    "TradeCoverage",
    "TradeDay",
    "trade_coverage",
    "trades_json",
    "trades_summary",
]
