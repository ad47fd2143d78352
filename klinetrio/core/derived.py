"""Derived intervals (``KLINETRIO_DERIVED_INTERVALS``): candles Binance does not offer, built from
finer collected ones.

A derived interval is a count and a unit (``s m h d w``; calendar months are not derived). Its
buckets follow Binance's own conventions, so that a derived ``1h``, ``3d`` or ``1w`` opens exactly
where Binance's does:

- whole weeks (unit ``w``) open on Mondays, like ``1w``;
- lengths that are whole multiples of three days open on day numbers ≡ 1 (mod 3), like ``3d``;
- everything else opens on multiples of its length since 1970-01-01, like every interval of up
  to a day.

A source interval can build a derived one when every derived bucket is an exact union of source
buckets: the length divides, and the two alignments agree. The finest such collected interval is
chosen. Pure arithmetic, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from klinetrio.core.intervals import DAY_MS, Interval
from klinetrio.errors import SettingsError

_NAME = re.compile(r"^\s*0*(\d+)\s*([smhdwM])\s*$")
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": DAY_MS, "w": 7 * DAY_MS}
# Origins, in ms since the epoch: 1970-01-05 was a Monday; 1970-01-02 is day 1.
MONDAY_ORIGIN_MS = 4 * DAY_MS
THREE_DAY_ORIGIN_MS = DAY_MS


@dataclass(frozen=True, slots=True)
class DerivedInterval:
    """One derived interval: its name (``10m``), bucket length and origin in milliseconds."""

    name: str
    length_ms: int
    origin_ms: int

    @classmethod
    def parse(cls, text: str) -> DerivedInterval:
        match = _NAME.match(text)
        if not match or int(match[1]) == 0:
            raise SettingsError(
                f"invalid derived interval {text.strip()!r}; expected a count and a unit "
                "(s, m, h, d, w), e.g. 2m, 10m, 45m, 2d"
            )
        count, unit = int(match[1]), match[2]
        if unit == "M":
            raise SettingsError(
                f"invalid derived interval {text.strip()!r}: calendar months cannot be derived; "
                "collect 1M instead"
            )
        length = count * _UNIT_MS[unit]
        if unit == "w":
            origin = MONDAY_ORIGIN_MS
        elif length % (3 * DAY_MS) == 0:
            origin = THREE_DAY_ORIGIN_MS
        else:
            origin = 0
        return cls(f"{count}{unit}", length, origin)

    @property
    def view(self) -> str:
        """The name of its view, e.g. ``candles_10m``."""
        return f"candles_{self.name}"

    def floor(self, t_ms: int) -> int:
        """The open time of the bucket that contains ``t_ms``."""
        return t_ms - (t_ms - self.origin_ms) % self.length_ms

    def ceil(self, t_ms: int) -> int:
        start = self.floor(t_ms)
        return start if start == t_ms else start + self.length_ms


def divides(source: Interval, derived: DerivedInterval) -> bool:
    """True when every bucket of ``derived`` is an exact union of ``source`` candles."""
    step = source.fixed_ms
    if step is None or step >= derived.length_ms or derived.length_ms % step:
        return False
    return (derived.origin_ms - source.floor(0)) % step == 0


def choose_source(derived: DerivedInterval, collected: Iterable[str]) -> str:
    """The finest collected interval that builds ``derived``; a SettingsError if none does."""
    usable = [Interval(name) for name in collected if divides(Interval(name), derived)]
    if not usable:
        raise SettingsError(
            f"derived interval {derived.name} cannot be built from the collected intervals "
            f"({', '.join(collected)}): collect one that divides it, e.g. 1m"
        )
    return min(usable, key=lambda i: i.fixed_ms or 0).name


def parse_derived_intervals(text: str, collected: Sequence[str]) -> tuple[str, ...]:
    """The comma list of ``KLINETRIO_DERIVED_INTERVALS``, checked against the collected ones."""
    names: list[str] = []
    lengths: dict[int, str] = {}
    for raw in text.split(","):
        if not raw.strip():
            continue
        derived = DerivedInterval.parse(raw)
        if derived.name in collected:
            raise SettingsError(
                f"derived interval {derived.name} is collected already (KLINETRIO_INTERVALS)"
            )
        if derived.name in names:
            continue
        other = lengths.get(derived.length_ms)
        if other is not None and DerivedInterval.parse(other).origin_ms == derived.origin_ms:
            raise SettingsError(f"derived intervals {other} and {derived.name} are the same")
        choose_source(derived, collected)
        names.append(derived.name)
        lengths[derived.length_ms] = derived.name
    return tuple(names)
