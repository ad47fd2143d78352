"""The commands that take data out and back: ``backup``, ``restore`` and ``export``.

Part of the ``klinetrio`` command (``cli.py`` builds the parser and prints errors); each runner
returns an exit status or raises a ``KlinetrioError``, which the CLI prints as one line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from klinetrio.core.models import parse_utc_ms
from klinetrio.errors import SettingsError
from klinetrio.settings import Settings, redact_url

COMMANDS = ("backup", "restore", "export")


_BACKUP_EXAMPLES = """\
examples:
  klinetrio backup                       # into KLINETRIO_BACKUP_DIR, or <data dir>/backups
  klinetrio backup --dir /var/backups/klinetrio
  klinetrio restore /var/backups/klinetrio/klinetrio-20240101T000000Z.dump --database-url postgresql://localhost/fresh
"""

_RESTORE_EXAMPLES = """\
examples:
  createdb fresh && klinetrio restore klinetrio-20240101T000000Z.dump --database-url postgresql://localhost/fresh
  klinetrio restore klinetrio-20240101T000000Z.dump --data-dir /tmp/new   # a new embedded database
"""

_EXPORT_EXAMPLES = """\
examples:
  klinetrio export --symbol BTCUSDT --interval 1m --start 2024-01-01 --end 2024-02-01 --out btc-1m.csv
  klinetrio export --symbol BTCUSDT --interval 1h --start 2024 --format parquet --out btc-1h.parquet
  klinetrio export --symbol ETHUSDT --interval 10m --start 2024-03-01 --out -   # a derived interval, to stdout
"""


def _database_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (override KLINETRIO_* variables and .env)")
    group.add_argument(
        "--database-url", metavar="URL", help="postgresql:// URL (default: the embedded PostgreSQL)"
    )
    group.add_argument("--data-dir", metavar="DIR", help="where the embedded database lives")
    group.add_argument(
        "--log-level", metavar="LEVEL", help="TRACE, DEBUG, INFO (default), WARNING, ERROR"
    )
    group.add_argument("--log-format", choices=("text", "json"), help="text (default) or json")


def add_commands(commands: Any) -> None:
    """Add backup, restore and export to the CLI's subcommands."""
    backup = commands.add_parser(
        "backup",
        help="write a pg_dump backup of the database",
        description="Write klinetrio-YYYYMMDDTHHMMSSZ.dump (pg_dump custom format, made by the "
        "server's own major version of pg_dump) and print its path.",
        epilog=_BACKUP_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    backup.add_argument(
        "--dir",
        metavar="DIR",
        help="where to write it (default: KLINETRIO_BACKUP_DIR or <data dir>/backups)",
    )
    _database_flags(backup)
    restore = commands.add_parser(
        "restore",
        help="restore a backup into an empty database",
        description="Restore a `klinetrio backup` file into the configured database, which must "
        "be empty (TimescaleDB's pre- and post-restore steps included).",
        epilog=_RESTORE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    restore.add_argument("file", metavar="FILE", help="a klinetrio-*.dump file")
    _database_flags(restore)
    export = commands.add_parser(
        "export",
        help="write one series' candles to CSV or Parquet",
        description="Stream the candles of one series, collected or derived, to a CSV file in "
        "data.binance.vision's column order (with a header) or to Parquet (exact decimals).",
        epilog=_EXPORT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("--symbol", required=True, metavar="SYMBOL", help="e.g. BTCUSDT")
    export.add_argument(
        "--interval", required=True, metavar="INTERVAL", help="e.g. 1m, or a derived one"
    )
    export.add_argument(
        "--start", required=True, metavar="TIME", help="UTC date or datetime, inclusive"
    )
    export.add_argument(
        "--end", metavar="TIME", help="UTC date or datetime, exclusive (default: all)"
    )
    export.add_argument(
        "--format", choices=("csv", "parquet"), help="default: parquet for *.parquet, else csv"
    )
    export.add_argument(
        "--out", required=True, metavar="FILE", help="the file to write; - for stdout (CSV)"
    )
    export.add_argument("--market", default="spot", choices=("spot", "usdm", "coinm"))
    _database_flags(export)


def _run_backup(settings: Settings, args: argparse.Namespace) -> int:
    from datetime import UTC, datetime
    from pathlib import Path

    from klinetrio.core.backups import backup_name
    from klinetrio.errors import BackupError
    from klinetrio.store.dump import backup_to

    directory = Path(args.dir or settings.backup_dir or Path(settings.data_dir) / "backups")
    try:
        directory.expanduser().mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackupError(f"cannot use backup directory {directory}: {exc.strerror}") from None
    out = directory.expanduser() / backup_name(datetime.now(UTC))
    with _database(settings) as url:
        size = backup_to(url, out, embedded=settings.database_url is None)
    print(out)
    print(f"klinetrio: backup written: {out} ({size:,} bytes)", file=sys.stderr)
    return 0


def _run_restore(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from klinetrio.store.dump import restore_from

    file = Path(args.file).expanduser()
    with _database(settings) as url:
        restore_from(url, file, embedded=settings.database_url is None)
        print(f"klinetrio: restored {file} into {redact_url(url)}", file=sys.stderr)
    return 0


def _run_export(settings: Settings, args: argparse.Namespace) -> int:
    from klinetrio.core.derived import DerivedInterval
    from klinetrio.core.intervals import INTERVALS
    from klinetrio.core.models import StreamKey
    from klinetrio.settings import parse_symbols
    from klinetrio.store.export import export

    symbols = parse_symbols(args.symbol)
    if len(symbols) != 1:
        raise SettingsError("export takes one --symbol")
    interval = args.interval.strip()
    if interval not in INTERVALS:
        interval = DerivedInterval.parse(interval).name
    start = parse_utc_ms(args.start, "--start")
    end = None if args.end is None else parse_utc_ms(args.end, "--end")
    if end is not None and end <= start:
        raise SettingsError("--end must be after --start")
    fmt = args.format or ("parquet" if str(args.out).endswith((".parquet", ".pq")) else "csv")
    key = StreamKey(symbols[0], interval, args.market)
    with _database(settings) as url:
        count = export(url, key, start, end, fmt=fmt, out=args.out)
    where = "stdout" if args.out == "-" else args.out
    print(f"klinetrio: exported {count:,} candles of {key} to {where}", file=sys.stderr)
    return 0


def run(command: str, settings: Settings, args: argparse.Namespace) -> int:
    runner = {"backup": _run_backup, "restore": _run_restore, "export": _run_export}[command]
    return runner(settings, args)


@contextmanager
def _database(settings: Settings) -> Iterator[str]:
    from klinetrio.store.embedded import database_for

    with database_for(settings) as url:
        yield url
