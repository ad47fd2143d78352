"""The simulator's settings: one frozen struct, the ``klinetrio simulate`` flags that fill it."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import msgspec

from klinetrio.core.models import parse_utc_ms
from klinetrio.core.planner import period_span
from klinetrio.errors import SettingsError

# Update frames of a connection are spread over this many phases (see ``_run_sender``).
UPDATE_SLICES = 20


class SimulatorConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Everything ``klinetrio simulate`` can be told; each field is one command-line flag.

    Times marked *real* are seconds of wall time; everything a client sees (event times,
    ``/api/v3/time``, which candles exist) follows the exchange clock instead.
    """

    host: str = "127.0.0.1"
    port: int = 9650
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")
    start_ms: int | None = None  # None: now (synthetic) or first candle + 1 day (replay)
    speed: float = 1.0
    data_dir: str | None = None
    seed: int = 0
    updates_per_second: float = 1.0  # x=false frames per stream per real second; 0: none
    ping_interval: float = 20.0  # real
    pong_timeout: float = 60.0  # real
    weight_limit: int = 6000
    weight_window: float = 60.0  # real
    drop_after: int | None = None  # abort each connection after N kline frames
    close_after: float | None = None  # real; serverShutdown, then a clean close
    shutdown_grace: float = 0.0  # real seconds between serverShutdown and the close
    drop_spread: float = 0.0  # each connection drops after drop_after x [1 - spread, 1 + spread]
    sent_log: str | None = None  # append "symbol interval open_ms sent_wall_ms" per closed frame
    garbage: float = 0.0  # fraction of kline frames replaced by junk
    duplicates: float = 0.0  # fraction of closed frames sent twice
    no_pong: bool = False  # stop answering client pings
    rest_errors: tuple[tuple[int, float], ...] = ()  # (status, fraction) of REST requests
    archive_corrupt: int = 0  # the first N archive files asked for are served damaged
    archive_missing: tuple[str, ...] = ()  # days (YYYY-MM-DD) or months (YYYY-MM) answering 404
    max_streams: int = 1024
    max_messages_per_second: int = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``simulate`` flags to ``parser``; ``config_from_args`` turns them into a config."""
    d = SimulatorConfig()
    add = parser.add_argument
    add("--host", default=d.host, help="address to listen on (default %(default)s)")
    add("--port", type=int, default=d.port, help="port; 0 picks a free one (default %(default)s)")
    add("--symbols", default=",".join(d.symbols), help="synthetic symbols (default %(default)s)")
    add(
        "--start",
        help="exchange time at start, UTC date or datetime (default: now, or "
        "the first candle of --data + 1 day)",
    )
    add("--speed", type=float, default=d.speed, help="exchange seconds per real second")
    add("--data", metavar="DIR", help="replay data.binance.vision kline CSV/zip files from DIR")
    add("--seed", type=int, default=d.seed, help="seed of synthetic candles and faults")
    add(
        "--updates-per-second",
        type=float,
        default=d.updates_per_second,
        help="unfinished-candle frames per stream per real second (0: closed frames only)",
    )
    add("--ping-interval", type=float, default=d.ping_interval, help="real seconds between pings")
    add(
        "--pong-timeout",
        type=float,
        default=d.pong_timeout,
        help="close a connection whose pong is this late (real seconds)",
    )
    add("--weight-limit", type=int, default=d.weight_limit, help="REST request weight per window")
    add(
        "--weight-window",
        type=float,
        default=d.weight_window,
        help="REST weight window in real seconds",
    )
    add("--drop-after", type=int, metavar="N", help="abort each connection after N kline frames")
    add(
        "--close-after",
        type=float,
        metavar="S",
        help="send serverShutdown and close each connection after S real seconds",
    )
    add(
        "--drop-spread",
        type=float,
        default=d.drop_spread,
        metavar="F",
        help="with --drop-after: each connection drops after N x [1-F, 1+F] frames (0..1)",
    )
    add(
        "--sent-log",
        metavar="FILE",
        help="append one line per closed frame sent: symbol, interval, open time and the wall-clock"
        " ms it left (for measuring latency from the send)",
    )
    add(
        "--shutdown-grace",
        type=float,
        default=d.shutdown_grace,
        metavar="S",
        help="with --close-after: real seconds between serverShutdown and the close",
    )
    add(
        "--garbage",
        type=float,
        default=d.garbage,
        metavar="P",
        help="fraction of frames replaced by invalid JSON or ill-typed fields",
    )
    add(
        "--duplicates",
        type=float,
        default=d.duplicates,
        metavar="P",
        help="fraction of closed-candle frames sent twice",
    )
    add("--no-pong", action="store_true", help="do not answer client pings")
    add(
        "--rest-errors",
        default="",
        metavar="SPEC",
        help="fractions of REST requests answered with an error, e.g. 429:0.05,500:0.05",
    )
    add(
        "--archive-corrupt",
        type=int,
        default=d.archive_corrupt,
        metavar="N",
        help="serve the first N /data/... archive files asked for with a wrong checksum",
    )
    add(
        "--archive-missing-days",
        default="",
        metavar="LIST",
        help="days (YYYY-MM-DD) or months (YYYY-MM) whose /data/... archive files answer 404",
    )


def config_from_args(ns: argparse.Namespace) -> SimulatorConfig:
    """Validate the parsed flags; bad values raise ``SettingsError`` with one clear line."""
    symbols = tuple(s.strip().upper() for s in str(ns.symbols).split(",") if s.strip())
    for symbol in symbols:
        if not re.fullmatch(r"[A-Z0-9]{2,30}", symbol):
            raise SettingsError(f"invalid symbol {symbol!r}")
    if not symbols:
        raise SettingsError("--symbols names no symbol")
    if ns.speed <= 0:
        raise SettingsError("--speed must be positive")
    for name in ("garbage", "duplicates", "drop_spread"):
        value = getattr(ns, name)
        if not 0 <= value <= 1:
            raise SettingsError(f"--{name.replace('_', '-')} must be between 0 and 1")
    for name in ("updates_per_second", "ping_interval", "pong_timeout", "weight_window"):
        if getattr(ns, name) < 0 or (name != "updates_per_second" and getattr(ns, name) == 0):
            raise SettingsError(f"--{name.replace('_', '-')} must be positive")
    if ns.weight_limit < 1:
        raise SettingsError("--weight-limit must be positive")
    if ns.shutdown_grace < 0:
        raise SettingsError("--shutdown-grace must not be negative")
    if ns.drop_after is not None and ns.drop_after < 1:
        raise SettingsError("--drop-after must be at least 1")
    if ns.close_after is not None and ns.close_after <= 0:
        raise SettingsError("--close-after must be positive")
    if ns.archive_corrupt < 0:
        raise SettingsError("--archive-corrupt must not be negative")
    if ns.data is not None and not Path(ns.data).is_dir():
        raise SettingsError(f"--data {ns.data!r} is not a directory")
    return SimulatorConfig(
        host=ns.host,
        port=ns.port,
        symbols=symbols,
        start_ms=parse_start(ns.start) if ns.start else None,
        speed=ns.speed,
        data_dir=ns.data,
        seed=ns.seed,
        updates_per_second=ns.updates_per_second,
        ping_interval=ns.ping_interval,
        pong_timeout=ns.pong_timeout,
        weight_limit=ns.weight_limit,
        weight_window=ns.weight_window,
        drop_after=ns.drop_after,
        close_after=ns.close_after,
        shutdown_grace=ns.shutdown_grace,
        drop_spread=ns.drop_spread,
        sent_log=ns.sent_log,
        garbage=ns.garbage,
        duplicates=ns.duplicates,
        no_pong=ns.no_pong,
        rest_errors=parse_rest_errors(ns.rest_errors or ""),
        archive_corrupt=ns.archive_corrupt,
        archive_missing=parse_missing(ns.archive_missing_days or ""),
    )


def parse_missing(text: str) -> tuple[str, ...]:
    """``2023-03-05,2023-04`` → the periods (days, or whole months) whose archives answer 404."""
    periods: list[str] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            period_span(item)
        except SettingsError:
            raise SettingsError(
                f"invalid --archive-missing-days item {item!r}; expected YYYY-MM-DD or YYYY-MM"
            ) from None
        periods.append(item)
    return tuple(periods)


def parse_start(text: str) -> int:
    """``2024-01-01``, ``2024-01-01T12:00``, ``...Z``/``+00:00`` or epoch milliseconds → ms (UTC)."""
    return parse_utc_ms(text, "--start")


def parse_rest_errors(text: str) -> tuple[tuple[int, float], ...]:
    """``429:0.05,500:0.05,418:0`` → ((429, 0.05), (500, 0.05)); fractions must sum to ≤ 1."""
    result: list[tuple[int, float]] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        status, sep, fraction = item.partition(":")
        try:
            code, share = int(status), float(fraction)
        except ValueError:
            raise SettingsError(
                f"invalid --rest-errors item {item!r}; expected STATUS:FRACTION, e.g. 429:0.05"
            ) from None
        if not sep or not 100 <= code <= 599 or not 0 <= share <= 1:
            raise SettingsError(f"invalid --rest-errors item {item!r}")
        if share > 0:
            result.append((code, share))
    if sum(share for _, share in result) > 1:
        raise SettingsError("--rest-errors fractions add up to more than 1")
    return tuple(result)
