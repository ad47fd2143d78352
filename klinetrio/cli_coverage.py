"""``klinetrio coverage``: how complete the store is, series by series, provably.

Part of the ``klinetrio`` command (``cli.py`` builds the parser and prints errors). For every
stored series matching the filters it prints first, last, expected, present, holes (confirmed
empty by the exchange), missing and complete %, then the missing ranges; ``--json`` prints the
numbers of ``/api/coverage`` instead. Stored aggregate trades follow (``--interval aggTrade``
for them alone): ids expected, present and missing per symbol and UTC day, and the missing id
ranges (see ``store.trade_coverage``). The exit status is for cron and CI: 0 when nothing is
missing, 3 when something is.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import msgspec

from klinetrio.core.coverage import Coverage, as_json, summary
from klinetrio.core.intervals import Interval
from klinetrio.core.models import format_ms, parse_utc_ms, plural
from klinetrio.errors import SchemaMissing, SettingsError
from klinetrio.settings import Settings
from klinetrio.store.trade_coverage import TradeCoverage, trades_json, trades_summary

EXIT_MISSING = 3
# Missing ranges listed per series in the table (all of them are in --json).
RANGES_SHOWN = 10

_EXAMPLES = """\
examples:
  klinetrio coverage
  klinetrio coverage --symbol BTCUSDT --interval 1h --start 2023-01 --end 2023-06
  klinetrio coverage --market usdm --json | jq '.summary'
  klinetrio coverage --symbol PEPEUSDT --interval aggTrade   # trades by id, per day
  klinetrio coverage || alert "candles missing"      # exit 3 when something is missing
"""


def add_command(commands: Any) -> None:
    from klinetrio.cli_store import _database_flags

    parser = commands.add_parser(
        "coverage",
        help="how complete each stored series is (exit 3 when candles are missing)",
        description="For every stored series: first and last candle, the candles Binance's "
        "interval arithmetic expects, those present, those in ranges the exchange confirmed "
        "empty, the missing ones and complete %. Without --start/--end a series is measured "
        "from its first to its newest stored candle; a delisted symbol always ends with its "
        "newest. Stored aggregate trades follow: ids expected, present and missing per symbol "
        "and day (--interval aggTrade for them alone). Exit status 0 when nothing is missing, "
        "3 when something is.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--symbol", "--symbols", dest="series_symbols", metavar="LIST", default="")
    parser.add_argument(
        "--interval", "--intervals", dest="series_intervals", metavar="LIST", default=""
    )
    parser.add_argument("--start", metavar="TIME", help="UTC date or time, inclusive")
    parser.add_argument("--end", metavar="TIME", help="UTC date or time, exclusive")
    parser.add_argument("--market", choices=("spot", "usdm", "coinm"), help="default: all")
    parser.add_argument("--json", action="store_true", help="the numbers as JSON")
    _database_flags(parser)


def _when(t_ms: int | None) -> str:
    return "-" if t_ms is None else format_ms(t_ms)


def print_columns(
    header: tuple[str, ...], rows: Sequence[tuple[str, ...]], out: TextIO, left: int = 3
) -> None:
    """A table in columns: the first ``left`` ones aligned left (names, times), the numbers
    right."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row[:left], widths[:left], strict=True)]
        cells += [cell.rjust(width) for cell, width in zip(row[left:], widths[left:], strict=True)]
        print("  ".join(cells).rstrip(), file=out)


def print_table(report: list[Coverage], out: TextIO) -> None:
    header = ("series", "first", "last", "expected", "present", "holes", "missing", "complete")
    rows = [
        (
            f"{c.market} {c.symbol} {c.interval}",
            _when(c.first),
            _when(c.last),
            f"{c.expected:,}",
            f"{c.present:,}",
            f"{c.holes:,}",
            f"{c.missing:,}",
            f"{c.complete_pct:.2f} %" if c.missing else "100 %",
        )
        for c in report
    ]
    print_columns(header, rows, out)
    for c in report:
        if not c.missing_ranges:
            continue
        print(
            f"\n{c.market} {c.symbol} {c.interval}: {plural(c.missing, 'candle')} missing", file=out
        )
        interval = Interval.parse(c.interval)
        for r in c.missing_ranges[:RANGES_SHOWN]:
            last = _when(interval.floor(r.end - 1))
            span = _when(r.start) if r.count == 1 else f"{_when(r.start)} .. {last}"
            print(f"  {span}  ({plural(r.count, 'candle')})", file=out)
        if len(c.missing_ranges) > RANGES_SHOWN:
            more = len(c.missing_ranges) - RANGES_SHOWN
            print(f"  ... and {plural(more, 'more range')} (--json lists all)", file=out)
    total = summary(report)
    print(
        f"\n{plural(int(total['series']), 'series')}: {int(total['missing']):,} missing,"
        f" {int(total['holes']):,} in confirmed holes, {total['complete_pct']} % complete",
        file=out,
    )


