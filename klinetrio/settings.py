"""Settings: one frozen struct filled from ``KLINETRIO_*`` variables, a ``.env`` file and flags.

Precedence, highest first: command-line flags, the process environment, ``.env`` in the working
directory. Loaded once by the CLI and passed down explicitly; nothing here is global.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import msgspec
import platformdirs

from klinetrio.binance.markets import MARKETS
from klinetrio.core.backups import parse_time_of_day
from klinetrio.core.derived import parse_derived_intervals
from klinetrio.core.durations import format_duration_ms, parse_duration_ms
from klinetrio.core.intervals import Interval
from klinetrio.core.models import StreamKey
from klinetrio.core.retention import parse_retention
from klinetrio.core.universe import parse_selectors, selectors_of
from klinetrio.errors import SettingsError
from klinetrio.store.schema import HYPERTABLE_NAMES

T = TypeVar("T")
_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything klinetrio can be told. Field names are the variables without ``KLINETRIO_``."""

    database_url: str | None = None
    data_dir: str = platformdirs.user_data_dir("klinetrio")
    # ``[market:]name-or-glob`` entries, normalized (see ``core.universe``): ``BTCUSDT`` for
    # spot, ``usdm:*`` otherwise.
    symbols: tuple[str, ...] = ("BTCUSDT",)
    intervals: tuple[str, ...] = ("1m",)
    # The kinds of data collected (KLINETRIO_STREAMS): kline, aggTrade, bookTicker, ticker, depth.
    streams: tuple[str, ...] = ("kline",)
    ws_url: str = "wss://stream.binance.com:9443"
    rest_url: str = "https://api.binance.com"
    usdm_ws_url: str = "wss://fstream.binance.com"
    usdm_rest_url: str = "https://fapi.binance.com"
    coinm_ws_url: str = "wss://dstream.binance.com"
    coinm_rest_url: str = "https://dapi.binance.com"
    symbols_refresh_ms: int = 3_600_000
    futures_stats: bool = False
    futures_stats_period: str = "5m"
    archive_url: str = "https://data.binance.vision"
    http_addr: str = "127.0.0.1:8080"  # "off": no port at all
    redis_url: str | None = None  # redis://host:port/db to publish to; None: off
    sync_lookback_ms: int = 86_400_000
    log_level: str = "INFO"
    log_format: str = "text"
    # The store over years: compression (None: off), retention per table, derived intervals,
    # daily backups (backup_dir None: none by serve; backup_at is a UTC "HH:MM").
    compress_after_ms: int | None = 604_800_000
    retention: tuple[tuple[str, int], ...] = ()
    derived_intervals: tuple[str, ...] = ()
    backup_dir: str | None = None
    backup_at: str = "00:00"
    # Beyond the public contract: tuning knobs with defaults that suit Binance.
    streams_per_connection: int = 1024
    stall_timeout_s: float = 60.0
    writer_buffer: int = 360_000
    writer_batch: int = 5_000
    writer_flush_s: float = 0.001
    relay_queue: int = 2_000  # events a relay client may fall behind before it is closed

    @property
    def stream_keys(self) -> list[StreamKey]:
        """Every exactly named symbol at every interval its market has, in a stable order.

        Globs are resolved against the exchange (see ``klinetrio.universe``): their series are
        known only then.
        """
        return [
            key
            for selector in selectors_of(self.symbols)
            if not selector.is_glob
            for key in keys_of(selector.market, selector.pattern, self.intervals)
        ]

    def rest_url_of(self, market: str) -> str:
        """The REST base of ``market`` (``spot``, ``usdm`` or ``coinm``)."""
        return str(getattr(self, "rest_url" if market == "spot" else f"{market}_rest_url"))

    def ws_url_of(self, market: str) -> str:
        """The WebSocket base of ``market``."""
        return str(getattr(self, "ws_url" if market == "spot" else f"{market}_ws_url"))

    @property
    def http_host_port(self) -> tuple[str, int] | None:
        """Where the API listens, or None for ``off``."""
        if self.http_addr.strip().lower() == "off":
            return None
        return parse_host_port(self.http_addr)


def keys_of(market: str, symbol: str, intervals: tuple[str, ...]) -> list[StreamKey]:
    """The series of one symbol: every interval, but those its market does not serve (futures
    have no ``1s`` candles)."""
    unsupported = MARKETS[market].intervals_unsupported
    return [StreamKey(symbol, i, market) for i in intervals if i not in unsupported]


