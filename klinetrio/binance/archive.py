"""The bulk archives of data.binance.vision, for Trio: download, verify, hand over.

``ArchiveClient.fetch`` gets one kline file and its ``.CHECKSUM`` and returns it only once the
SHA-256 of its bytes matched; no row is read before that. The body is streamed into a spooled
temporary file (memory for small files, disk beyond ``SPOOL_BYTES``) while it is hashed, so a
year of 1-second candles never sits in memory; hashing and writing run in worker threads, the
Trio loop only moves chunks.

Faults, and what happens to them:

- 404 (on the file or its CHECKSUM): not published — a day not yet uploaded, a symbol younger
  than the month. ``fetch`` returns None and the caller plans around it.
- 5xx, timeouts, resets (``ExchangeUnavailable``): retried with capped, jittered backoff up to
  ``max_attempts``, then raised.
- A checksum mismatch (``ChecksumMismatch``), any other status or a malformed CHECKSUM
  (``ArchiveError``): final for this file, counted, raised; the caller takes its range from REST.

Downloads share the ``httpx.AsyncClient`` of the REST client: at most ``parallel`` of them run
at once (a ``CapacityLimiter``), which leaves the rest of the client's connection pool to REST,
so archives never starve it. The client is injected and owned by whoever built it. Our methods
take no timeouts: the client's own bound each attempt, callers use ``trio.fail_after``.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import IO, TypeVar

import httpx
import msgspec
import trio
from loguru import logger

from klinetrio.binance.vision import (
    MARKET_PATHS,
    Frequency,
    agg_trades_path,
    check_digest,
    file_name,
    file_path,
    parse_checksum,
)
from klinetrio.core.backoff import Backoff
from klinetrio.errors import ArchiveError, ChecksumMismatch, ExchangeUnavailable, SettingsError
from klinetrio.threads import Offload, in_thread

_T = TypeVar("_T")

PARALLEL = 4
SPOOL_BYTES = 16 << 20
_HAND_OFF_BYTES = 1 << 20  # chunks gathered before one worker-thread write


class ArchiveStatistics(msgspec.Struct, frozen=True):
    """Counters of one :class:`ArchiveClient` (a snapshot)."""

    requests: int
    """HTTP requests sent (CHECKSUMs and files; every attempt counts)."""
    files: int
    """Files downloaded whose checksum matched."""
    bytes: int
    """Bytes of those files."""
    not_published: int
    """Files the archive does not have (404)."""
    mismatches: int
    """Files whose bytes did not match their CHECKSUM."""
    failures: int
    """Files given up on for any other reason."""
    retries: int


class VerifiedFile:
    """A downloaded archive whose SHA-256 matched its CHECKSUM; ``file`` is positioned at 0.

    Use it as a context manager (or call ``close``): its bytes live in a temporary file.
    """

    def __init__(self, name: str, file: IO[bytes], size: int, sha256: str) -> None:
        self.name = name
        self.file = file
        self.size = size
        self.sha256 = sha256

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> VerifiedFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _Sink:
    """A spooled temporary file that hashes what is written to it (blocking)."""

    def __init__(self) -> None:
        self.file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 - owned by the VerifiedFile
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.digest.update(data)
        self.file.write(data)
        self.size += len(data)

    def finish(self) -> str:
        self.file.seek(0)
        return self.digest.hexdigest()


@dataclass(slots=True)
class _Counters:
    requests: int = 0
    files: int = 0
    bytes: int = 0
    not_published: int = 0
    mismatches: int = 0
    failures: int = 0
    retries: int = 0


class ArchiveClient:
    """data.binance.vision kline files of one market (``spot``, ``usdm`` or ``coinm``)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        *,
        market: str = "spot",
        parallel: int = PARALLEL,
        max_attempts: int = 5,
        backoff_initial: float = 0.5,
        backoff_maximum: float = 30.0,
        offload: Offload | None = None,
    ) -> None:
        if market not in MARKET_PATHS:
            raise SettingsError(f"unknown market {market!r}")
        self._http = http
        self._base_url = base_url.rstrip("/")
        self.market = market
        self._limiter = trio.CapacityLimiter(parallel)
        self._max_attempts = max_attempts
        self._backoff_initial = backoff_initial
        self._backoff_maximum = backoff_maximum
        self._offload: Offload = offload or in_thread
        self._counters = _Counters()

    def statistics(self) -> ArchiveStatistics:
        c = self._counters
        return ArchiveStatistics(
            requests=c.requests,
            files=c.files,
            bytes=c.bytes,
            not_published=c.not_published,
            mismatches=c.mismatches,
            failures=c.failures,
            retries=c.retries,
        )

    def url(self, frequency: Frequency, symbol: str, interval: str, period: str) -> str:
        return self._base_url + file_path(self.market, frequency, symbol, interval, period)

    async def fetch(
        self, frequency: Frequency, symbol: str, interval: str, period: str
    ) -> VerifiedFile | None:
        """One file whose checksum matched, or None when the archive does not publish it.

        Raises ``ChecksumMismatch`` or ``ArchiveError`` (final for this file) and
        ``ExchangeUnavailable`` once retries are exhausted.
        """
        name = file_name(symbol, interval, period)
        return await self._fetch(self.url(frequency, symbol, interval, period), name)

    async def fetch_agg_trades(self, symbol: str, day: str) -> VerifiedFile | None:
        """One day's aggregate trades file (``YYYY-MM-DD``), checksummed like ``fetch``."""
        path = agg_trades_path(self.market, symbol, day)
        return await self._fetch(self._base_url + path, path.rsplit("/", 1)[1])

    async def _fetch(self, url: str, name: str) -> VerifiedFile | None:
        try:
            async with self._limiter:
                text = await self._retrying(self._checksum, url + ".CHECKSUM")
                if text is None:
                    self._counters.not_published += 1
                    return None
                expected = parse_checksum(text, name)
                sink = await self._retrying(self._download, url)
                if sink is None:
                    self._counters.not_published += 1
                    return None
        except ArchiveError:
            self._counters.failures += 1
            raise
        actual = sink.finish()
        try:
            check_digest(name, expected, actual)
        except ChecksumMismatch:
            sink.file.close()
            self._counters.mismatches += 1
            raise
        self._counters.files += 1
        self._counters.bytes += sink.size
        return VerifiedFile(name, sink.file, sink.size, actual)

    async def _retrying(self, attempt: Callable[[str], Awaitable[_T]], url: str) -> _T:
        backoff = Backoff(initial=self._backoff_initial, maximum=self._backoff_maximum)
        for number in range(1, self._max_attempts + 1):
            try:
                return await attempt(url)
            except ExchangeUnavailable as exc:
                if number == self._max_attempts:
                    self._counters.failures += 1
                    raise
                delay = backoff.next_delay()
                logger.log(
                    "WARNING" if number == 1 else "DEBUG",
                    "archive {url} failed ({error}); attempt {attempt} of {attempts},"
                    " retrying in {delay:.1f} s",
                    url=url,
                    error=str(exc),
                    attempt=number,
                    attempts=self._max_attempts,
                    delay=delay,
                )
                self._counters.retries += 1
                await trio.sleep(delay)
        raise AssertionError("unreachable")

    async def _checksum(self, url: str) -> bytes | None:
        self._counters.requests += 1
        try:
            response = await self._http.get(url)
        except httpx.TransportError as exc:
            raise ExchangeUnavailable(
                f"cannot reach {self._base_url}: {type(exc).__name__}"
            ) from exc
        except httpx.HTTPError as exc:
            raise ArchiveError(f"request to {url} failed: {exc}") from exc
        if _status_ok(response.status_code, url) is None:
            return None
        return response.content

    async def _download(self, url: str) -> _Sink | None:
        self._counters.requests += 1
        sink = _Sink()
        try:
            async with self._http.stream("GET", url) as response:
                if _status_ok(response.status_code, url) is None:
                    sink.file.close()
                    return None
                pending = bytearray()
                async for chunk in response.aiter_bytes():
                    pending += chunk
                    if len(pending) >= _HAND_OFF_BYTES:
                        await self._offload(sink.write, bytes(pending))
                        pending.clear()
                if pending:
                    await self._offload(sink.write, bytes(pending))
        except httpx.TransportError as exc:
            sink.file.close()
            raise ExchangeUnavailable(
                f"cannot reach {self._base_url}: {type(exc).__name__}"
            ) from exc
        except httpx.HTTPError as exc:
            sink.file.close()
            raise ArchiveError(f"request to {url} failed: {exc}") from exc
        except BaseException:
            sink.file.close()
            raise
        logger.debug("archive {url}: {size:,} bytes", url=url, size=sink.size)
        return sink


def _status_ok(status: int, url: str) -> bool | None:
    """True for 200, None for 404 (not published); raise for anything else."""
    if status == 200:
        return True
    if status == 404:
        return None
    if status >= 500 or status == 429:
        raise ExchangeUnavailable(f"{url} answered HTTP {status}")
    raise ArchiveError(f"{url} answered HTTP {status}")


__all__ = ["PARALLEL", "ArchiveClient", "ArchiveStatistics", "VerifiedFile"]
