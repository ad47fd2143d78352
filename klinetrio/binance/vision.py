"""The kline files of data.binance.vision (pure): where they live, their names, their
``.CHECKSUM`` lines and their CSV rows.

Layout: ``/data/{spot|futures/um|futures/cm}/{monthly|daily}/klines/{SYMBOL}/{interval}/
{SYMBOL}-{interval}-{YYYY-MM|YYYY-MM-DD}.zip``, each zip with a ``.CHECKSUM`` beside it
(``<sha256 hex>  <file name>``, as ``sha256sum`` writes it; Binance's have no trailing newline,
copies often gain one). A zip holds one CSV of the same name. Rows have 12 columns: open time,
open, high, low, close, volume, close time, quote volume, trades, taker buy base volume, taker
buy quote volume, ignore. Spot files switched from milliseconds to microseconds on 2025-01-01;
futures files carry a header row. The interval ``1M`` is spelled ``1mo`` in names and paths.

Nothing here converts a price: rows stay the exact bytes Binance wrote, checked for shape and
handed to PostgreSQL's ``COPY ... (FORMAT csv)`` as they are (see :mod:`klinetrio.store.bulk`).
The reader is blocking (zip inflation, reads): callers run it in a worker thread.
"""

from __future__ import annotations

import hashlib
import re
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Literal

from klinetrio.core.intervals import Interval
from klinetrio.core.planner import period_span
from klinetrio.errors import ArchiveFormatError, ChecksumMismatch, SettingsError

Frequency = Literal["monthly", "daily"]

MARKET_PATHS = {"spot": "spot", "usdm": "futures/um", "coinm": "futures/cm"}
MARKETS = tuple(MARKET_PATHS)
COLUMNS = 12
# A millisecond time stays below 1e14 until the year 5138; a microsecond one passed it in 1973.
MICROSECONDS_FROM = 10**14
# Spot archives carry microsecond times from this day (2025-01-01) on; futures never do.
SPOT_MICROSECONDS_SINCE_MS = 1_735_689_600_000
CHUNK_BYTES = 4 << 20  # ~40,000 rows: one COPY batch

_NAME = re.compile(
    r"^(?P<symbol>[A-Z0-9]{2,30}(?:_[A-Z0-9]{4,6})?)-(?P<interval>1s|1m|3m|5m|15m|30m|1h|2h|4h|6h|8h|12h|1d|3d|1w|1mo)"
    r"-(?P<period>\d{4}-\d{2}(?:-\d{2})?)\.(?P<ext>zip|csv)$"
)
_CHECKSUM = re.compile(rb"^\s*([0-9a-fA-F]{64})\s+\*?(\S+)\s*$")


def file_interval(interval: str) -> str:
    """The interval as file names spell it (``1mo`` for ``1M``)."""
    return "1mo" if interval == "1M" else interval


def file_name(symbol: str, interval: str, period: str) -> str:
    return f"{symbol}-{file_interval(interval)}-{period}.zip"


def file_path(market: str, frequency: Frequency, symbol: str, interval: str, period: str) -> str:
    """The path below the archive's base URL, e.g. ``/data/spot/monthly/klines/BTCUSDT/1h/...``."""
    if market not in MARKET_PATHS:
        raise SettingsError(f"unknown market {market!r}; expected one of {', '.join(MARKETS)}")
    return (
        f"/data/{MARKET_PATHS[market]}/{frequency}/klines/{symbol}/{file_interval(interval)}/"
        f"{file_name(symbol, interval, period)}"
    )


def agg_trades_path(market: str, symbol: str, day: str) -> str:
    """A day's aggregate trades below the archive's base URL, e.g.
    ``/data/spot/daily/aggTrades/PEPEUSDT/PEPEUSDT-aggTrades-2024-10-27.zip``."""
    if market not in MARKET_PATHS:
        raise SettingsError(f"unknown market {market!r}; expected one of {', '.join(MARKETS)}")
    return f"/data/{MARKET_PATHS[market]}/daily/aggTrades/{symbol}/{symbol}-aggTrades-{day}.zip"