# KLINETRIO_STREAMS kind → the stream suffix of ``StreamKey`` (see ``core.models.KIND_STREAMS``).
STREAM_KINDS = {
    "aggTrade": "aggTrade",
    "bookTicker": "bookTicker",
    "ticker": "ticker",
    "depth": "depth20",
}


def stream_keys_of(
    market: str, symbol: str, intervals: tuple[str, ...], streams: tuple[str, ...]
) -> list[StreamKey]:
    """Every stream of one symbol: its kline series (when ``kline`` is collected), then one
    key per other kind collected (``StreamKey(symbol, "aggTrade", market)``)."""
    keys = keys_of(market, symbol, intervals) if "kline" in streams else []
    keys.extend(StreamKey(symbol, STREAM_KINDS[k], market) for k in streams if k != "kline")
    return keys


def parse_streams(text: str) -> tuple[str, ...]:
    """``kline,aggTrade`` → ``("kline", "aggTrade")``; names as DESIGN.md spells them (any case)."""
    known = {k.lower(): k for k in ("kline", *STREAM_KINDS)}
    found: list[str] = []
    for part in text.split(","):
        name = part.strip()
        if not name:
            continue
        kind = known.get(name.lower())
        if kind is None:
            raise SettingsError(
                f"unknown stream kind {name!r}; expected some of kline,aggTrade,bookTicker,ticker,depth"
            )
        if kind not in found:
            found.append(kind)
    if not found:
        raise SettingsError("no stream kinds given; set KLINETRIO_STREAMS, e.g. kline,aggTrade")
    return tuple(found)


def dead_letter_dir(settings: Settings) -> Path:
    """Where rows the database rejects as data are kept: ``<data dir>/dead-letters``."""
    return Path(settings.data_dir) / "dead-letters"


_DEFAULTS = Settings()


def parse_host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise SettingsError(f"invalid address {text!r}; expected host:port, e.g. 127.0.0.1:8080")
    return host.strip("[]") or "127.0.0.1", int(port)


def parse_symbols(text: str) -> tuple[str, ...]:
    """``btcusdt,usdm:*`` → ``("BTCUSDT", "usdm:*")`` (see ``core.universe``)."""
    return parse_selectors(text)


def parse_intervals(text: str) -> tuple[str, ...]:
    intervals: list[str] = []
    for raw in text.split(","):
        if raw.strip():
            name = Interval.parse(raw).name
            if name not in intervals:
                intervals.append(name)
    if not intervals:
        raise SettingsError("no intervals given; set KLINETRIO_INTERVALS, e.g. 1m,1h")
    return tuple(intervals)


def _check_url(name: str, url: str, schemes: tuple[str, ...]) -> str:
    parts = urlsplit(url)
    shown = redact_url(url)
    if parts.scheme not in schemes or not parts.hostname:
        raise SettingsError(f"invalid {name} {shown!r}; expected a {'/'.join(schemes)}:// URL")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise SettingsError(f"invalid {name} {shown!r}: {exc}") from None
    return url.rstrip("/")


def read_dotenv(path: Path) -> dict[str, str]:
    """``KEY=value`` lines; ``#`` comments, ``export`` prefixes and quotes are understood."""
    values: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return values
    except OSError as exc:
        raise SettingsError(f"cannot read {path}: {exc.strerror}") from None
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        if not sep:
            raise SettingsError(f"{path}:{number}: expected KEY=value")
        value = value.strip()
        if value[:1] in ("'", '"') and (close := value.find(value[0], 1)) > 0:
            value = value[1:close]  # anything after the closing quote is a comment
        else:
            value = value.split(" #", 1)[0].strip()
        values[key.strip()] = value
    return values


