"""The ``symbols`` table: what the exchange listed of the collected symbols, and when.

Written at every resolution of ``KLINETRIO_SYMBOLS`` (start-up and each refresh, see
``klinetrio.universe``); read back when the exchange cannot be reached at start-up, so that
the last known universe is collected meanwhile, and by coverage, which ends a symbol that no
longer trades at its last candle instead of counting its silence as missing. Blocking (psycopg):
run through the owner's offload.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import psycopg

from klinetrio.core.models import datetime_to_ms, ms_to_datetime
from klinetrio.core.universe import Listing

Conn = psycopg.Connection[tuple[object, ...]]


class SymbolRow(Listing, frozen=True):
    """A row of ``symbols``: the listing and when klinetrio first and last saw it (ms)."""

    first_seen_ms: int = 0
    last_seen_ms: int = 0


def save_listings(conn: Conn, listings: Sequence[Listing], seen_ms: int) -> None:
    """Upsert ``listings`` as seen at ``seen_ms`` (the exchange's time): status and assets
    follow the exchange, ``first_seen`` stays, ``last_seen`` moves on."""
    if not listings:
        return
    seen = ms_to_datetime(seen_ms)
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO symbols AS s"
            " (market, symbol, status, base_asset, quote_asset, first_seen, last_seen)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (market, symbol) DO UPDATE SET status = EXCLUDED.status,"
            " base_asset = EXCLUDED.base_asset, quote_asset = EXCLUDED.quote_asset,"
            " last_seen = greatest(s.last_seen, EXCLUDED.last_seen)",
            [
                (i.market, i.symbol, i.status, i.base_asset, i.quote_asset, seen, seen)
                for i in listings
            ],
        )
    conn.commit()


def mark_unlisted(conn: Conn, market: str, symbols: Sequence[str], seen_ms: int) -> None:
    """Symbols the exchange no longer lists at all: kept, with status ``UNLISTED``."""
    if not symbols:
        return
    conn.execute(
        "UPDATE symbols SET status = 'UNLISTED', last_seen = greatest(last_seen, %s)"
        " WHERE market = %s AND symbol = ANY(%s)",
        (ms_to_datetime(seen_ms), market, list(symbols)),
    )
    conn.commit()


def load_symbols(conn: Conn, markets: Sequence[str] | None = None) -> list[SymbolRow]:
    """Every row (of ``markets``), ordered by market and symbol."""
    query = (
        "SELECT market, symbol, status, base_asset, quote_asset, first_seen, last_seen FROM symbols"
    )
    params: tuple[object, ...] = ()
    if markets is not None:
        query += " WHERE market = ANY(%s)"
        params = (list(markets),)
    rows = conn.execute(query + " ORDER BY market, symbol", params).fetchall()
    conn.rollback()
    result = []
    for market, symbol, status, base, quote, first, last in rows:
        assert isinstance(first, datetime)
        assert isinstance(last, datetime)
        result.append(
            SymbolRow(
                market=str(market),
                symbol=str(symbol),
                status=str(status),
                base_asset=str(base),
                quote_asset=str(quote),
                first_seen_ms=datetime_to_ms(first),
                last_seen_ms=datetime_to_ms(last),
            )
        )
    return result


__all__ = ["SymbolRow", "load_symbols", "mark_unlisted", "save_listings"]