@dataclass(frozen=True, slots=True)
class KlineFileName:
    """What a data.binance.vision kline file's name says about it."""

    symbol: str
    interval: str
    period: str
    extension: str

    @property
    def frequency(self) -> Frequency:
        return "daily" if len(self.period) == 10 else "monthly"

    @property
    def span(self) -> tuple[int, int]:
        """Open times ``[start, end)`` the file holds."""
        return period_span(self.period)


def parse_file_name(name: str) -> KlineFileName | None:
    """``BTCUSDT-1m-2020-01-01.zip`` → its parts; None for a name that names no kline file."""
    match = _NAME.match(name)
    if match is None:
        return None
    try:
        period_span(match["period"])
    except SettingsError:
        return None
    interval = "1M" if match["interval"] == "1mo" else match["interval"]
    return KlineFileName(match["symbol"], interval, match["period"], match["ext"])


def parse_checksum(text: bytes, name: str) -> str:
    """The lower-case SHA-256 hex of a ``.CHECKSUM`` file for ``name`` (newline or not)."""
    match = _CHECKSUM.match(text)
    if match is None:
        raise ArchiveFormatError(f"{name}.CHECKSUM is not '<sha256>  <file name>'")
    named = match[2].decode(errors="replace").rsplit("/", 1)[-1]
    if named != name:
        raise ArchiveFormatError(f"{name}.CHECKSUM is for {named}, not {name}")
    return match[1].decode().lower()


def check_digest(name: str, expected: str, actual: str, *, consequence: str = "") -> None:
    """Raise :class:`ChecksumMismatch`, in one line a person can act on, unless they agree."""
    if actual != expected:
        raise ChecksumMismatch(
            f"checksum mismatch: {name} has sha256 {actual[:16]}…, its .CHECKSUM says"
            f" {expected[:16]}… (the file is damaged or was changed){consequence}"
        )


def sha256_of(stream: IO[bytes]) -> str:
    """The SHA-256 hex of everything ``stream`` still holds (blocking)."""
    digest = hashlib.sha256()
    while block := stream.read(1 << 20):
        digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class KlineChunk:
    """Whole rows of a kline CSV, ready for ``COPY ... (FORMAT csv)``, and their open times."""

    csv: bytes
    """Complete ``\\n``-terminated rows, no header, no blank line, exactly as in the file."""
    open_times: list[int]
    """Open time of each row in milliseconds, in file order."""

    @property
    def rows(self) -> int:
        return len(self.open_times)


