"""The coverage of the collected series over the look-back, for ``/health``.

``CoverageMonitor.run`` measures every ``every_s`` seconds, through the API's read-only
``StoreReader``, the coverage of every series the collector collects over the sync look-back
(``KLINETRIO_SYNC_LOOKBACK``) that ends with the series' newest stored candle: what is missing
inside it is lost or not yet healed, while a series that stopped arriving shows in the
connections' figures, not here. That needs no clock (the exchange's time is a stream's or
REST's to tell). A series with nothing stored is named in ``empty``. ``statistics()`` is the
last summary, so ``/health`` reads a snapshot and never waits on the database; a measurement
that fails keeps the last summary and says why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import msgspec
import trio
from loguru import logger

from klinetrio.core.coverage import summary
from klinetrio.core.intervals import Interval
from klinetrio.core.models import StreamKey
from klinetrio.errors import DatabaseError
from klinetrio.store import reads
from klinetrio.store.reader import StoreReader

EVERY_S = 300.0
# Series named in the summary, those missing the most first.
WORST = 10


class CoverageSummary(msgspec.Struct, frozen=True):
    """Totals over the collected series, each over the look-back up to its newest candle."""

    measured_at: str | None = None
    lookback_s: float = 0.0
    series: int = 0
    expected: int = 0
    present: int = 0
    holes: int = 0
    missing: int = 0
    complete_pct: float = 100.0
    incomplete: dict[str, int] = msgspec.field(default_factory=dict)  # "market SYMBOL i": missing
    empty: tuple[str, ...] = ()  # collected series with nothing stored yet
    last_error: str | None = None


def requests_for(
    keys: Sequence[StreamKey], newest: Sequence[int | None], lookback_ms: int
) -> list[reads.CoverageRequest]:
    """What to measure: each series with candles over the look-back up to its newest one."""
    found = []
    for key, last in zip(keys, newest, strict=True):
        if last is None:
            continue
        interval = Interval.parse(key.interval)
        end = interval.next_open(last)
        start = interval.ceil(end - lookback_ms)
        found.append(reads.CoverageRequest(key.market, key.symbol, key.interval, start, end))
    return found


class CoverageMonitor:
    """See the module doc. ``keys`` is the collector's live list of collected series."""

    def __init__(
        self,
        reader: StoreReader,
        keys: Callable[[], Sequence[StreamKey]],
        lookback_ms: int,
        *,
        every_s: float = EVERY_S,
    ) -> None:
        self._reader = reader
        self._keys = keys
        self._lookback_ms = lookback_ms
        self._every = every_s
        self._summary = CoverageSummary(lookback_s=lookback_ms / 1000)

    def statistics(self) -> CoverageSummary:
        return self._summary

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self.measure()
            await trio.sleep(self._every)

    async def measure(self) -> None:
        keys = list(self._keys())
        names = [(k.market, k.symbol, k.interval) for k in keys]
        try:
            newest = await self._reader.call(
                "finding newest candles", reads.newest_open_times, names
            )
            requests = requests_for(keys, newest, self._lookback_ms)
            report = await self._reader.call("measuring coverage", reads.coverage_of, requests)
        except DatabaseError as exc:
            self._summary = msgspec.structs.replace(self._summary, last_error=str(exc))
            logger.debug("coverage unavailable: {error}", error=exc)
            return
        total = summary(report)
        worst = sorted((c for c in report if c.missing), key=lambda c: -c.missing)[:WORST]
        self._summary = CoverageSummary(
            measured_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            lookback_s=self._lookback_ms / 1000,
            series=int(total["series"]),
            expected=int(total["expected"]),
            present=int(total["present"]),
            holes=int(total["holes"]),
            missing=int(total["missing"]),
            complete_pct=float(total["complete_pct"]),
            incomplete={f"{c.market} {c.symbol} {c.interval}": c.missing for c in worst},
            empty=tuple(
                f"{k.market} {k.symbol} {k.interval}"
                for k, t in zip(keys, newest, strict=True)
                if t is None
            ),
        )


__all__ = ["CoverageMonitor", "CoverageSummary", "requests_for"]
