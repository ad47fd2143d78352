"""``KLINETRIO_RETENTION``: how long each table keeps its rows (``table:duration,...``)."""

from __future__ import annotations

from collections.abc import Collection

from klinetrio.core.durations import parse_duration_ms
from klinetrio.errors import SettingsError


def parse_retention(text: str, tables: Collection[str]) -> tuple[tuple[str, int], ...]:
    """``candles:400d, book_tickers:7d`` → ``(("candles", 34560000000), ...)``, in the order given.

    ``tables`` are the names that may be named (the hypertables klinetrio keeps). A table named
    twice, an unknown table or a duration of zero is an error: each would silently lose data or
    keep it forever, and neither should happen by a typo.
    """
    found: dict[str, int] = {}
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        table, sep, duration = item.partition(":")
        table = table.strip().lower()
        if not sep or not table or not duration.strip():
            raise SettingsError(
                f"invalid KLINETRIO_RETENTION entry {item!r}; expected table:duration, e.g. candles:400d"
            )
        if table not in tables:
            raise SettingsError(
                f"invalid KLINETRIO_RETENTION entry {item!r}: unknown table {table!r}; "
                f"expected one of {', '.join(sorted(tables))}"
            )
        if table in found:
            raise SettingsError(f"invalid KLINETRIO_RETENTION: {table} is named twice")
        try:
            ms = parse_duration_ms(duration)
        except SettingsError as exc:
            raise SettingsError(f"invalid KLINETRIO_RETENTION entry {item!r}: {exc}") from None
        if ms <= 0:
            raise SettingsError(
                f"invalid KLINETRIO_RETENTION entry {item!r}: the duration must be positive"
            )
        found[table] = ms
    return tuple(found.items())