def print_trades(report: list[TradeCoverage], out: TextIO) -> None:
    """Per symbol its totals, then each day that misses ids and the first missing ranges."""
    header = ("trades", "first day", "last day", "expected", "present", "missing", "complete")
    rows = []
    for c in report:
        pct = 100.0 * c.present / c.expected if c.expected else 100.0
        rows.append(
            (
                f"{c.market} {c.symbol}",
                c.days[0].day,
                c.days[-1].day,
                f"{c.expected:,}",
                f"{c.present:,}",
                f"{c.missing:,}",
                f"{pct:.4f} %" if c.missing else "100 %",
            )
        )
    print(file=out)
    print_columns(header, rows, out)
    for c in report:
        if not c.missing:
            continue
        print(f"\n{c.market} {c.symbol}: {plural(c.missing, 'trade')} missing", file=out)
        for d in c.days:
            if d.missing:
                print(f"  {d.day}  {d.missing:,} of {d.expected:,} ids", file=out)
        for first, last in c.missing_ranges[:RANGES_SHOWN]:
            span = f"id {first}" if first == last else f"ids {first} .. {last}"
            print(f"  {span}  ({plural(last - first + 1, 'trade')})", file=out)
        if len(c.missing_ranges) > RANGES_SHOWN:
            more = len(c.missing_ranges) - RANGES_SHOWN
            print(f"  ... and {plural(more, 'more range')} (--json lists them)", file=out)
    total = trades_summary(report)
    print(
        f"\n{plural(int(total['symbols']), 'symbol')} of trades: {int(total['missing']):,}"
        f" missing, {total['complete_pct']} % complete",
        file=out,
    )


TRADE_NAMES = {"aggtrade", "aggtrades", "trades"}


def run(settings: Settings, args: argparse.Namespace) -> int:
    from klinetrio.store import reads
    from klinetrio.store.database import READ_TIMEOUT_S, Database
    from klinetrio.store.embedded import database_for
    from klinetrio.store.trade_coverage import trade_coverage

    symbols = [s.strip().upper() for s in args.series_symbols.split(",") if s.strip()]
    names = [i.strip() for i in args.series_intervals.split(",") if i.strip()]
    with_trades = not names or any(n.lower() in TRADE_NAMES for n in names)
    intervals = [Interval.parse(i).name for i in names if i.lower() not in TRADE_NAMES]
    with_candles = not names or bool(intervals)
    start = None if args.start is None else parse_utc_ms(args.start, "--start")
    end = None if args.end is None else parse_utc_ms(args.end, "--end")
    if start is not None and end is not None and end <= start:
        raise SettingsError("--end must be after --start")
    with database_for(settings) as url:
        database = Database(url, statement_timeout_s=READ_TIMEOUT_S)
        try:
            report = []
            if with_candles:
                report = database.call(
                    "measuring coverage",
                    reads.coverage_report,
                    market=args.market,
                    symbols=symbols,
                    intervals=intervals,
                    start_ms=start,
                    end_ms=end,
                )
            trades: list[TradeCoverage] = []
            if with_trades:
                trades = database.call(
                    "measuring trade coverage",
                    trade_coverage,
                    market=args.market,
                    symbols=symbols,
                    start_ms=start,
                    end_ms=end,
                )
        except SchemaMissing:
            raise SettingsError("no candles are stored in this database yet") from None
        finally:
            database.close()
    if not report and not trades:
        raise SettingsError("no stored series match; `klinetrio coverage` with no filter lists all")
    if args.json:
        body: dict[str, object] = {
            "summary": summary(report),
            "series": [as_json(c) for c in report],
        }
        if trades:
            body["trades"] = {
                "summary": trades_summary(trades),
                "symbols": [trades_json(c) for c in trades],
            }
        sys.stdout.buffer.write(msgspec.json.format(msgspec.json.encode(body), indent=1))
        sys.stdout.buffer.write(b"\n")
    else:
        if report:
            print_table(report, sys.stdout)
        if trades:
            print_trades(trades, sys.stdout)
    missing = any(c.missing for c in report) or any(c.missing for c in trades)
    return EXIT_MISSING if missing else 0


__all__ = ["EXIT_MISSING", "add_command", "print_table", "print_trades", "run"]
