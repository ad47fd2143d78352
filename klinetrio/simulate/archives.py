"""The archive face of the fake exchange: ``/data/spot/{monthly|daily}/klines/...`` zips with
their ``.CHECKSUM`` s, built from the simulator's market as data.binance.vision builds them, and
the same under ``/data/futures/um/...`` (USD-M) and ``/data/futures/cm/...`` (COIN-M), whose
files carry a header row and keep millisecond times. Beside them the aggTrades files,
``/data/{spot|futures/um|futures/cm}/{monthly|daily}/aggTrades/SYMBOL/SYMBOL-aggTrades-
{YYYY-MM|YYYY-MM-DD}.zip``, hold the market's trades (the ones its streams and REST serve) in
data.binance.vision's columns: spot without a header and with ``True``/``False`` and a
best-match column, futures with a header and ``true``/``false``.

A file exists once its period has ended on the exchange clock and the market has at least one
candle in it; everything else answers 404, as the real archive does for days not yet uploaded
and symbols younger than the month. A replayed halt (BTCUSDT 1h 2023-03-24 13:00) is a missing
row inside a published file, as on Binance. Spot files use microsecond times from 2025-01-01 on.

Faults for tests: ``--archive-missing-days`` (days whose daily files, or months as ``YYYY-MM``
whose monthly files, answer 404) and ``--archive-corrupt N`` (the first N files asked for are served with bytes that do not
match their CHECKSUM, every time they are asked for).

A file is built once (candles gathered on the Trio thread in slices, so streams keep flowing;
CSV, zip and SHA-256 in a worker thread) and kept in a small cache, because a client asks for
the CHECKSUM and then the zip.
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from collections import OrderedDict

import trio
import trio.lowlevel
from loguru import logger

from klinetrio.binance.vision import SPOT_MICROSECONDS_SINCE_MS, file_interval, file_name
from klinetrio.core.planner import period_span
from klinetrio.errors import SettingsError
from klinetrio.simulate.market import Bar
from klinetrio.simulate.state import Exchange
from klinetrio.simulate.trade_files import trades_csv
from klinetrio.simulate.trades import Trade
from klinetrio.simulate.web import Request, Response

_PATH = re.compile(
    r"^/data/(?P<market>spot|futures/um|futures/cm)/(?P<frequency>monthly|daily)/klines/(?P<symbol>[A-Z0-9_]+)/(?P<interval>[0-9a-zA-Z]+)/"
    r"(?P<name>[^/]+?)(?P<checksum>\.CHECKSUM)?$"
)
_TRADES_PATH = re.compile(
    r"^/data/(?P<market>spot|futures/um|futures/cm)/(?P<frequency>monthly|daily)/aggTrades/"
    r"(?P<symbol>[A-Z0-9_]+)/(?P<name>[^/]+?)(?P<checksum>\.CHECKSUM)?$"
)
_TRADES_SLICE_MS = 3_600_000  # trades gathered between checkpoints of the Trio loop
_CACHE_FILES = 32
_GATHER_SLICE = 2_000  # candles gathered between checkpoints of the Trio loop
_MARKET_OF_PATH = {"spot": "spot", "futures/um": "usdm", "futures/cm": "coinm"}
FUTURES_HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
    "taker_buy_quote_volume,ignore\n"
)
_NOT_FOUND = Response(404, b"<Error><Code>NoSuchKey</Code></Error>", "application/xml")


def csv_line(bar: Bar, micros: bool) -> str:
    """One row as data.binance.vision writes it (no header, ``ignore`` = 0)."""
    if micros:
        open_time, close_time = bar.open_time * 1000, bar.close_time * 1000 + 999
    else:
        open_time, close_time = bar.open_time, bar.close_time
    return (
        f"{open_time},{bar.open},{bar.high},{bar.low},{bar.close},{bar.volume},{close_time},"
        f"{bar.quote_volume},{bar.trades},{bar.taker_buy_volume},{bar.taker_buy_quote_volume},0\n"
    )


def build_zip(name: str, bars: list[Bar], micros: bool, header: str = "") -> tuple[bytes, str]:
    """The zip (one CSV named like it, after ``header``) and its SHA-256 hex; the same bars give
    the same bytes."""
    return zip_text(name, header + "".join(csv_line(bar, micros) for bar in bars))


def build_trades_zip(name: str, trades: list[Trade], spot: bool, micros: bool) -> tuple[bytes, str]:
    """An aggTrades zip and its SHA-256 hex; the same trades give the same bytes."""
    return zip_text(name, trades_csv(trades, spot, micros))


def zip_text(name: str, csv_text: str) -> tuple[bytes, str]:
    """``csv_text`` zipped as data.binance.vision does (one CSV named like the zip)."""
    text = csv_text.encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        info = zipfile.ZipInfo(name.removesuffix(".zip") + ".csv", date_time=(2020, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        archive.writestr(info, text)
    body = buffer.getvalue()
    return body, hashlib.sha256(body).hexdigest()


def corrupted(body: bytes) -> bytes:
    """The same length, one byte changed: what a damaged download looks like."""
    middle = len(body) // 2
    return body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1 :]


class ArchiveFace:
    """Answers ``/data/...`` requests from the simulator's market and clock."""

    def __init__(self, sim: Exchange) -> None:
        self.sim = sim
        self._missing = set(sim.config.archive_missing)
        self._cache: OrderedDict[str, tuple[bytes, str]] = OrderedDict()
        self._building: dict[str, trio.Event] = {}
        self._corrupt: set[str] = set()

    async def handle(self, request: Request) -> Response:
        stats = self.sim.counters
        stats.archive_requests += 1
        if request.method not in ("GET", "HEAD"):
            return Response.text("405 Method Not Allowed\n", 405)
        built = await self._file(request.path)
        if built is None:
            stats.archive_not_found += 1
            return _NOT_FOUND
        name, body, digest, checksum = built
        if checksum:
            return Response(200, f"{digest}  {name}".encode(), "text/plain")
        if name in self._corrupt:
            body = corrupted(body)
        stats.archive_files_served += 1
        return Response(200, body, "application/zip")

    async def _file(self, path: str) -> tuple[str, bytes, str, bool] | None:
        match = _PATH.match(path)
        if match is None:
            return await self._trades_file(path)
        symbol, interval, frequency = match["symbol"], match["interval"], match["frequency"]
        interval = "1M" if interval == "1mo" else interval
        venue = self.sim.venues[_MARKET_OF_PATH[match["market"]]]
        market = venue.candles
        if not venue.serves_interval(interval) or not venue.has(symbol):
            return None
        prefix = f"{symbol}-{file_interval(interval)}-"
        name = match["name"]
        period = name.removeprefix(prefix).removesuffix(".zip")
        if not name.startswith(prefix) or len(period) != (7 if frequency == "monthly" else 10):
            return None
        try:
            start, end = period_span(period)
        except SettingsError:
            return None
        if (
            name != file_name(symbol, interval, period)
            or period in self._missing
            or end > self.sim.clock.now_ms()
        ):
            return None
        if not market.open_times(symbol, interval, start, end - 1, 1, latest=False):
            return None
        self._maybe_corrupt(name)  # in the order files are first asked for
        built = await self._build(venue.name, name, symbol, interval, start, end)
        if built is None:
            return None
        return name, built[0], built[1], match["checksum"] is not None

    async def _trades_file(self, path: str) -> tuple[str, bytes, str, bool] | None:
        match = _TRADES_PATH.match(path)
        if match is None:
            return None
        symbol, frequency = match["symbol"], match["frequency"]
        venue = self.sim.venues[_MARKET_OF_PATH[match["market"]]]
        if not venue.has(symbol):
            return None
        name = match["name"]
        prefix = f"{symbol}-aggTrades-"
        period = name.removeprefix(prefix).removesuffix(".zip")
        if (
            not name.startswith(prefix)
            or not name.endswith(".zip")
            or len(period) != (7 if frequency == "monthly" else 10)
        ):
            return None
        try:
            start, end = period_span(period)
        except SettingsError:
            return None
        if period in self._missing or end > self.sim.clock.now_ms():
            return None
        if not venue.trades.between(symbol, start, end - 1, 1):
            return None
        self._maybe_corrupt(name)
        key = f"{venue.name}/{name}"
        while key in self._building:
            await self._building[key].wait()
        if key not in self._cache:
            done = self._building[key] = trio.Event()
            try:
                trades: list[Trade] = []
                for t in range(start, end, _TRADES_SLICE_MS):
                    trades.extend(
                        venue.trades.between(symbol, t, min(end, t + _TRADES_SLICE_MS) - 1, 1 << 40)
                    )
                    await trio.lowlevel.checkpoint()
                spot = venue.name == "spot"
                micros = spot and start >= SPOT_MICROSECONDS_SINCE_MS
                self._cache[key] = await trio.to_thread.run_sync(
                    build_trades_zip, name, trades, spot, micros
                )
                while len(self._cache) > _CACHE_FILES:
                    self._cache.popitem(last=False)
            finally:
                del self._building[key]
                done.set()
        self._cache.move_to_end(key)
        body, digest = self._cache[key]
        return name, body, digest, match["checksum"] is not None

    def _maybe_corrupt(self, name: str) -> None:
        if name in self._corrupt or len(self._corrupt) >= self.sim.config.archive_corrupt:
            return
        self._corrupt.add(name)
        self.sim.counters.archive_corrupted += 1
        logger.warning("serving {name} with a wrong checksum (--archive-corrupt)", name=name)

    async def _build(
        self, market: str, name: str, symbol: str, interval: str, start: int, end: int
    ) -> tuple[bytes, str] | None:
        key = f"{market}/{name}"  # the same file name exists in every market
        while key in self._building:
            await self._building[key].wait()
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        done = self._building[key] = trio.Event()
        try:
            bars = await self._gather(market, symbol, interval, start, end)
            if not bars:
                return None
            spot = market == "spot"
            micros = spot and start >= SPOT_MICROSECONDS_SINCE_MS
            header = "" if spot else FUTURES_HEADER
            built = await trio.to_thread.run_sync(build_zip, name, bars, micros, header)
            self._cache[key] = built
            while len(self._cache) > _CACHE_FILES:
                self._cache.popitem(last=False)
            return built
        finally:
            del self._building[key]
            done.set()

    async def _gather(
        self, market_name: str, symbol: str, interval: str, start: int, end: int
    ) -> list[Bar]:
        market = self.sim.venues[market_name].candles
        times = market.open_times(symbol, interval, start, end - 1, 2**31, latest=False)
        bars: list[Bar] = []
        for offset in range(0, len(times), _GATHER_SLICE):
            for t in times[offset : offset + _GATHER_SLICE]:
                bar = market.bar(symbol, interval, t)
                if bar is not None:
                    bars.append(bar)
            await trio.lowlevel.checkpoint()
        return bars


__all__ = ["ArchiveFace", "build_trades_zip", "build_zip", "corrupted", "csv_line", "zip_text"]
