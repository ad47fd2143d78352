"""The simulator's settings: one frozen struct, the ``klinetrio simulate`` flags that fill it."""

from __future__ import annotations

import argparse
from pathlib import Path

import msgspec

from klinetrio.binance.markets import MARKETS
from klinetrio.core.models import parse_utc_ms
from klinetrio.core.planner import period_span
from klinetrio.errors import SettingsError
from klinetrio.simulate.listings import ListingChange, parse_listing

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
    drop_after: int | None = None  # abort each connection after N frames (of every kind)
    close_after: float | None = None  # real; serverShutdown, then a clean close
    shutdown_grace: float = 0.0  # real seconds between serverShutdown and the close
    drop_spread: float = 0.0  # each connection drops after drop_after x [1 - spread, 1 + spread]
    sent_log: str | None = None  # append "symbol interval open_ms sent_wall_ms" per closed frame
    garbage: float = 0.0  # fraction of kline frames replaced by junk
    duplicates: float = 0.0  # fraction of closed-candle and trade frames sent twice
    no_pong: bool = False  # stop answering client pings
    rest_errors: tuple[tuple[int, float], ...] = ()  # (status, fraction) of REST requests
    archive_corrupt: int = 0  # the first N archive files asked for are served damaged
    archive_missing: tuple[str, ...] = ()  # days (YYYY-MM-DD) or months (YYYY-MM) answering 404
    max_streams: int = 1024
    max_messages_per_second: int = 5  # spot
    # Markets. A ``symbols`` entry is ``[market:]SYMBOL`` (spot when left out); ``synthetic``
    # adds N generated symbols to a market; ``data_dir`` replays spot, ``data_dirs`` any market.
    synthetic: tuple[tuple[str, int], ...] = ()
    data_dirs: tuple[tuple[str, str], ...] = ()  # (market, directory)
    listings: tuple[ListingChange, ...] = ()  # --list / --delist
    futures_weight_limit: int = 2400  # per weight window, USD-M and COIN-M each
    futures_messages_per_second: int = 10
    stats_request_limit: int = 1000  # /futures/data/... requests per 5 weight windows
    # The streams beside klines: derived trades per exchange second and symbol, bookTicker
    # and depth samples per exchange second (at most that many per real second as well).
    trade_rate: float = 1.0
    book_rate: float = 5.0
    depth_rate: float = 1.0

    def symbols_of(self, market: str) -> tuple[str, ...]:
        """The configured and synthetic symbols of ``market`` (without the market prefix)."""
        names: list[str] = []
        for entry in self.symbols:
            prefix, colon, name = entry.rpartition(":")
            if (prefix if colon else "spot") == market:
                names.append(name)
        for name, count in self.synthetic:
            if name == market:
                names.extend(synthetic_names(market, count))
        return tuple(dict.fromkeys(names))

    def data_dir_of(self, market: str) -> str | None:
        if market == "spot" and self.data_dir is not None:
            return self.data_dir
        return dict(self.data_dirs).get(market)


