"""The ``klinetrio`` command: serve, backfill, import, coverage, backup, restore, export,
simulate, db-url, db-stop.

Every error a user can cause ends with one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from loguru import logger

from klinetrio import __version__, cli_coverage, cli_store
from klinetrio.binance.markets import market_named
from klinetrio.core.models import parse_utc_ms
from klinetrio.core.universe import parse_selector
from klinetrio.errors import KlinetrioError, SettingsError
from klinetrio.logs import configure_logging
from klinetrio.settings import Settings, load_settings, redact_url

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_SERVE_EXAMPLES = """\
examples:
  klinetrio serve
  klinetrio serve --symbols btcusdt,ethusdt --intervals 1m,1h
  KLINETRIO_DATABASE_URL=postgresql://localhost/market klinetrio serve
  klinetrio serve --ws-url ws://127.0.0.1:9650 --rest-url http://127.0.0.1:9650   # against `klinetrio simulate`
"""

_BACKFILL_EXAMPLES = """\
examples:
  klinetrio backfill --symbol BTCUSDT --interval 1m --start 2024-01-01 --end 2024-02-01
  klinetrio backfill --symbol btcusdt,ethusdt --interval 1h,1d --start 2023-01-01
  klinetrio backfill --symbol BTCUSDT --interval 1m --start 2020 --source archive
"""

_IMPORT_EXAMPLES = """\
examples:
  klinetrio import ~/binance-data/data/spot/monthly/klines/BTCUSDT/1m
  klinetrio import BTCUSDT-1m-2024-01.zip BTCUSDT-1m-2024-02.zip
  klinetrio import --market usdm ~/binance-data/data/futures/um
"""

_SIMULATE_EXAMPLES = """\
examples:
  klinetrio simulate --port 9650
  klinetrio simulate --port 9650 --speed 60 --symbols BTCUSDT,ETHUSDT
  klinetrio simulate --port 9650 --data ../shared/data/vision/spot --speed 3600
"""


_DB_URL_EXAMPLES = """\
examples:
  klinetrio db-url
  psql "$(klinetrio db-url)" -c "SELECT symbol, interval, count(*) FROM candles GROUP BY 1, 2"
"""

_DB_STOP_EXAMPLES = """\
examples:
  klinetrio db-stop
  klinetrio db-stop --force
"""

_MAIN_EXAMPLES = """\
examples:
  klinetrio serve --symbols btcusdt,ethusdt --intervals 1m,1h
  klinetrio backfill --symbol BTCUSDT --interval 1m --start 2024-01-01 --end 2024-02-01
  klinetrio import ~/binance-data/data/spot
  klinetrio coverage --symbol BTCUSDT --interval 1h
  klinetrio simulate --port 9650 --speed 60
  klinetrio backup --dir /var/backups/klinetrio
  klinetrio export --symbol BTCUSDT --interval 1h --start 2024 --out btc-1h.parquet
  psql "$(klinetrio db-url)"

Run `klinetrio COMMAND --help` for a command's flags.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _settings_flags(parser: argparse.ArgumentParser, *, streams: bool = True) -> None:
    group = parser.add_argument_group("settings (override KLINETRIO_* variables and .env)")
    group.add_argument(
        "--database-url", metavar="URL", help="postgresql:// URL (default: an embedded PostgreSQL)"
    )
    group.add_argument("--data-dir", metavar="DIR", help="where the embedded database lives")
    if streams:
        group.add_argument(
            "--symbols", metavar="LIST", help="comma-separated symbols, any case (default btcusdt)"
        )
        group.add_argument(
            "--intervals", metavar="LIST", help="comma-separated intervals (default 1m)"
        )
        group.add_argument("--ws-url", metavar="URL", help="WebSocket base URL")
        group.add_argument(
            "--http-addr", metavar="HOST:PORT", help="where /health, /ready, /live, /metrics listen"
        )
        group.add_argument(
            "--sync-lookback",
            metavar="DURATION",
            help="history to fill when the table is empty, e.g. 1d",
        )
    group.add_argument("--rest-url", metavar="URL", help="REST base URL")
    group.add_argument(
        "--archive-url", metavar="URL", help="bulk archives base URL (data.binance.vision)"
    )
    group.add_argument(
        "--log-level", metavar="LEVEL", help="TRACE, DEBUG, INFO (default), WARNING, ERROR"
    )
    group.add_argument("--log-format", choices=("text", "json"), help="text (default) or json")