def parse_chunk(
    data: bytes,
    *,
    interval: Interval,
    span: tuple[int, int] | None,
    where: str,
    first_line: int = 1,
) -> KlineChunk:
    """Check whole ``\\n``-terminated rows and read their open times (ms or µs → ms).

    Every row must have 12 columns, an integer open time aligned to ``interval`` and, with
    ``span``, inside it; otherwise :class:`ArchiveFormatError` names the line (``where:line``).
    """
    if b"\r" in data or b"\n\n" in data or data.startswith(b"\n"):
        lines = [line.rstrip(b"\r") for line in data.split(b"\n") if line.strip()]
        csv = b"\n".join(lines) + b"\n" if lines else b""
    else:
        csv = data
        lines = data.split(b"\n")
        lines.pop()  # after the last newline
    if not lines:
        return KlineChunk(b"", [])
    if csv.count(b",") != (COLUMNS - 1) * len(lines):
        for number, line in enumerate(lines, first_line):
            if line.count(b",") != COLUMNS - 1:
                raise ArchiveFormatError(
                    f"{where}:{number}: {line.count(b',') + 1} columns, expected {COLUMNS}"
                )
    try:
        raw = [int(line[: line.index(b",")]) for line in lines]
    except ValueError:
        for number, line in enumerate(lines, first_line):
            if not line.split(b",", 1)[0].strip().isdigit():
                raise ArchiveFormatError(f"{where}:{number}: open time is not an integer") from None
        raise
    times = raw
    if max(raw) >= MICROSECONDS_FROM:
        times = [t // 1000 if t >= MICROSECONDS_FROM else t for t in raw]
        _check(
            lines,
            raw,
            first_line,
            where,
            lambda t_raw, _: t_raw < MICROSECONDS_FROM or not t_raw % 1000,
            "not a whole millisecond",
        )
    step = interval.fixed_ms
    if step is not None:
        if any(t % step for t in times):
            _check(
                lines,
                raw,
                first_line,
                where,
                lambda _, t: not t % step,
                f"not a {interval} open time",
            )
    else:
        _check(
            lines,
            raw,
            first_line,
            where,
            lambda _, t: interval.is_aligned(t),
            f"not a {interval} open time",
        )
    if span is not None and (min(times) < span[0] or max(times) >= span[1]):
        _check(
            lines,
            raw,
            first_line,
            where,
            lambda _, t: span[0] <= t < span[1],
            "outside the file's period",
        )
    return KlineChunk(csv, times)


def _check(
    lines: list[bytes],
    raw: list[int],
    first_line: int,
    where: str,
    good: Callable[[int, int], bool],
    what: str,
) -> None:
    """Name the first row whose open time (raw, and in ms) is not ``good``."""
    for number, t_raw in enumerate(raw, first_line):
        t = t_raw // 1000 if t_raw >= MICROSECONDS_FROM else t_raw
        if not good(t_raw, t):
            raise ArchiveFormatError(f"{where}:{number}: open time {t_raw} is {what}")


class ChunkReader:
    """Reads a kline CSV, or the one CSV inside a zip, as chunks of whole rows (blocking).

    ``read()`` returns the next :class:`KlineChunk` or None at the end; a header row is
    skipped. Only ``chunk_bytes`` plus one row are held at a time. ``close()`` closes ``source``
    too when the reader ``owns_source``.
    """

    def __init__(
        self,
        source: IO[bytes],
        name: str,
        *,
        interval: Interval,
        span: tuple[int, int] | None = None,
        chunk_bytes: int = CHUNK_BYTES,
        owns_source: bool = False,
    ) -> None:
        self.name = name
        self._source = source
        self._owns_source = owns_source
        self._interval = interval
        self._span = span
        self._chunk_bytes = chunk_bytes
        self._zip: zipfile.ZipFile | None = None
        self._stream = source
        self._rest = b""
        self._first = True
        self._line = 1
        if name.endswith(".zip"):
            try:
                self._zip = zipfile.ZipFile(source)
                members = [m for m in self._zip.infolist() if not m.is_dir()]
                if len(members) != 1 or not members[0].filename.endswith(".csv"):
                    found = ", ".join(m.filename for m in members) or "nothing"
                    raise ArchiveFormatError(f"{name}: expected one CSV inside, found {found}")
                self._stream = self._zip.open(members[0])
            except (zipfile.BadZipFile, OSError) as exc:
                raise ArchiveFormatError(f"{name}: not a readable zip ({exc})") from exc

    def read(self) -> KlineChunk | None:
        while True:
            try:
                block = self._stream.read(self._chunk_bytes)
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
                raise ArchiveFormatError(f"{self.name}: cannot be read ({exc})") from exc
            data = self._rest + block
            if block:
                cut = data.rfind(b"\n")
                if cut < 0:
                    self._rest = data
                    continue
                self._rest, data = data[cut + 1 :], data[: cut + 1]
            else:
                self._rest = b""
                if not data.strip():
                    return None
                if not data.endswith(b"\n"):
                    data += b"\n"
            if self._first:
                self._first = False
                data = self._skip_header(data)
            first_line = self._line
            self._line += data.count(b"\n")
            chunk = parse_chunk(
                data,
                interval=self._interval,
                span=self._span,
                where=self.name,
                first_line=first_line,
            )
            if chunk.rows:
                return chunk

    def _skip_header(self, data: bytes) -> bytes:
        data = data.removeprefix(b"\xef\xbb\xbf")
        first, _, rest = data.partition(b"\n")
        if first.split(b",", 1)[0].strip().isdigit():
            return data
        self._line += 1
        return rest

    def close(self) -> None:
        if self._zip is not None:
            self._stream.close()
            self._zip.close()
        if self._owns_source:
            self._source.close()


__all__ = [
    "CHUNK_BYTES",
    "COLUMNS",
    "MARKETS",
    "MARKET_PATHS",
    "SPOT_MICROSECONDS_SINCE_MS",
    "ChunkReader",
    "Frequency",
    "KlineChunk",
    "KlineFileName",
    "agg_trades_path",
    "check_digest",
    "file_name",
    "file_path",
    "parse_checksum",
    "parse_chunk",
    "parse_file_name",
    "sha256_of",
]
