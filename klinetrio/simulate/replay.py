"""The replayed market: candles read from data.binance.vision kline archives (CSV or zip), and
the trades of its aggTrades archives (``SYMBOL-aggTrades-YYYY-MM[-DD].zip``) where given."""

from __future__ import annotations

import bisect
import re
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from klinetrio.errors import SettingsError
from klinetrio.simulate.market import Bar
from klinetrio.simulate.trade_files import (
    candles_from_trades,
    finest_interval,
    parse_agg_trades_csv,
)
from klinetrio.simulate.trades import Trade


class ReplayMarket:
    """Candles read from data.binance.vision archives; what the files lack does not exist."""

    def __init__(
        self,
        series: dict[tuple[str, str], list[Bar]],
        source: str = "",
        trades: dict[str, list[Trade]] | None = None,
    ) -> None:
        self.trades: dict[str, list[Trade]] = dict(trades or {})
        self._times: dict[tuple[str, str], list[int]] = {}
        self._bars: dict[tuple[str, str], dict[int, Bar]] = {}
        for key, bars in series.items():
            by_time = {b.open_time: b for b in bars}
            self._bars[key] = by_time
            self._times[key] = sorted(by_time)
        self._symbols = tuple(sorted({symbol for symbol, _ in series}))
        self._source = source

    @property
    def symbols(self) -> tuple[str, ...]:
        return self._symbols

    @property
    def series(self) -> list[tuple[str, str]]:
        return sorted(self._times)

    def finest(self, symbol: str) -> tuple[str, list[Bar]] | None:
        """The finest interval replayed for ``symbol`` and its candles, oldest first."""
        intervals = [i for s, i in self._times if s == symbol]
        if not intervals:
            return None
        interval = finest_interval(intervals)
        bars = self._bars[(symbol, interval)]
        return interval, [bars[t] for t in self._times[(symbol, interval)]]

    @property
    def first_open_ms(self) -> int | None:
        return min((times[0] for times in self._times.values() if times), default=None)

    def describe(self) -> str:
        series = " ".join(f"{s} {i}" for s, i in self.series)
        return f"replay of {self._source}: {series}"

    def bar(self, symbol: str, interval: str, open_time: int) -> Bar | None:
        bars = self._bars.get((symbol, interval))
        return bars.get(open_time) if bars else None

    def open_times(
        self, symbol: str, interval: str, start_ms: int, end_ms: int, limit: int, latest: bool
    ) -> list[int]:
        times = self._times.get((symbol, interval), [])
        lo = bisect.bisect_left(times, start_ms)
        hi = bisect.bisect_right(times, end_ms)
        if latest:
            return times[max(lo, hi - limit) : hi]
        return times[lo : min(hi, lo + limit)]


class ReplayedTrades:
    """Trades read from aggTrades archives, per symbol in id order."""

    def __init__(self, trades: dict[str, list[Trade]]) -> None:
        self._trades = {s: sorted(ts, key=lambda t: t.agg_id) for s, ts in trades.items()}
        self._ids = {s: [t.agg_id for t in ts] for s, ts in self._trades.items()}
        self._times = {s: [t.time for t in ts] for s, ts in self._trades.items()}

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(sorted(self._trades))

    def all(self, symbol: str) -> Sequence[Trade]:
        return self._trades.get(symbol, [])

    def between(self, symbol: str, start_ms: int, end_ms: int, limit: int) -> list[Trade]:
        times = self._times.get(symbol)
        if not times:
            return []
        lo = bisect.bisect_left(times, start_ms)
        hi = bisect.bisect_right(times, end_ms)
        return self._trades[symbol][lo : min(hi, lo + limit)]

    def from_id(self, symbol: str, first_id: int, limit: int, now_ms: int) -> list[Trade]:
        ids = self._ids.get(symbol)
        if not ids:
            return []
        lo = bisect.bisect_left(ids, first_id)
        hi = bisect.bisect_right(self._times[symbol], now_ms)
        return self._trades[symbol][lo : max(lo, min(hi, lo + limit))]

    def latest(self, symbol: str, now_ms: int, limit: int) -> list[Trade]:
        times = self._times.get(symbol)
        if not times or limit <= 0:
            return []
        hi = bisect.bisect_right(times, now_ms)
        return self._trades[symbol][max(0, hi - limit) : hi]

    def next_time(self, symbol: str, after_ms: int) -> int | None:
        times = self._times.get(symbol)
        if not times:
            return None
        i = bisect.bisect_left(times, after_ms)
        return times[i] if i < len(times) else None


