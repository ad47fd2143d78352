"""Durations as people write them in settings: ``90m``, ``2h``, ``1d``, ``4w``."""

from __future__ import annotations

import re

from klinetrio.errors import SettingsError

_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d|w)\s*$")
UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_duration_ms(text: str) -> int:
    """``0s``, ``90m``, ``2h``, ``1d``, ``4w`` → milliseconds."""
    match = _DURATION.match(text)
    if not match:
        raise SettingsError(
            f"invalid duration {text!r}; use a number and a unit, e.g. 90m, 2h, 1d, 4w"
        )
    return int(match[1]) * UNIT_MS[match[2]]


def format_duration_ms(ms: int) -> str:
    """The shortest exact spelling: 604800000 → ``1w``, 5400000 → ``90m``."""
    for unit in ("w", "d", "h", "m", "s"):
        if ms and ms % UNIT_MS[unit] == 0:
            return f"{ms // UNIT_MS[unit]}{unit}"
    return f"{ms}ms"


def postgres_interval(ms: int) -> str:
    """An exact PostgreSQL interval literal, e.g. ``7 days`` or ``90 minutes``."""
    for unit, name in (("d", "days"), ("h", "hours"), ("m", "minutes"), ("s", "seconds")):
        if ms and ms % UNIT_MS[unit] == 0:
            return f"{ms // UNIT_MS[unit]} {name}"
    return f"{ms} milliseconds"
