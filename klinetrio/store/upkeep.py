"""The store's upkeep in ``serve``: table sizes, retention (plain PostgreSQL) and daily backups.

One component for the composition root to start (``await nursery.start(upkeep.run, timescale)``)
and one ``statistics()`` for ``/health``. Each part is a task of its own that stands alone
(``SizeMonitor``, ``Retention``, ``Backups``); none touches the intake or the writer: they use
connections and processes of their own, so a slow backup or a long purge never delays a candle.
TimescaleDB does retention itself (policies), so ``Retention`` runs only without it.
"""

from __future__ import annotations

from dataclasses import dataclass

import trio
from loguru import logger

from klinetrio.core.backups import parse_time_of_day
from klinetrio.settings import Settings
from klinetrio.store.backups import Backups, BackupStatistics
from klinetrio.store.retention import Retention, RetentionStatistics
from klinetrio.store.sizes import SizeMonitor, TableSize


@dataclass(frozen=True, slots=True)
class UpkeepStatistics:
    tables: tuple[TableSize, ...] = ()
    tables_measured_at: str | None = None
    backup: BackupStatistics | None = None
    retention: RetentionStatistics | None = None


class StoreUpkeep:
    def __init__(self, settings: Settings, *, database_url: str) -> None:
        self.sizes = SizeMonitor(database_url)
        self.backups: Backups | None = None
        if settings.backup_dir is not None:
            self.backups = Backups(
                database_url,
                settings.backup_dir,
                at=parse_time_of_day(settings.backup_at),
                embedded=settings.database_url is None,
            )
        self._retention = settings.retention
        self._url = database_url
        self.retention: Retention | None = None

    def statistics(self) -> UpkeepStatistics:
        sizes = self.sizes.statistics()
        return UpkeepStatistics(
            sizes.tables,
            sizes.measured_at,
            None if self.backups is None else self.backups.statistics(),
            None if self.retention is None else self.retention.statistics(),
        )

    async def run(
        self, timescale: bool, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run until cancelled; started once each part is (the backup directory usable)."""
        with logger.contextualize(component="upkeep"):
            async with trio.open_nursery() as nursery:
                await nursery.start(self.sizes.run)
                if self._retention and not timescale:
                    self.retention = Retention(self._url, self._retention)
                    await nursery.start(self.retention.run)
                if self.backups is not None:
                    await nursery.start(self.backups.run)
                task_status.started()
