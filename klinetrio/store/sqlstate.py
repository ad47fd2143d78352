"""What a database error means for the rows being written, decided by its SQLSTATE.

A refused write is an outage, not bad data. After a fail-over the old primary answers
``25006 read_only_sql_transaction``; a revoked grant is ``42501``, a full disk ``53100``, a
statement timeout ``57014``, a server shutting down ``57P01``; a lost connection has no
SQLSTATE at all. None of these says anything about the rows: the writer keeps them and retries.
Only classes 22 (data exception: a malformed number, an out-of-range value) and 23 (integrity
constraint violation: a check constraint) blame the rows themselves, and only then may a row
be set aside. A missing table (``42P01``, someone dropped it) is repaired by re-running the
migrations.

Pure: a string in, a verdict out.
"""

from __future__ import annotations

from enum import Enum

# Classes that blame the data, not the server (PostgreSQL's Appendix A).
_DATA_CLASSES = ("22", "23")
UNDEFINED_TABLE = "42P01"


class Refusal(Enum):
    """Why the database did not take a write."""

    OUTAGE = "outage"  # keep the rows, report degraded, retry with backoff
    BAD_DATA = "bad data"  # the rows themselves are wrong: find them, set them aside
    MISSING_TABLE = "missing table"  # re-run the migrations, then write again


def classify(sqlstate: str | None) -> Refusal:
    """The verdict for an error with this SQLSTATE (None: no answer from the server at all).

    Everything that is not known bad data counts as an outage, including errors we did not
    foresee (``42703`` after someone altered a column, ``XX000``): holding the rows and saying
    so loudly loses nothing, where dropping them would.
    """
    if sqlstate is None:
        return Refusal.OUTAGE
    if sqlstate == UNDEFINED_TABLE:
        return Refusal.MISSING_TABLE
    if sqlstate[:2] in _DATA_CLASSES:
        return Refusal.BAD_DATA
    return Refusal.OUTAGE


__all__ = ["UNDEFINED_TABLE", "Refusal", "classify"]
