"""The hypertables klinetrio keeps, in one place: what TimescaleDB needs to know of each.

Adding a table is one line here (after its migration in ``db/``): it then becomes a hypertable,
gets compression (segmented by its series columns, ordered by time, newest first) and may be
named in ``KLINETRIO_RETENTION``. Pure data: settings validation reads it too.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Hypertable:
    name: str
    # The columns that name one series: compression keeps each series in its own segments,
    # so a query for one symbol reads only that symbol's compressed batches.
    segmentby: tuple[str, ...]
    time_column: str = "time"
    chunk_interval: str = "7 days"

    @property
    def orderby(self) -> str:
        return f"{self.time_column} DESC"


HYPERTABLES: tuple[Hypertable, ...] = (
    Hypertable("candles", segmentby=("market", "symbol", "interval")),
    Hypertable("long_short_ratios", segmentby=("market", "symbol", "period", "kind")),
    Hypertable("open_interest", segmentby=("market", "symbol", "period")),
    Hypertable("trades", segmentby=("market", "symbol"), chunk_interval="1 day"),
    Hypertable("book_tickers", segmentby=("market", "symbol"), chunk_interval="1 day"),
    Hypertable("tickers", segmentby=("market", "symbol")),
    Hypertable("depth_snapshots", segmentby=("market", "symbol"), chunk_interval="1 day"),
)

HYPERTABLE_NAMES: tuple[str, ...] = tuple(t.name for t in HYPERTABLES)


def hypertable(name: str) -> Hypertable:
    for table in HYPERTABLES:
        if table.name == name:
            return table
    raise KeyError(name)
