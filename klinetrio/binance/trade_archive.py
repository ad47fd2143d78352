"""Aggregate trades from data.binance.vision's daily ``aggTrades`` files, as ``trades`` rows.

A spot file has no header and eight columns (agg id, price, quantity, first and last trade id,
time, buyer is maker, best match), its times in microseconds since 2025; the futures files
start with a header line and have seven (no best match), times in milliseconds. Prices and
quantities stay the exact strings of the file. Pure and blocking (a day of a busy symbol is
millions of rows): run it in a worker thread.
"""

from __future__ import annotations

import csv
import io
import zipfile
from typing import IO

from klinetrio.binance.wire_kinds import TradeRow
from klinetrio.errors import ArchiveError

# The first µs timestamp is 16 digits: anything at or above is µs, below ms.
_MICROSECONDS = 10**15


def parse_agg_trades(
    text: str, market: str, symbol: str, first_id: int = 0, last_id: int | None = None
) -> list[TradeRow]:
    """The rows of an aggTrades CSV whose agg id lies in ``[first_id, last_id]``."""
    rows: list[TradeRow] = []
    reader = csv.reader(io.StringIO(text))
    for number, record in enumerate(reader, 1):
        if not record or not record[0].isdigit():
            if number == 1:
                continue  # the futures files' header
            raise ArchiveError(f"{symbol} aggTrades line {number} is not a trade: {record[:3]}")
        try:
            agg_id = int(record[0])
            if agg_id < first_id or (last_id is not None and agg_id > last_id):
                continue
            t = int(record[5])
            rows.append(
                (
                    market,
                    symbol,
                    t // 1000 if t >= _MICROSECONDS else t,
                    agg_id,
                    record[1],
                    record[2],
                    int(record[3]),
                    int(record[4]),
                    record[6].lower() == "true",
                    "archive",
                )
            )
        except (IndexError, ValueError) as exc:
            raise ArchiveError(f"{symbol} aggTrades line {number} is malformed: {exc}") from exc
    return rows


def read_agg_trades(
    file: IO[bytes], market: str, symbol: str, first_id: int = 0, last_id: int | None = None
) -> list[TradeRow]:
    """The trades of a daily aggTrades zip (one CSV inside) in ``[first_id, last_id]``."""
    try:
        with zipfile.ZipFile(file) as archive:
            names = [n for n in archive.namelist() if n.endswith(".csv")]
            if len(names) != 1:
                raise ArchiveError(f"{symbol} aggTrades zip holds {len(names)} CSV files")
            text = archive.read(names[0]).decode()
    except zipfile.BadZipFile as exc:
        raise ArchiveError(f"{symbol} aggTrades file is not a zip: {exc}") from exc
    return parse_agg_trades(text, market, symbol, first_id, last_id)


__all__ = ["parse_agg_trades", "read_agg_trades"]