def synthetic_names(market: str, count: int) -> list[str]:
    """``--synthetic usdm=3`` → ``UM0001USDT``, ``UM0002USDT``, ``UM0003USDT`` (COIN-M:
    ``CM0001USD_PERP``; spot: ``SP0001USDT``)."""
    if market == "coinm":
        return [f"CM{i:04d}USD_PERP" for i in range(1, count + 1)]
    prefix = "SP" if market == "spot" else "UM"
    return [f"{prefix}{i:04d}USDT" for i in range(1, count + 1)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``simulate`` flags to ``parser``; ``config_from_args`` turns them into a config."""
    d = SimulatorConfig()
    add = parser.add_argument
    add("--host", default=d.host, help="address to listen on (default %(default)s)")
    add("--port", type=int, default=d.port, help="port; 0 picks a free one (default %(default)s)")
    add(
        "--symbols",
        default=None,
        help="synthetic symbols, [market:]SYMBOL,... with market spot (the default), usdm or "
        "coinm, e.g. BTCUSDT,usdm:BTCUSDT,coinm:BTCUSD_PERP (default "
        f"{','.join(d.symbols)}, or none with --synthetic)",
    )
    add(
        "--synthetic",
        default="",
        metavar="SPEC",
        help="generated symbols per market, e.g. spot=1500,usdm=500,coinm=50",
    )
    add(
        "--list",
        action="append",
        default=[],
        metavar="[MARKET:]SYMBOL@T",
        help="list SYMBOL at T (exchange seconds after start, or an ISO time): TRADING and "
        "streaming from then on (repeatable)",
    )
    add(
        "--delist",
        action="append",
        default=[],
        metavar="[MARKET:]SYMBOL@T",
        help="delist SYMBOL at T: BREAK (COIN-M: contractStatus CLOSE), no candle closing "
        "from then on (repeatable)",
    )
    add(
        "--futures-weight-limit",
        type=int,
        default=d.futures_weight_limit,
        help="USD-M and COIN-M REST request weight per window, each (default %(default)s)",
    )
    add(
        "--stats-request-limit",
        type=int,
        default=d.stats_request_limit,
        metavar="N",
        help="/futures/data/... requests per five weight windows, per market (default "
        "%(default)s: 1000 per 5 minutes, as Binance)",
    )
    add(
        "--start",
        help="exchange time at start, UTC date or datetime (default: now, or "
        "the first candle of --data + 1 day)",
    )
    add("--speed", type=float, default=d.speed, help="exchange seconds per real second")
    add(
        "--data",
        action="append",
        default=[],
        metavar="[MARKET:]DIR",
        help="replay data.binance.vision kline and aggTrades CSV/zip files from DIR for a "
        "market (spot when left out; repeatable, one per market); recorded trades are served "
        "as recorded, and a symbol with trades but no klines gets 1m and 1h candles made of them",
    )
    add(
        "--trade-rate",
        type=float,
        default=d.trade_rate,
        metavar="N",
        help="derived aggregate trades per symbol per exchange second, spread over each 1m "
        "candle so that their quantities add up to its volume (default %(default)s; ignored for "
        "symbols whose aggTrades archive --data replays)",
    )
    add(
        "--book-rate",
        type=float,
        default=d.book_rate,
        metavar="N",
        help="@bookTicker frames per symbol per exchange second, at most N per real second "
        "(default %(default)s)",
    )
    add(
        "--depth-rate",
        type=float,
        default=d.depth_rate,
        metavar="N",
        help="@depth20 (also @depth5, @depth10) snapshots per symbol per exchange second, at "
        "most N per real second; @depth20@100ms streams send 10 (default %(default)s)",
    )
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
    add(
        "--drop-after",
        type=int,
        metavar="N",
        help="abort each connection after N frames (klines and every other kind)",
    )
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
        help="append one line per closed kline frame sent (symbol, interval, open time and the"
        " wall-clock ms its batch was handed to the socket) and per aggTrade frame (symbol,"
        " 'aggTrade', agg id, ms), for measuring latency from the send",
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
        help="fraction of closed-candle and trade frames sent twice",
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
    synthetic = parse_synthetic(ns.synthetic or "")
    if ns.symbols is not None:
        symbols = parse_symbols(str(ns.symbols))
    else:  # the defaults, unless generated symbols were asked for instead
        symbols = () if synthetic else SimulatorConfig().symbols
    if not symbols and not synthetic:
        raise SettingsError("--symbols names no symbol")
    data_dir, data_dirs = parse_data(ns.data or [])
    listings = tuple(parse_listing(text, "--list", True) for text in ns.list or []) + tuple(
        parse_listing(text, "--delist", False) for text in ns.delist or []
    )
    for change in listings:
        if not MARKETS[change.market].valid_symbol(change.symbol):
            raise SettingsError(f"invalid {change.market} symbol {change.symbol!r}")
    if ns.speed <= 0:
        raise SettingsError("--speed must be positive")
    for name in ("garbage", "duplicates", "drop_spread"):
        value = getattr(ns, name)
        if not 0 <= value <= 1:
            raise SettingsError(f"--{name.replace('_', '-')} must be between 0 and 1")
    for name in ("updates_per_second", "ping_interval", "pong_timeout", "weight_window"):
        if getattr(ns, name) < 0 or (name != "updates_per_second" and getattr(ns, name) == 0):
            raise SettingsError(f"--{name.replace('_', '-')} must be positive")
    for name in ("trade_rate", "book_rate", "depth_rate"):
        if not 0 < getattr(ns, name) <= 1000:
            raise SettingsError(f"--{name.replace('_', '-')} must be above 0 and at most 1000")
    if ns.weight_limit < 1:
        raise SettingsError("--weight-limit must be positive")
    if ns.futures_weight_limit < 1:
        raise SettingsError("--futures-weight-limit must be positive")
    if ns.stats_request_limit < 1:
        raise SettingsError("--stats-request-limit must be positive")
    if ns.shutdown_grace < 0:
        raise SettingsError("--shutdown-grace must not be negative")
    if ns.drop_after is not None and ns.drop_after < 1:
        raise SettingsError("--drop-after must be at least 1")
    if ns.close_after is not None and ns.close_after <= 0:
        raise SettingsError("--close-after must be positive")
    if ns.archive_corrupt < 0:
        raise SettingsError("--archive-corrupt must not be negative")
    return SimulatorConfig(
        host=ns.host,
        port=ns.port,
        symbols=symbols,
        start_ms=parse_start(ns.start) if ns.start else None,
        speed=ns.speed,
        data_dir=data_dir,
        data_dirs=data_dirs,
        synthetic=synthetic,
        listings=listings,
        futures_weight_limit=ns.futures_weight_limit,
        stats_request_limit=ns.stats_request_limit,
        seed=ns.seed,
        trade_rate=ns.trade_rate,
        book_rate=ns.book_rate,
        depth_rate=ns.depth_rate,
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


def parse_symbols(text: str) -> tuple[str, ...]:
    """``btcusdt,usdm:ethusdt,coinm:btcusd_perp`` → ``("BTCUSDT", "usdm:ETHUSDT",
    "coinm:BTCUSD_PERP")``: spot names bare, others prefixed with their market."""
    entries: list[str] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        market, colon, name = item.rpartition(":")
        market = market.lower() if colon else "spot"
        if market not in MARKETS:
            raise SettingsError(f"invalid --symbols item {item!r}: unknown market {market!r}")
        symbol = name.upper()
        if not MARKETS[market].valid_symbol(symbol):
            raise SettingsError(f"invalid symbol {symbol!r}")
        entries.append(symbol if market == "spot" else f"{market}:{symbol}")
    return tuple(dict.fromkeys(entries))


def parse_synthetic(text: str) -> tuple[tuple[str, int], ...]:
    """``spot=1500,usdm=500`` → ``(("spot", 1500), ("usdm", 500))``."""
    result: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        market, sep, count = item.partition("=")
        market = market.strip().lower()
        if not sep or market not in MARKETS or not count.strip().isdigit():
            raise SettingsError(
                f"invalid --synthetic item {item!r}; expected MARKET=N, e.g. usdm=500"
            )
        result[market] = int(count)
    return tuple(result.items())


def parse_data(items: list[str]) -> tuple[str | None, tuple[tuple[str, str], ...]]:
    """``--data DIR``, ``--data usdm:DIR`` → (the spot directory, (market, directory) pairs of
    the futures markets). A prefix that is not a market name is part of the path."""
    spot: str | None = None
    others: dict[str, str] = {}
    for item in items:
        market, colon, directory = item.partition(":")
        if not colon or market.lower() not in MARKETS:
            market, directory = "spot", item
        market = market.lower()
        if not Path(directory).is_dir():
            raise SettingsError(f"--data {directory!r} is not a directory")
        if market == "spot":
            spot = directory
        else:
            others[market] = directory
    return spot, tuple(others.items())


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
