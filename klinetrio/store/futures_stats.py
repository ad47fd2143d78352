"""The futures statistics tables: ``long_short_ratios`` and ``open_interest`` (db/0005).

Rows go in with ``ON CONFLICT DO NOTHING``: a period asked for twice (a poll that overlaps the
last, a restart) stores it once. ``stored_runs`` finds what is already there as runs of
consecutive periods (gaps and islands in SQL), so healing the 30 days Binance keeps costs a few
rows per series, not thousands. Blocking (psycopg): run through the owner's offload.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from klinetrio.binance.wire import OpenInterestRow, RatioRow
from klinetrio.core.models import datetime_to_ms, ms_to_datetime

Conn = psycopg.Connection[tuple[object, ...]]

# kind → the /futures/data endpoint it comes from; open interest is a table of its own.
RATIO_KINDS = {
    "top_position": "topLongShortPositionRatio",
    "top_account": "topLongShortAccountRatio",
    "global_account": "globalLongShortAccountRatio",
}
OPEN_INTEREST = "open_interest"
KINDS = (*RATIO_KINDS, OPEN_INTEREST)


def save_ratios(
    conn: Conn, market: str, symbol: str, period: str, kind: str, rows: Sequence[RatioRow]
) -> int:
    """Insert ``rows`` of one series; returns how many were new."""
    return _insert(
        conn,
        "long_short_ratios (market, symbol, period, kind, time, long_short_ratio, long_share,"
        " short_share)",
        [
            (
                *(market, symbol, period, kind, ms_to_datetime(r.timestamp)),
                *(r.longShortRatio, r.long_share, r.short_share),
            )
            for r in rows
        ],
    )


def save_open_interest(
    conn: Conn, market: str, symbol: str, period: str, rows: Sequence[OpenInterestRow]
) -> int:
    return _insert(
        conn,
        "open_interest (market, symbol, period, time, open_interest, open_interest_value)",
        [
            (
                *(market, symbol, period, ms_to_datetime(r.timestamp)),
                *(r.sumOpenInterest, r.sumOpenInterestValue),
            )
            for r in rows
        ],
    )


def _insert(conn: Conn, target: str, values: Sequence[tuple[object, ...]]) -> int:
    """``INSERT INTO target VALUES ... ON CONFLICT DO NOTHING``; the rows new to the table."""
    if not values:
        return 0
    marks = ", ".join(["%s"] * len(values[0]))
    with conn.cursor() as cur:
        cur.executemany(f"INSERT INTO {target} VALUES ({marks}) ON CONFLICT DO NOTHING", values)
        written = max(cur.rowcount, 0)
    conn.commit()
    return written


def stored_runs(
    conn: Conn,
    market: str,
    symbol: str,
    period: str,
    kind: str,
    step_ms: int,
    start_ms: int,
    end_ms: int,
) -> list[tuple[int, int]]:
    """Runs of consecutive stored periods of one series in ``[start_ms, end_ms)``, as (first,
    last) times in ms."""
    if kind == OPEN_INTEREST:
        table, extra, params = "open_interest", "", [market, symbol, period]
    else:
        table, extra, params = "long_short_ratios", " AND kind = %s", [market, symbol, period, kind]
    rows = conn.execute(
        f"""
        SELECT min(time), max(time) FROM (
            SELECT time, time - (row_number() OVER (ORDER BY time))
                                * (%s * interval '1 millisecond') AS island
              FROM {table}
             WHERE market = %s AND symbol = %s AND period = %s{extra}
               AND time >= %s AND time < %s
        ) runs GROUP BY island ORDER BY 1
        """,
        (step_ms, *params, ms_to_datetime(start_ms), ms_to_datetime(end_ms)),
    ).fetchall()
    conn.rollback()
    return [(datetime_to_ms(a), datetime_to_ms(b)) for a, b in rows]  # type: ignore[arg-type]


__all__ = [
    "KINDS",
    "OPEN_INTEREST",
    "RATIO_KINDS",
    "save_open_interest",
    "save_ratios",
    "stored_runs",
]
