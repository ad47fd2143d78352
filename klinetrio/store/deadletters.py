"""The dead-letter file: rows the database rejected as data, kept for a person to look at.

Only a row that PostgreSQL refuses for what it contains (SQLSTATE class 22 or 23) ends up here;
an outage never does (see ``sqlstate``). One JSON object per line, appended, in the data dir::

    {"at": "2026-12-02T10:00:00.123Z", "table": "candles", "sqlstate": "22P02",
     "reason": "...", "row": {"market": "spot", "symbol": "BTCUSDT", ...}}

Blocking file I/O: the owner calls ``append`` from a worker thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from klinetrio.store.database import Rejected

_encoder = msgspec.json.Encoder()


class DeadLetters:
    """Appends rejected rows of one table to ``<directory>/<table>.jsonl``."""

    def __init__(self, directory: str | Path, table: str = "candles") -> None:
        self.path = Path(directory) / f"{table}.jsonl"
        self.table = table

    def append(self, rejected: Sequence[Rejected]) -> None:
        if not rejected:
            return
        at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        lines = [
            _encoder.encode(
                {
                    "at": at,
                    "table": self.table,
                    "sqlstate": r.sqlstate,
                    "reason": r.reason,
                    "row": msgspec.structs.asdict(r.candle),
                }
            )
            + b"\n"
            for r in rejected
        ]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as file:
            file.writelines(lines)


__all__ = ["DeadLetters"]