def load_settings(
    overrides: Mapping[str, str | None] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    dotenv: Path | None = Path(".env"),
) -> Settings:
    """Build Settings from ``.env``, then the environment, then ``overrides`` (flags).

    ``overrides`` uses the variable names without the prefix in lower case (``symbols``, ...);
    a None value means "not given".
    """
    env = dict(os.environ if environ is None else environ)
    raw: dict[str, str] = {}
    if dotenv is not None:
        raw.update({k: v for k, v in read_dotenv(dotenv).items() if k.startswith("KLINETRIO_")})
    raw.update({k: v for k, v in env.items() if k.startswith("KLINETRIO_")})
    values = {k.removeprefix("KLINETRIO_").lower(): v for k, v in raw.items()}
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = value

    kwargs: dict[str, object] = {}
    renamed = {
        "sync_lookback_ms": "sync_lookback",
        "compress_after_ms": "compress_after",
        "symbols_refresh_ms": "symbols_refresh",
    }
    known = {renamed.get(f, f) for f in Settings.__struct_fields__}
    for key in values:
        if key not in known and not key.startswith("test_"):  # KLINETRIO_TEST_*: the test suite's
            raise SettingsError(f"unknown setting KLINETRIO_{key.upper()}")

    def get(key: str) -> str | None:
        value = values.get(key)
        return value if value not in (None, "") else None

    if (url := get("database_url")) is not None:
        kwargs["database_url"] = _check_url(
            "KLINETRIO_DATABASE_URL", url, ("postgresql", "postgres")
        )
    if (data_dir := get("data_dir")) is not None:
        kwargs["data_dir"] = str(Path(data_dir).expanduser())
    if (symbols := get("symbols")) is not None:
        kwargs["symbols"] = _named("KLINETRIO_SYMBOLS", parse_symbols, symbols)
    if (intervals := get("intervals")) is not None:
        kwargs["intervals"] = _named("KLINETRIO_INTERVALS", parse_intervals, intervals)
    if (streams := get("streams")) is not None:
        kwargs["streams"] = parse_streams(streams)
    if (ws_url := get("ws_url")) is not None:
        kwargs["ws_url"] = _check_url("KLINETRIO_WS_URL", ws_url, ("ws", "wss"))
    if (rest_url := get("rest_url")) is not None:
        kwargs["rest_url"] = _check_url("KLINETRIO_REST_URL", rest_url, ("http", "https"))
    for market in ("usdm", "coinm"):
        if (url := get(f"{market}_ws_url")) is not None:
            kwargs[f"{market}_ws_url"] = _check_url(MARKETS[market].ws_setting, url, ("ws", "wss"))
        if (url := get(f"{market}_rest_url")) is not None:
            kwargs[f"{market}_rest_url"] = _check_url(
                MARKETS[market].rest_setting, url, ("http", "https")
            )
    if (text := get("symbols_refresh")) is not None:
        refresh = _named("KLINETRIO_SYMBOLS_REFRESH", parse_duration_ms, text)
        if refresh < 1000:
            raise SettingsError(
                f"invalid KLINETRIO_SYMBOLS_REFRESH {text!r}; at least 1s (default 1h)"
            )
        kwargs["symbols_refresh_ms"] = refresh
    if (text := get("futures_stats")) is not None:
        kwargs["futures_stats"] = _switch("KLINETRIO_FUTURES_STATS", text)
    if (text := get("futures_stats_period")) is not None:
        kwargs["futures_stats_period"] = _named(
            "KLINETRIO_FUTURES_STATS_PERIOD", parse_stats_period, text
        )
    if (archive_url := get("archive_url")) is not None:
        kwargs["archive_url"] = _check_url("KLINETRIO_ARCHIVE_URL", archive_url, ("http", "https"))
    if (http_addr := get("http_addr")) is not None:
        if http_addr.strip().lower() != "off":
            parse_host_port(http_addr)
        kwargs["http_addr"] = http_addr
    if (redis_url := get("redis_url")) is not None:
        kwargs["redis_url"] = _check_url("KLINETRIO_REDIS_URL", redis_url, ("redis",))
    if (lookback := get("sync_lookback")) is not None:
        kwargs["sync_lookback_ms"] = parse_duration_ms(lookback)
    if (level := get("log_level")) is not None:
        if level.upper() not in _LEVELS:
            raise SettingsError(
                f"invalid KLINETRIO_LOG_LEVEL {level!r}; expected one of {', '.join(_LEVELS)}"
            )
        kwargs["log_level"] = level.upper()
    if (fmt := get("log_format")) is not None:
        if fmt.lower() not in ("text", "json"):
            raise SettingsError(f"invalid KLINETRIO_LOG_FORMAT {fmt!r}; expected text or json")
        kwargs["log_format"] = fmt.lower()
    _store_settings(get, kwargs)
    for key, kind in (
        ("streams_per_connection", int),
        ("writer_buffer", int),
        ("writer_batch", int),
        ("stall_timeout_s", float),
        ("writer_flush_s", float),
        ("relay_queue", int),
    ):
        if (text := get(key)) is not None:
            try:
                number = kind(text)
            except ValueError:
                raise SettingsError(
                    f"invalid KLINETRIO_{key.upper()} {text!r}; expected a number"
                ) from None
            if number <= 0:
                raise SettingsError(f"invalid KLINETRIO_{key.upper()} {text!r}; must be positive")
            kwargs[key] = number
    if kwargs.get("streams_per_connection", 1) > 1024:  # type: ignore[operator]
        raise SettingsError(
            "KLINETRIO_STREAMS_PER_CONNECTION can be at most 1024 (Binance's limit)"
        )
    return Settings(**kwargs)  # type: ignore[arg-type]


