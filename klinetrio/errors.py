"""Exceptions raised by klinetrio.

Every error a user can cause, or a fault of the world outside, is a ``KlinetrioError`` whose
message is one line fit for a person; the CLI prints it without a traceback. Third-party errors
are translated at the boundary (``raise X from exc``)::

    KlinetrioError
    ├── SettingsError            bad setting, flag, URL, symbol list or interval
    ├── DatabaseError            PostgreSQL unreachable, refused, or a migration failed
    │   └── DatabaseUnavailable  transient: the writer retries it with backoff
    ├── ExchangeError            the exchange answered something we cannot use
    │   ├── UnknownSymbol        a symbol the exchange does not list
    │   ├── RateLimited          HTTP 429: slow down, retry after ``retry_after`` seconds
    │   ├── IpBanned             HTTP 418: all REST work stops until ``retry_after`` passes
    │   └── ExchangeUnavailable  transient: 5xx, timeouts, resets; retried with backoff
    ├── StreamError              a WebSocket connection failed; the connection reconnects
    ├── ArchiveError             a bulk archive file (data.binance.vision) cannot be used
    │   ├── ChecksumMismatch     its bytes are not what its .CHECKSUM says
    │   └── ArchiveFormatError   its content is not a kline CSV as Binance writes them
    └── EmbeddedDatabaseError    the embedded PostgreSQL could not start (or is in use)
"""

from __future__ import annotations


class KlinetrioError(Exception):
    """Base class of every klinetrio error."""


class SettingsError(KlinetrioError):
    """A setting, flag or argument is invalid."""


class DatabaseError(KlinetrioError):
    """The database cannot be used."""


class DatabaseUnavailable(DatabaseError):
    """The database is (for now) unreachable; worth retrying."""


class ExchangeError(KlinetrioError):
    """The exchange answered with something we cannot use."""


class UnknownSymbol(ExchangeError):
    """The exchange does not list this symbol."""


class RateLimited(ExchangeError):
    """HTTP 429: too much request weight; retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class IpBanned(ExchangeError):
    """HTTP 418: the IP is banned until ``retry_after`` seconds from now."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ExchangeUnavailable(ExchangeError):
    """A transient exchange fault (5xx, timeout, reset); worth retrying."""


class StreamError(KlinetrioError):
    """A WebSocket connection failed."""


class ArchiveError(KlinetrioError):
    """A bulk archive file cannot be used."""


class ChecksumMismatch(ArchiveError):
    """A file's SHA-256 is not the one its ``.CHECKSUM`` names: damaged or changed."""


class ArchiveFormatError(ArchiveError):
    """A file's name or content is not what data.binance.vision publishes."""


class EmbeddedDatabaseError(KlinetrioError):
    """The embedded PostgreSQL could not be started or is in use by another process."""
