"""Progress a person can follow: of one range of candles (sync, ``backfill`` from REST) and of
loading archive files (``backfill`` from archives, ``import``: files, candles and candles per
second), as a bar redrawn in place on a terminal or a log line every few seconds."""

from __future__ import annotations

import sys

import trio
from loguru import logger


class Progress:
    """Counts candles of one range and logs a line a person can follow, at most every few seconds."""

    def __init__(self, label: str, total: int, *, every_s: float = 2.0) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self._every = every_s
        self._logged_at = trio.current_time()
        self.logged = False

    def absent(self, count: int) -> None:
        """``count`` candles of the range do not exist on the exchange (a halt, before listing)."""
        self.total -= count

    def advance(self, count: int) -> None:
        self.done += count
        now = trio.current_time()
        if now - self._logged_at >= self._every:
            self._logged_at = now
            self.log()

    def log(self) -> None:
        self.logged = True
        logger.info(
            "{label}: {done:,}/{total:,} candles",
            label=self.label,
            done=self.done,
            total=self.total,
        )

    def finish(self) -> None:
        """The closing line, for ranges big enough to have been worth following."""
        if self.logged or self.total >= 1000:
            self.log()


class TerminalProgress(Progress):
    """A progress bar on a terminal; one line per series, redrawn in place."""

    def log(self) -> None:
        width = 30
        share = self.done / self.total if self.total else 1.0
        bar = "#" * int(width * share) + "-" * (width - int(width * share))
        end = "\n" if self.done >= self.total else ""
        sys.stderr.write(f"\r{self.label}: [{bar}] {self.done:,}/{self.total:,} candles{end}")
        sys.stderr.flush()

    def advance(self, count: int) -> None:
        self.done += count
        self.log()

    def finish(self) -> None:
        if self.done < self.total:
            sys.stderr.write("\n")


class FileProgress:
    """Counts files and candles; logs a line at most every ``every_s`` seconds, and at the end."""

    def __init__(self, label: str, *, every_s: float = 2.0) -> None:
        self.label = label
        self.files_total = 0
        self.files_done = 0
        self.candles = 0
        self._every = every_s
        self._started = trio.current_time()
        self._logged_at = self._started

    @property
    def rate(self) -> float:
        elapsed = trio.current_time() - self._started
        return self.candles / elapsed if elapsed > 0 else 0.0

    def planned(self, files: int) -> None:
        """``files`` more files to go (negative: fewer, e.g. a month replaced by its days)."""
        self.files_total += files
        self._tick()

    def advance(self, candles: int) -> None:
        self.candles += candles
        self._tick()

    def file_done(self) -> None:
        self.files_done += 1
        self._tick()

    def _tick(self) -> None:
        now = trio.current_time()
        if now - self._logged_at >= self._every:
            self._logged_at = now
            self.log()

    def line(self) -> str:
        return (
            f"{self.label}: {self.files_done:,}/{self.files_total:,} files, {self.candles:,} candles,"
            f" {self.rate:,.0f} candles/s"
        )

    def log(self) -> None:
        logger.info("{line}", line=self.line())

    def finish(self) -> None:
        if self.files_total:
            self.log()


class TerminalFileProgress(FileProgress):
    """The same numbers as a bar on stderr, redrawn in place."""

    def __init__(self, label: str, *, every_s: float = 0.2) -> None:
        super().__init__(label, every_s=every_s)

    def log(self) -> None:
        width = 30
        share = self.files_done / self.files_total if self.files_total else 1.0
        filled = int(width * min(1.0, share))
        bar = "#" * filled + "-" * (width - filled)
        sys.stderr.write(
            f"\r{self.label}: [{bar}] {self.files_done:,}/{self.files_total:,} files,"
            f" {self.candles:,} candles, {self.rate:,.0f} candles/s"
        )
        sys.stderr.flush()

    def finish(self) -> None:
        if self.files_total:
            self.log()
            sys.stderr.write("\n")


__all__ = ["FileProgress", "Progress", "TerminalFileProgress", "TerminalProgress"]
