"""Exceptions raised by klinetrio.

Every error a user can cause, or a fault of the world outside, is a ``KlinetrioError`` whose
message is one line fit for a person; the CLI prints it without a traceback. Third-party errors
are translated at the boundary (``raise X from exc``)::

    KlinetrioError
    ├── SettingsError            bad setting, flag, URL, symbol list or interval
    ├── DatabaseError            PostgreSQL unreachable, refused, or a migration failed
    │   ├── DatabaseUnavailable  an outage (lost, read-only, no permission, disk full, timeout):
    │   │   │                    the writer keeps its rows and retries with backoff
    │   │   └── SchemaMissing    a table is gone (dropped): the writer re-runs the migrations
    │   └── RejectedAsData       the rows themselves are wrong (SQLSTATE class 22 or 23)
    ├── ExchangeError            the exchange answered something we cannot use
    │   ├── UnknownSymbol        a symbol the exchange does not list
    │   ├── RateLimited          HTTP 429: slow down, retry after ``retry_after`` seconds
    │   ├── IpBanned             HTTP 418: all REST work stops until ``retry_after`` passes
    │   └── ExchangeUnavailable  transient: 5xx, timeouts, resets; retried with backoff
    ├── StreamError              a WebSocket connection failed; the connection reconnects
    ├── ArchiveError             a bulk archive file (data.binance.vision) cannot be used
    │   ├── ChecksumMismatch     its bytes are not what its .CHECKSUM says
    │   └── ArchiveFormatError   its content is not a kline CSV as Binance writes them
    ├── EmbeddedDatabaseError    the embedded PostgreSQL could not start (or is in use)
    └── BackupError              a backup, restore or export could not be made (no matching
                                 pg_dump, a non-empty target, a file that is no backup...)
"""

from __future__ import annotations


class KlinetrioError(Exception):
    """Base class of every klinetrio error."""


class SettingsError(KlinetrioError):
    """A setting, flag or argument is invalid."""


class DatabaseError(KlinetrioError):
    """The database cannot be used."""


class DatabaseUnavailable(DatabaseError):
    """The database did not take the operation for a reason that is not the data's: it is
    unreachable, read-only, out of disk, refusing permission, or too slow. Worth retrying."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class SchemaMissing(DatabaseUnavailable):
    """A table klinetrio needs does not exist (someone dropped it); migrations re-create it."""


class RejectedAsData(DatabaseError):
    """The database refused the rows themselves (SQLSTATE class 22 or 23)."""

    def __init__(self, message: str, sqlstate: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


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


class BackupError(KlinetrioError):
    """A backup, restore or export could not be made."""