_TRADES_FILE = re.compile(r"^([A-Z0-9_]+)-aggTrades-\d{4}-\d{2}(?:-\d{2})?\.(?:csv|zip)$")
_FILE_NAME = re.compile(r"^([A-Z0-9_]+)-(1s|1m|3m|5m|15m|30m|1h|2h|4h|6h|8h|12h|1d|3d|1w|1mo|1M)-")


def _to_ms(t: int) -> int:
    # Spot archives switched to microseconds on 2025-01-01; a ms timestamp stays below 1e14
    # until the year 5138, a µs one is above it since 1973.
    return t // 1000 if t >= 100_000_000_000_000 else t


def parse_kline_csv(text: str, symbol: str, interval: str) -> list[Bar]:
    """Rows of a data.binance.vision kline CSV (header row optional, ms or µs) as ``Bar``s."""
    bars: list[Bar] = []
    for line in text.splitlines():
        cells = line.strip().split(",")
        if len(cells) < 11 or not cells[0].strip().isdigit():
            continue  # blank line or header row
        trades = int(cells[8])
        open_time = _to_ms(int(cells[0]))
        bars.append(
            Bar(
                symbol=symbol,
                interval=interval,
                open_time=open_time,
                close_time=_to_ms(int(cells[6])),
                open=cells[1],
                high=cells[2],
                low=cells[3],
                close=cells[4],
                volume=cells[5],
                quote_volume=cells[7],
                trades=trades,
                taker_buy_volume=cells[9],
                taker_buy_quote_volume=cells[10],
                first_trade_id=open_time // 10 if trades else -1,
            )
        )
    return bars


def _read_archive(path: Path) -> Iterator[str]:
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if name.endswith(".csv"):
                    yield archive.read(name).decode()
    else:
        yield path.read_text()


def load_replay(directory: str | Path) -> ReplayMarket:
    """Read every ``SYMBOL-INTERVAL-*.csv``/``.zip`` and ``SYMBOL-aggTrades-*.csv``/``.zip``
    under ``directory`` (blocking: run it in a worker thread). Later files win where two files
    hold the same candle. A symbol with trades but no kline file gets the 1m and 1h candles its
    trades make."""
    root = Path(directory)
    series: dict[tuple[str, str], list[Bar]] = {}
    trades: dict[str, dict[int, Trade]] = {}
    for path in sorted(root.rglob("*")):
        trade_match = _TRADES_FILE.match(path.name)
        if trade_match and path.is_file():
            rows = trades.setdefault(trade_match[1], {})
            for text in _read_archive(path):
                rows.update((t.agg_id, t) for t in parse_agg_trades_csv(text))
            continue
        match = _FILE_NAME.match(path.name)
        if not match or path.suffix not in (".csv", ".zip") or not path.is_file():
            continue
        symbol, interval = match[1], "1M" if match[2] == "1mo" else match[2]
        for text in _read_archive(path):
            series.setdefault((symbol, interval), []).extend(
                parse_kline_csv(text, symbol, interval)
            )
    ordered = {symbol: [rows[i] for i in sorted(rows)] for symbol, rows in trades.items()}
    for symbol, symbol_trades in ordered.items():
        if not any(s == symbol for s, _ in series):
            for interval in ("1m", "1h"):
                series[(symbol, interval)] = candles_from_trades(symbol, interval, symbol_trades)
    if not series:
        raise SettingsError(
            f"no SYMBOL-INTERVAL-*.csv/.zip kline or SYMBOL-aggTrades-*.csv/.zip files in "
            f"{str(root)!r}"
        )
    return ReplayMarket(series, str(root), ordered)
