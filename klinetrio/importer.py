"""``klinetrio import PATH...``: local data.binance.vision kline files into the table.

Files, or folders searched recursively, of zips or CSVs as Binance's public-data scripts
download them. Each file's name says its series and period (``BTCUSDT-1m-2024-01-01.zip``,
``BTCUSDT-1h-2023-03.csv``); a named file whose name says neither is an error, and in a folder
such files are skipped with a warning. Where ``<file>.CHECKSUM`` lies beside a file, its SHA-256
must match: every checksum is checked before any row is written, so a damaged or changed file
stops the import with one line and nothing of the run is stored. Every row must open inside the
period the name gives, at a time of its interval.

Rows go through the bulk path with ``source = 'archive'`` and the given market; importing twice
changes nothing. Files are read in worker threads, several at a time, each a chunk ahead of its
writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import trio
from loguru import logger

from klinetrio.binance.vision import (
    MARKETS,
    ChunkReader,
    KlineFileName,
    check_digest,
    parse_checksum,
    parse_file_name,
    sha256_of,
)
from klinetrio.core.intervals import Interval
from klinetrio.core.models import StreamKey, plural
from klinetrio.errors import SettingsError
from klinetrio.history import load_chunks
from klinetrio.progress import FileProgress, TerminalFileProgress
from klinetrio.store.bulk import BulkStore, BulkWriter
from klinetrio.store.database import Database
from klinetrio.threads import in_thread

FILES_AT_ONCE = 4
BULK_LANES = 2
_EXAMPLE = "SYMBOL-INTERVAL-YYYY-MM[-DD].zip or .csv, e.g. BTCUSDT-1m-2024-01-01.zip"


@dataclass(frozen=True, slots=True)
class ImportFile:
    path: Path
    name: KlineFileName
    checksum: Path | None


@dataclass(frozen=True, slots=True)
class ImportReport:
    files: int
    checksums: int
    """Files whose ``.CHECKSUM`` was checked (and matched)."""
    rows: int
    written: int
    skipped: int
    """Files in folders whose names name no kline series."""


def validate_market(text: str) -> str:
    market = text.strip().lower()
    if market not in MARKETS:
        raise SettingsError(f"invalid --market {text!r}; expected one of {', '.join(MARKETS)}")
    return market


def collect(paths: Sequence[str]) -> tuple[list[ImportFile], list[Path]]:
    """The kline files named by ``paths`` (folders searched recursively), and those skipped."""
    found: dict[Path, ImportFile] = {}
    skipped: list[Path] = []
    for text in paths:
        path = Path(text).expanduser()
        if not path.exists():
            raise SettingsError(f"{text}: no such file or directory")
        if path.is_dir():
            before = len(found)
            for child in sorted(path.rglob("*")):
                if not child.is_file() or child.suffix not in (".zip", ".csv"):
                    continue
                name = parse_file_name(child.name)
                if name is None:
                    skipped.append(child)
                else:
                    found.setdefault(child.resolve(), _import_file(child, name))
            if len(found) == before:
                raise SettingsError(f"{text}: no kline files in it (expected {_EXAMPLE})")
        else:
            name = parse_file_name(path.name)
            if name is None:
                raise SettingsError(
                    f"{text}: the file name names no kline series (expected {_EXAMPLE})"
                )
            found.setdefault(path.resolve(), _import_file(path, name))
    return sorted(found.values(), key=lambda f: str(f.path)), skipped


def _import_file(path: Path, name: KlineFileName) -> ImportFile:
    checksum = path.with_name(path.name + ".CHECKSUM")
    return ImportFile(path, name, checksum if checksum.is_file() else None)


def verify(file: ImportFile) -> None:
    """Raise ``ChecksumMismatch`` unless the file's SHA-256 is its ``.CHECKSUM`` 's (blocking)."""
    assert file.checksum is not None
    try:
        expected = parse_checksum(file.checksum.read_bytes(), file.path.name)
        with file.path.open("rb") as stream:
            actual = sha256_of(stream)
    except OSError as exc:
        raise SettingsError(f"cannot read {file.path}: {exc.strerror}") from None
    check_digest(str(file.path), expected, actual, consequence="; nothing was imported")


def _open_reader(file: ImportFile) -> ChunkReader:
    try:
        stream = file.path.open("rb")
    except OSError as exc:
        raise SettingsError(f"cannot read {file.path}: {exc.strerror}") from None
    try:
        return ChunkReader(
            stream,
            file.path.name,
            interval=Interval.parse(file.name.interval),
            span=file.name.span,
            owns_source=True,
        )
    except BaseException:
        stream.close()
        raise


async def import_files(
    paths: Sequence[str],
    *,
    database_url: str,
    market: str = "spot",
    progress_bar: bool = False,
) -> ImportReport:
    """Import every kline file under ``paths``; see the module doc."""
    market = validate_market(market)
    files, skipped = await in_thread(collect, paths)
    if skipped:
        shown = ", ".join(p.name for p in skipped[:3]) + (", ..." if len(skipped) > 3 else "")
        logger.warning(
            "skipping {count} whose names name no kline series: {names}",
            count=plural(len(skipped), "file"),
            names=shown,
        )
    checked = [f for f in files if f.checksum is not None]
    for file in checked:
        await in_thread(verify, file)
    if checked:
        logger.info("{count} verified", count=plural(len(checked), "checksum"))
    database = Database(database_url)
    try:
        await in_thread(database.migrate)
    finally:
        await in_thread(database.close)
    bulk = BulkWriter([BulkStore(database_url) for _ in range(BULK_LANES)])
    progress = (TerminalFileProgress if progress_bar else FileProgress)("import")
    progress.planned(len(files))
    rows = written = 0

    async def one(file: ImportFile, limiter: trio.CapacityLimiter) -> None:
        nonlocal rows, written
        async with limiter:
            reader = await in_thread(_open_reader, file)
            key = StreamKey(file.name.symbol, file.name.interval, market)
            start, end = file.name.span
            loaded = await load_chunks(reader, bulk, key, start, end, progress=progress)
            rows += loaded.rows
            written += loaded.written
            progress.file_done()

    try:
        async with trio.open_nursery() as nursery:
            limiter = trio.CapacityLimiter(FILES_AT_ONCE)
            for file in files:
                nursery.start_soon(one, file, limiter)
    finally:
        await bulk.aclose()
    progress.finish()
    logger.info(
        "import done: {files} ({checked} checked), {rows:,} candles read, {written:,} new,"
        " {dupes:,} already stored",
        files=plural(len(files), "file"),
        checked=plural(len(checked), "checksum"),
        rows=rows,
        written=written,
        dupes=rows - written,
    )
    return ImportReport(len(files), len(checked), rows, written, len(skipped))


__all__ = ["ImportFile", "ImportReport", "collect", "import_files", "validate_market", "verify"]
