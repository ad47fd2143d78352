"""Real kline files of ``../shared/data`` as tests read them: archive CSVs (ms or µs) as
Candles, saved REST responses as the compact rows Binance sends."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from klinetrio.core.models import Candle

HALT = 1679662800000  # 2023-03-24 13:00 UTC: the hour Binance spot never traded


def vision_csv(path: Path, symbol: str = "BTCUSDT", interval: str = "1h") -> list[Candle]:
    """A data.binance.vision kline CSV (ms or µs times, a header line or none) as Candles."""
    candles = []
    with path.open() as f:
        for row in csv.reader(f):
            if not row[0].isdigit():
                continue
            t, o, h, lo, c, v, close, qv, n, tbv, tbqv, _ = row
            micro = int(t) >= 10**15
            open_ms = int(t) // 1000 if micro else int(t)
            close_us = int(close) if micro else int(close) * 1000
            candle = Candle(
                symbol,
                interval,
                open_ms,
                close_us,
                o,
                h,
                lo,
                c,
                v,
                qv,
                int(n),
                tbv,
                tbqv,
                "archive",
            )
            candles.append(candle)
    return candles


def compact(path: Path) -> list[str]:
    """A saved REST response's rows as Binance sends them (no spaces)."""
    return [json.dumps(r, separators=(",", ":")) for r in json.loads(path.read_text())]