def _store_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("the store over years (override KLINETRIO_* variables)")
    group.add_argument(
        "--compress-after",
        metavar="DURATION",
        help="TimescaleDB compresses chunks older than this (default 7d; off for none)",
    )
    group.add_argument(
        "--retention",
        metavar="SPEC",
        help="table:duration,... e.g. candles:400d (default: keep all)",
    )
    group.add_argument(
        "--derived-intervals",
        metavar="LIST",
        help="intervals built from finer collected candles, e.g. 2m,10m,45m,2d",
    )
    group.add_argument("--backup-dir", metavar="DIR", help="daily backups go here (default: none)")
    group.add_argument(
        "--backup-at", metavar="HH:MM", help="UTC time of the daily backup (default 00:00)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="klinetrio",
        description="Keeps a PostgreSQL/TimescaleDB table of Binance candles complete, exact and current.",
        epilog=_MAIN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"klinetrio {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    serve = commands.add_parser(
        "serve",
        help="collect live candles and fill every gap, until SIGINT/SIGTERM",
        description="Collect closed candles from Binance's WebSocket streams into the candles table, "
        "filling every gap from REST, until SIGINT/SIGTERM.",
        epilog=_SERVE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _settings_flags(serve)
    _store_flags(serve)

    backfill = commands.add_parser(
        "backfill",
        help="fetch history for a date range (idempotent)",
        description="Fetch the closed candles of a date range into the candles table: whole "
        "months and days from the public archives (checksums verified), the rest from REST. "
        "Running it twice changes nothing.",
        epilog=_BACKFILL_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    backfill.add_argument(
        "--symbol",
        "--symbols",
        dest="symbols",
        required=True,
        metavar="LIST",
        help="symbol(s), comma-separated",
    )
    backfill.add_argument(
        "--interval",
        "--intervals",
        dest="intervals",
        required=True,
        metavar="LIST",
        help="interval(s), comma-separated",
    )
    backfill.add_argument(
        "--start",
        required=True,
        metavar="TIME",
        help="UTC date or datetime, inclusive (2024-01-01, 2024-01-01T12:00)",
    )
    backfill.add_argument(
        "--end", metavar="TIME", help="UTC date or datetime, exclusive (default: now)"
    )
    backfill.add_argument(
        "--source",
        default="auto",
        metavar="auto|archive|rest",
        help="auto (default): archives, then REST for what they lack; archive or rest: only that",
    )
    backfill.add_argument(
        "--market",
        metavar="spot|usdm|coinm",
        help="the market of symbols given without one (default spot); usdm:btcusdt names its own",
    )
    backfill.add_argument(
        "--no-progress", action="store_true", help="plain progress lines even on a terminal"
    )
    _settings_flags(backfill, streams=False)

    importer = commands.add_parser(
        "import",
        help="store local data.binance.vision kline files (zips or CSVs)",
        description="Store local data.binance.vision kline files, or folders of them, in the "
        "candles table. Symbol, interval and period come from each file name; a .CHECKSUM beside "
        "a file is verified first. Running it twice changes nothing.",
        epilog=_IMPORT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    importer.add_argument("paths", nargs="+", metavar="PATH", help="files or folders")
    importer.add_argument(
        "--market",
        default="spot",
        metavar="spot|usdm|coinm",
        help="the market the files are of (default spot; futures files say so in their path)",
    )
    importer.add_argument(
        "--no-progress", action="store_true", help="plain progress lines even on a terminal"
    )
    group = importer.add_argument_group("settings (override KLINETRIO_* variables and .env)")
    group.add_argument(
        "--database-url", metavar="URL", help="postgresql:// URL (default: an embedded PostgreSQL)"
    )
    group.add_argument("--data-dir", metavar="DIR", help="where the embedded database lives")
    group.add_argument(
        "--log-level", metavar="LEVEL", help="TRACE, DEBUG, INFO (default), WARNING, ERROR"
    )
    group.add_argument("--log-format", choices=("text", "json"), help="text (default) or json")

    simulate = commands.add_parser(
        "simulate",
        help="run a local fake Binance (WebSocket + REST) for demos and tests",
        description="A local fake Binance on one port: /stream, /ws, /api/v3/klines, /api/v3/time, "
        "/api/v3/exchangeInfo, /api/v3/ping, with a faster clock and fault injection.",
        epilog=_SIMULATE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from klinetrio import simulate as simulator

    simulator.add_arguments(simulate)
    simulate.add_argument("--log-level", metavar="LEVEL", default="INFO")

    cli_store.add_commands(commands)
    cli_coverage.add_command(commands)

    db_url = commands.add_parser(
        "db-url",
        help="print the URL of the database in use (starts the embedded one if needed)",
        description='Print the URL of the database klinetrio uses, e.g. psql "$(klinetrio db-url)". '
        "With no KLINETRIO_DATABASE_URL this is the embedded PostgreSQL, started if it is down "
        "(it then stays up until `klinetrio db-stop`).",
        epilog=_DB_URL_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    db_url.add_argument("--database-url", metavar="URL", help=argparse.SUPPRESS)
    db_url.add_argument("--data-dir", metavar="DIR", help="where the embedded database lives")
    db_stop = commands.add_parser(
        "db-stop",
        help="stop the embedded PostgreSQL",
        description="Stop the embedded PostgreSQL that `klinetrio db-url` left running. While "
        "serve or backfill use it, it stays up (the last of them stops it) unless --force.",
        epilog=_DB_STOP_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    db_stop.add_argument("--data-dir", metavar="DIR", help="where the embedded database lives")
    db_stop.add_argument(
        "--force", action="store_true", help="stop it even while klinetrio processes use it"
    )
    return parser


def _overrides(args: argparse.Namespace, names: Sequence[str]) -> dict[str, str | None]:
    return {name: getattr(args, name, None) for name in names}


_SETTING_FLAGS = (
    "database_url",
    "data_dir",
    "symbols",
    "intervals",
    "ws_url",
    "rest_url",
    "archive_url",
    "http_addr",
    "sync_lookback",
    "log_level",
    "log_format",
    "compress_after",
    "retention",
    "derived_intervals",
    "backup_dir",
    "backup_at",
)


def _run_serve(settings: Settings) -> int:
    import trio

    from klinetrio.collector import serve
    from klinetrio.store.embedded import database_for

    with database_for(settings) as url:
        unwritten = trio.run(lambda: serve(settings, database_url=url))
    # The writer could not commit everything it held before the drain deadline (the one line
    # saying so is in the log): the candles are healed at the next start, but say so in the
    # exit status too.
    return EXIT_ERROR if unwritten else 0


def _backfill_symbols(text: str, market: str | None) -> str:
    """``--symbol btcusdt,coinm:btcusd_perp --market usdm`` → the entries, each with a market;
    a glob is refused (backfill names what it fetches)."""
    name = "spot" if market is None else market_named(market).name
    entries = []
    for raw in text.split(","):
        if not raw.strip():
            continue
        selector = parse_selector(raw if ":" in raw else f"{name}:{raw}")
        if selector.is_glob:
            raise SettingsError(
                f"backfill takes symbol names, not patterns: {raw.strip()!r}; serve collects globs"
            )
        entries.append(str(selector))
    return ",".join(entries)


def _run_backfill(settings: Settings, args: argparse.Namespace) -> int:
    import trio

    from klinetrio.backfills import backfill
    from klinetrio.core.planner import MODES, Mode

    modes: dict[str, Mode] = {mode: mode for mode in MODES}
    source = modes.get(str(args.source).strip().lower())
    if source is None:
        raise SettingsError(f"invalid --source {args.source!r}; expected auto, archive or rest")
    start = parse_utc_ms(args.start, "--start")
    end = None if args.end is None else parse_utc_ms(args.end, "--end")
    if end is not None and end <= start:
        raise SettingsError("--end must be after --start")
    keys = settings.stream_keys
    progress_bar = sys.stderr.isatty() and not args.no_progress
    from klinetrio.store.embedded import database_for

    with database_for(settings) as url:
        trio.run(
            lambda: backfill(
                settings,
                database_url=url,
                keys=keys,
                start_ms=start,
                end_ms=end,
                progress_bar=progress_bar,
                source=source,
            )
        )
    return 0


def _run_import(settings: Settings, args: argparse.Namespace) -> int:
    import trio

    from klinetrio.importer import collect, import_files, validate_market

    progress_bar = sys.stderr.isatty() and not args.no_progress
    market = validate_market(str(args.market))
    collect(args.paths)  # a bad path fails here, before a database is started
    from klinetrio.store.embedded import database_for

    with database_for(settings) as url:
        trio.run(
            lambda: import_files(
                args.paths, database_url=url, market=market, progress_bar=progress_bar
            )
        )
    return 0


def _run_simulate(args: argparse.Namespace) -> int:
    import trio

    from klinetrio import simulate as simulator

    config = simulator.config_from_args(args)

    async def main() -> None:
        import signal

        async with trio.open_nursery() as nursery:
            await nursery.start(simulator.serve_simulator, config)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    logger.info("simulator stopping")
                    nursery.cancel_scope.cancel()
                    break

    trio.run(main)
    return 0


def _run_db_url(settings: Settings) -> int:
    if settings.database_url is not None:
        print(settings.database_url)
        return 0
    from klinetrio.store.embedded import ensure_running, running_url

    was_running = running_url(settings.data_dir) is not None
    url = ensure_running(settings.data_dir)
    if not was_running:
        print(
            "klinetrio: started the embedded PostgreSQL; `klinetrio db-stop` stops it",
            file=sys.stderr,
        )
    print(url)
    return 0


def _run_db_stop(settings: Settings, force: bool) -> int:
    from klinetrio.store.embedded import stop

    if stop(settings.data_dir, force=force):
        print("klinetrio: embedded PostgreSQL stopped", file=sys.stderr)
    else:
        print("klinetrio: embedded PostgreSQL was not running", file=sys.stderr)
    return 0


def _user_error(group: BaseExceptionGroup[BaseException]) -> KlinetrioError | None:
    """The first KlinetrioError in a (nested) exception group, if any."""
    for exc in group.exceptions:
        if isinstance(exc, KlinetrioError):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _user_error(exc)
            if found is not None:
                return found
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "simulate":
            configure_logging(str(args.log_level).upper())
            return _run_simulate(args)
        if args.command == "backfill":
            args.symbols = _backfill_symbols(str(args.symbols), args.market)
        settings = load_settings(_overrides(args, _SETTING_FLAGS))
        configure_logging(settings.log_level, settings.log_format)
        if settings.database_url is not None:
            logger.debug("database {url}", url=redact_url(settings.database_url))
        if args.command == "serve":
            return _run_serve(settings)
        if args.command == "backfill":
            return _run_backfill(settings, args)
        if args.command == "coverage":
            return cli_coverage.run(settings, args)
        if args.command in cli_store.COMMANDS:
            return cli_store.run(args.command, settings, args)
        if args.command == "import":
            return _run_import(settings, args)
        if args.command == "db-url":
            return _run_db_url(settings)
        if args.command == "db-stop":
            return _run_db_stop(settings, args.force)
    except KlinetrioError as exc:
        print(f"klinetrio: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BaseExceptionGroup as group:
        # Trio groups what tasks raise; a user's error inside one is still one line.
        cause = _user_error(group)
        if cause is None:
            raise
        print(f"klinetrio: error: {cause}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("klinetrio: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    parser.error(f"unknown command {args.command!r}")


if __name__ == "__main__":
    sys.exit(main())