# The periods of Binance's /futures/data/... statistics.
STATS_PERIODS = ("5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d")


def parse_stats_period(text: str) -> str:
    period = text.strip()
    if period not in STATS_PERIODS:
        raise SettingsError(f"invalid period {text!r}; expected one of {', '.join(STATS_PERIODS)}")
    return period


def _switch(variable: str, text: str) -> bool:
    value = text.strip().lower()
    if value in ("on", "true", "yes", "1"):
        return True
    if value in ("off", "false", "no", "0"):
        return False
    raise SettingsError(f"invalid {variable} {text!r}; expected on or off")


def _named(variable: str, parse: Callable[[str], T], text: str) -> T:
    """``parse(text)``, its error naming the setting: ``KLINETRIO_INTERVALS: unknown ...``."""
    try:
        return parse(text)
    except SettingsError as exc:
        raise SettingsError(f"{variable}: {exc}") from None


def _store_settings(get: Callable[[str], str | None], kwargs: dict[str, object]) -> None:
    """Compression, retention, derived intervals and backups, checked against each other."""
    if (text := get("compress_after")) is not None:
        if text.strip().lower() == "off":
            kwargs["compress_after_ms"] = None
        else:
            try:
                ms = parse_duration_ms(text)
            except SettingsError as exc:
                raise SettingsError(f"invalid KLINETRIO_COMPRESS_AFTER: {exc} (or off)") from None
            if ms <= 0:
                raise SettingsError(
                    f"invalid KLINETRIO_COMPRESS_AFTER {text!r}; must be positive (or off)"
                )
            kwargs["compress_after_ms"] = ms
    if (text := get("retention")) is not None:
        retention = parse_retention(text, HYPERTABLE_NAMES)
        lookback = kwargs.get("sync_lookback_ms", _DEFAULTS.sync_lookback_ms)
        assert isinstance(lookback, int)
        for table, ms in retention:
            # Sync refills every gap inside its look-back: a shorter retention would make it
            # fetch again, every pass, what retention has just deleted.
            if table == "candles" and ms <= lookback:
                raise SettingsError(
                    f"KLINETRIO_RETENTION candles:{format_duration_ms(ms)} must be longer than "
                    f"KLINETRIO_SYNC_LOOKBACK ({format_duration_ms(lookback)}), or sync refills "
                    "what retention deletes"
                )
        kwargs["retention"] = retention
    if (text := get("derived_intervals")) is not None:
        collected = kwargs.get("intervals", _DEFAULTS.intervals)
        assert isinstance(collected, tuple)
        try:
            kwargs["derived_intervals"] = parse_derived_intervals(text, collected)
        except SettingsError as exc:
            raise SettingsError(f"invalid KLINETRIO_DERIVED_INTERVALS: {exc}") from None
    if (text := get("backup_dir")) is not None:
        kwargs["backup_dir"] = str(Path(text).expanduser())
    if (text := get("backup_at")) is not None:
        kwargs["backup_at"] = parse_time_of_day(text).strftime("%H:%M")


def redact_url(url: str) -> str:
    """The URL with any password (in the authority or a ``password=`` parameter) as ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        if sep:
            netloc = f"{user}:***@{hostport}"
    query = re.sub(r"(?i)(^|&)(password=)[^&]*", r"\1\2***", parts.query)
    if (netloc, query) == (parts.netloc, parts.query):
        return url  # untouched: urlunsplit would also drop the "//" of an empty authority
    return parts._replace(netloc=netloc, query=query).geturl()
