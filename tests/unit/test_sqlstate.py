"""A refused write is an outage, not bad data: the SQLSTATE decides."""

from __future__ import annotations

import pytest

from klinetrio.store.sqlstate import Refusal, classify


@pytest.mark.parametrize(
    ("sqlstate", "why"),
    [
        (None, "the connection is gone: no answer at all"),
        ("08006", "connection failure"),
        ("25006", "read-only transaction: a fail-over left us on the old primary"),
        ("42501", "insufficient privilege: a revoked grant"),
        ("53100", "disk full"),
        ("53300", "too many connections"),
        ("57014", "statement timeout"),
        ("57P01", "admin shutdown"),
        ("57P03", "cannot connect now: the server is starting"),
        ("58030", "I/O error"),
        ("40001", "serialization failure"),
        ("40P01", "deadlock"),
        ("42703", "undefined column: someone altered the table"),
        ("XX000", "internal error"),
    ],
)
def test_outages_keep_the_rows(sqlstate: str | None, why: str) -> None:
    assert classify(sqlstate) is Refusal.OUTAGE, why


@pytest.mark.parametrize("sqlstate", ["22P02", "22003", "22008", "23514", "23502"])
def test_only_classes_22_and_23_blame_the_data(sqlstate: str) -> None:
    assert classify(sqlstate) is Refusal.BAD_DATA


def test_a_dropped_table_is_repaired() -> None:
    assert classify("42P01") is Refusal.MISSING_TABLE
