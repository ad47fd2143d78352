"""Settings: the KLINETRIO_* contract, precedence, .env parsing, clear errors, redaction."""

from __future__ import annotations

from pathlib import Path

import platformdirs
import pytest

from klinetrio.core.models import StreamKey
from klinetrio.errors import SettingsError
from klinetrio.settings import (
    Settings,
    load_settings,
    parse_duration_ms,
    parse_host_port,
    read_dotenv,
    redact_url,
)

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR


def load(
    env: dict[str, str] | None = None,
    overrides: dict[str, str | None] | None = None,
    dotenv: Path | None = None,
) -> Settings:
    return load_settings(overrides, environ=env or {}, dotenv=dotenv)


def write_env(tmp_path: Path, text: str) -> Path:
    path = tmp_path / ".env"
    path.write_text(text, encoding="utf-8")
    return path


# --- defaults and the contract ---------------------------------------------------------------


def test_defaults_are_the_documented_ones() -> None:
    settings = load()
    assert settings.database_url is None
    assert settings.data_dir == platformdirs.user_data_dir("klinetrio")
    assert settings.symbols == ("BTCUSDT",)
    assert settings.intervals == ("1m",)
    assert settings.ws_url == "wss://stream.binance.com:9443"
    assert settings.rest_url == "https://api.binance.com"
    assert settings.archive_url == "https://data.binance.vision"
    assert settings.http_addr == "127.0.0.1:8080"
    assert settings.http_host_port == ("127.0.0.1", 8080)
    assert settings.sync_lookback_ms == DAY
    assert settings.log_level == "INFO"
    assert settings.log_format == "text"


def test_unrelated_environment_variables_are_ignored() -> None:
    settings = load({"PATH": "/bin", "DATABASE_URL": "mysql://x", "KLINETRIOX": "1"})
    assert settings == load()


def test_missing_dotenv_file_is_fine(tmp_path: Path) -> None:
    assert load(dotenv=tmp_path / "absent.env") == load()


def test_every_contract_variable_is_read_from_the_environment(tmp_path: Path) -> None:
    settings = load(
        {
            "KLINETRIO_DATABASE_URL": "postgresql://kt@db.example:5433/klines",
            "KLINETRIO_DATA_DIR": str(tmp_path),
            "KLINETRIO_SYMBOLS": "btcusdt,ETHUSDT",
            "KLINETRIO_INTERVALS": "1m,1h,1M",
            "KLINETRIO_WS_URL": "ws://127.0.0.1:9650",
            "KLINETRIO_REST_URL": "http://127.0.0.1:9650",
            "KLINETRIO_ARCHIVE_URL": "http://127.0.0.1:9650/",
            "KLINETRIO_HTTP_ADDR": "0.0.0.0:9000",
            "KLINETRIO_SYNC_LOOKBACK": "2h",
            "KLINETRIO_LOG_LEVEL": "debug",
            "KLINETRIO_LOG_FORMAT": "JSON",
        }
    )
    assert settings.database_url == "postgresql://kt@db.example:5433/klines"
    assert settings.data_dir == str(tmp_path)
    assert settings.symbols == ("BTCUSDT", "ETHUSDT")
    assert settings.intervals == ("1m", "1h", "1M")
    assert settings.ws_url == "ws://127.0.0.1:9650"
    assert settings.rest_url == "http://127.0.0.1:9650"
    assert settings.archive_url == "http://127.0.0.1:9650"
    assert settings.http_addr == "0.0.0.0:9000"
    assert settings.http_host_port == ("0.0.0.0", 9000)
    assert settings.sync_lookback_ms == 2 * HOUR
    assert settings.log_level == "DEBUG"
    assert settings.log_format == "json"


def test_settings_are_frozen() -> None:
    settings = load()
    with pytest.raises(AttributeError):
        settings.symbols = ("ETHUSDT",)  # type: ignore[misc]


# --- precedence ------------------------------------------------------------------------------


def test_flag_beats_environment_beats_dotenv(tmp_path: Path) -> None:
    dotenv = write_env(tmp_path, "KLINETRIO_SYMBOLS=ethusdt\nKLINETRIO_INTERVALS=1h\n")
    env = {"KLINETRIO_SYMBOLS": "solusdt"}
    both = load(env, {"symbols": "bnbusdt"}, dotenv)
    assert both.symbols == ("BNBUSDT",)
    assert both.intervals == ("1h",)  # only .env says anything about intervals
    assert load(env, {"symbols": None}, dotenv).symbols == ("SOLUSDT",)
    assert load({}, {}, dotenv).symbols == ("ETHUSDT",)


def test_none_override_means_not_given() -> None:
    assert load({"KLINETRIO_LOG_LEVEL": "ERROR"}, {"log_level": None}).log_level == "ERROR"


def test_override_of_sync_lookback_uses_the_variable_name() -> None:
    assert load({"KLINETRIO_SYNC_LOOKBACK": "2h"}, {"sync_lookback": "0s"}).sync_lookback_ms == 0


def test_load_settings_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLINETRIO_SYMBOLS", "adabtc")
    assert load_settings(dotenv=None).symbols == ("ADABTC",)


def test_empty_value_means_unset() -> None:
    assert load({"KLINETRIO_SYMBOLS": "", "KLINETRIO_DATABASE_URL": ""}) == load()


# --- symbols and intervals -------------------------------------------------------------------


def test_symbols_in_any_case_are_upper_cased_stripped_and_deduplicated() -> None:
    settings = load({"KLINETRIO_SYMBOLS": " btcusdt, ETHUSDT ,BtcUsdt,,ethusdt,1000SATSUSDT"})
    assert settings.symbols == ("BTCUSDT", "ETHUSDT", "1000SATSUSDT")


def test_thousands_of_symbols_are_fine() -> None:
    names = [f"S{n:05d}USDT" for n in range(3000)]
    assert load({"KLINETRIO_SYMBOLS": ",".join(names)}).symbols == tuple(names)


@pytest.mark.parametrize("text", [",", " , ,"])
def test_a_symbol_list_with_no_symbol_is_an_error(text: str) -> None:
    with pytest.raises(SettingsError, match="no symbols given"):
        load({"KLINETRIO_SYMBOLS": text})


@pytest.mark.parametrize("symbol", ["btc-usdt", "btc/usdt", "b", "btc usdt", "ÄBC"])
def test_malformed_symbols_are_named_in_the_error(symbol: str) -> None:
    with pytest.raises(SettingsError, match="invalid symbol") as info:
        load({"KLINETRIO_SYMBOLS": f"ethusdt,{symbol}"})
    assert repr(symbol) in str(info.value)


def test_intervals_are_case_sensitive_and_deduplicated() -> None:
    settings = load({"KLINETRIO_INTERVALS": "1m, 1M ,1m,1h,,"})
    assert settings.intervals == ("1m", "1M", "1h")


@pytest.mark.parametrize("text", ["2d", "1H", "1m,60s", "minute"])
def test_unknown_interval_is_an_error_naming_it(text: str) -> None:
    with pytest.raises(SettingsError, match="unknown interval"):
        load({"KLINETRIO_INTERVALS": text})


def test_interval_list_with_no_interval_is_an_error() -> None:
    with pytest.raises(SettingsError, match="no intervals given"):
        load({"KLINETRIO_INTERVALS": ", ,"})


def test_stream_keys_are_every_symbol_at_every_interval_symbol_first() -> None:
    settings = load({"KLINETRIO_SYMBOLS": "ethusdt,btcusdt", "KLINETRIO_INTERVALS": "1h,1m"})
    assert settings.stream_keys == [
        StreamKey("ETHUSDT", "1h"),
        StreamKey("ETHUSDT", "1m"),
        StreamKey("BTCUSDT", "1h"),
        StreamKey("BTCUSDT", "1m"),
    ]


# --- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0s", 0),
        ("90m", 90 * MINUTE),
        ("2h", 2 * HOUR),
        ("1d", DAY),
        ("4w", 28 * DAY),
        ("30s", 30_000),
        ("250ms", 250),
        (" 3 d ", 3 * DAY),
    ],
)
def test_sync_lookback_durations(text: str, expected: int) -> None:
    assert parse_duration_ms(text) == expected
    assert load({"KLINETRIO_SYNC_LOOKBACK": text}).sync_lookback_ms == expected


@pytest.mark.parametrize("text", ["1", "d", "1y", "-1d", "1.5h", "1D", "2 hours", "1h30m", "ms"])
def test_bad_durations_are_errors_with_an_example(text: str) -> None:
    with pytest.raises(SettingsError, match="invalid duration") as info:
        load({"KLINETRIO_SYNC_LOOKBACK": text})
    assert repr(text) in str(info.value)
    assert "90m" in str(info.value)


# --- URLs and addresses ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres@127.0.0.1:5432/klinetrio",
        "postgres://u:p@db/klines?sslmode=require",
        "postgresql://[::1]:5432/klinetrio",
    ],
)
def test_postgres_urls_are_accepted(url: str) -> None:
    assert load({"KLINETRIO_DATABASE_URL": url}).database_url == url


@pytest.mark.parametrize(
    ("variable", "url", "hint"),
    [
        ("KLINETRIO_DATABASE_URL", "mysql://u@db/klines", "postgresql/postgres://"),
        ("KLINETRIO_DATABASE_URL", "db.example:5432/klines", "postgresql/postgres://"),
        ("KLINETRIO_DATABASE_URL", "postgresql://db:port/klines", "invalid"),
        ("KLINETRIO_DATABASE_URL", "postgresql://db:70000/klines", "Port"),
        ("KLINETRIO_WS_URL", "https://stream.binance.com:9443", "ws/wss://"),
        ("KLINETRIO_WS_URL", "wss://", "ws/wss://"),
        ("KLINETRIO_WS_URL", "wss://stream.binance.com:99999", "Port"),
        ("KLINETRIO_REST_URL", "wss://api.binance.com", "http/https://"),
        ("KLINETRIO_REST_URL", "api.binance.com", "http/https://"),
        ("KLINETRIO_REST_URL", "https://api.binance.com:x", "invalid"),
        ("KLINETRIO_ARCHIVE_URL", "s3://data.binance.vision", "http/https://"),
    ],
)
def test_bad_urls_are_errors_naming_the_variable(variable: str, url: str, hint: str) -> None:
    with pytest.raises(SettingsError) as info:
        load({variable: url})
    message = str(info.value)
    assert variable in message
    assert hint in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "url", ["postgresql://kt:s3cret@db:99999/klines", "mysql://kt:s3cret@db/klines"]
)
def test_bad_database_url_error_does_not_reveal_the_password(url: str) -> None:
    with pytest.raises(SettingsError) as info:
        load({"KLINETRIO_DATABASE_URL": url})
    assert "s3cret" not in str(info.value)


def test_trailing_slashes_are_dropped_from_base_urls() -> None:
    settings = load(
        {"KLINETRIO_WS_URL": "wss://example.org:9443/", "KLINETRIO_REST_URL": "https://x.org//"}
    )
    assert settings.ws_url == "wss://example.org:9443"
    assert settings.rest_url == "https://x.org"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("localhost:65535", ("localhost", 65535)),
        ("[::1]:9000", ("::1", 9000)),
        (":8080", ("127.0.0.1", 8080)),
    ],
)
def test_http_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(text) == expected
    assert load({"KLINETRIO_HTTP_ADDR": text}).http_host_port == expected


@pytest.mark.parametrize(
    "text", ["127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:-1", "host:http", "8080"]
)
def test_bad_http_addresses_are_errors(text: str) -> None:
    with pytest.raises(SettingsError, match="invalid address") as info:
        load({"KLINETRIO_HTTP_ADDR": text})
    assert "host:port" in str(info.value)


# --- logging, data dir, tuning ---------------------------------------------------------------


@pytest.mark.parametrize("level", ["trace", "DEBUG", "Info", "success", "warning", "ERROR"])
def test_log_levels_in_any_case(level: str) -> None:
    assert load({"KLINETRIO_LOG_LEVEL": level}).log_level == level.upper()


def test_unknown_log_level_is_an_error() -> None:
    with pytest.raises(SettingsError, match="KLINETRIO_LOG_LEVEL 'verbose'"):
        load({"KLINETRIO_LOG_LEVEL": "verbose"})


def test_unknown_log_format_is_an_error() -> None:
    with pytest.raises(SettingsError, match="expected text or json"):
        load({"KLINETRIO_LOG_FORMAT": "xml"})


def test_data_dir_expands_the_home_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/someone")
    assert load({"KLINETRIO_DATA_DIR": "~/klines"}).data_dir == "/home/someone/klines"


def test_tuning_knobs_are_numbers_within_limits() -> None:
    settings = load({"KLINETRIO_STREAMS_PER_CONNECTION": "200", "KLINETRIO_WRITER_FLUSH_S": "0.5"})
    assert (settings.streams_per_connection, settings.writer_flush_s) == (200, 0.5)
    with pytest.raises(SettingsError, match="at most 1024"):
        load({"KLINETRIO_STREAMS_PER_CONNECTION": "1025"})
    with pytest.raises(SettingsError, match="must be positive"):
        load({"KLINETRIO_WRITER_BATCH": "0"})
    with pytest.raises(SettingsError, match="expected a number"):
        load({"KLINETRIO_WRITER_BUFFER": "lots"})


# --- unknown variables -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["KLINETRIO_SYMBOL", "KLINETRIO_INTERVAL", "KLINETRIO_WSURL"])
def test_unknown_klinetrio_variable_is_an_error_naming_it(name: str) -> None:
    with pytest.raises(SettingsError, match=f"unknown setting {name}$"):
        load({name: "x"})


def test_unknown_variable_in_dotenv_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="KLINETRIO_SYMBLOS"):
        load(dotenv=write_env(tmp_path, "KLINETRIO_SYMBLOS=ethusdt\n"))


def test_unknown_override_is_an_error() -> None:
    with pytest.raises(SettingsError, match="KLINETRIO_COLOUR"):
        load(overrides={"colour": "blue"})


def test_test_database_url_variable_is_tolerated() -> None:
    assert load({"KLINETRIO_TEST_DATABASE_URL": "postgresql://x@y/z"}) == load()


def test_sync_lookback_ms_is_not_a_variable() -> None:
    with pytest.raises(SettingsError, match="KLINETRIO_SYNC_LOOKBACK_MS"):
        load({"KLINETRIO_SYNC_LOOKBACK_MS": "5"})


# --- .env parsing ----------------------------------------------------------------------------


def test_dotenv_comments_blank_lines_quotes_and_export(tmp_path: Path) -> None:
    path = write_env(
        tmp_path,
        "# klinetrio settings\n"
        "\n"
        "KLINETRIO_SYMBOLS=ethusdt,btcusdt   # the usual two\n"
        "export KLINETRIO_INTERVALS='1m,1h'\n"
        '  KLINETRIO_LOG_LEVEL = "debug"  \n'
        "KLINETRIO_DATABASE_URL=postgresql://u:p#w@db/k?sslmode=require\n"
        'KLINETRIO_LOG_FORMAT="json # not a comment"\n'
        "OTHER_TOOL=whatever\n",
    )
    assert read_dotenv(path) == {
        "KLINETRIO_SYMBOLS": "ethusdt,btcusdt",
        "KLINETRIO_INTERVALS": "1m,1h",
        "KLINETRIO_LOG_LEVEL": "debug",
        "KLINETRIO_DATABASE_URL": "postgresql://u:p#w@db/k?sslmode=require",
        "KLINETRIO_LOG_FORMAT": "json # not a comment",
        "OTHER_TOOL": "whatever",
    }


def test_dotenv_values_reach_the_settings(tmp_path: Path) -> None:
    path = write_env(
        tmp_path,
        "export KLINETRIO_SYMBOLS='ethusdt'\nKLINETRIO_SYNC_LOOKBACK=90m # an hour and a half\n",
    )
    settings = load(dotenv=path)
    assert settings.symbols == ("ETHUSDT",)
    assert settings.sync_lookback_ms == 90 * MINUTE


def test_dotenv_value_with_equals_signs_keeps_them(tmp_path: Path) -> None:
    path = write_env(tmp_path, "KLINETRIO_DATABASE_URL=postgresql://db/k?a=b&c=d\n")
    assert read_dotenv(path)["KLINETRIO_DATABASE_URL"] == "postgresql://db/k?a=b&c=d"


def test_dotenv_empty_value(tmp_path: Path) -> None:
    assert read_dotenv(write_env(tmp_path, "KLINETRIO_DATABASE_URL=\n")) == {
        "KLINETRIO_DATABASE_URL": ""
    }


def test_dotenv_line_without_equals_is_an_error_with_its_line_number(tmp_path: Path) -> None:
    path = write_env(tmp_path, "# ok\nKLINETRIO_SYMBOLS=btcusdt\nKLINETRIO_INTERVALS\n")
    with pytest.raises(SettingsError, match=r"\.env:3: expected KEY=value"):
        load(dotenv=path)


def test_unreadable_dotenv_is_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read"):
        read_dotenv(tmp_path)  # a directory


def test_dotenv_quoted_value_followed_by_a_comment(tmp_path: Path) -> None:
    path = write_env(tmp_path, 'KLINETRIO_SYMBOLS="ethusdt"  # main pair\n')
    assert read_dotenv(path) == {"KLINETRIO_SYMBOLS": "ethusdt"}


# --- redaction -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://kt:s3cret@db:5432/klines", "postgresql://kt:***@db:5432/klines"),
        ("postgresql://kt:p%40ss@db/klines", "postgresql://kt:***@db/klines"),
        ("postgresql://kt:a:b@db/klines", "postgresql://kt:***@db/klines"),
        ("postgresql://kt:kt@db/kt", "postgresql://kt:***@db/kt"),
        ("postgresql://kt@db/klines", "postgresql://kt@db/klines"),
        ("postgresql://db/klines", "postgresql://db/klines"),
        ("postgresql:///klines?host=/tmp", "postgresql:///klines?host=/tmp"),
    ],
)
def test_redact_url_hides_only_the_password(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_url_hides_a_password_given_as_a_query_parameter() -> None:
    assert "s3cret" not in redact_url("postgresql://kt@db/klines?password=s3cret")


# --- the store over years ------------------------------------------------------------------------


def test_store_settings_defaults_and_values() -> None:
    s = load()
    assert s.compress_after_ms == 7 * DAY
    assert s.retention == ()
    assert s.derived_intervals == ()
    assert s.backup_dir is None
    assert s.backup_at == "00:00"
    s = load(
        {
            "KLINETRIO_COMPRESS_AFTER": "off",
            "KLINETRIO_RETENTION": "candles:400d",
            "KLINETRIO_DERIVED_INTERVALS": "2m,10m,45m,2d",
            "KLINETRIO_BACKUP_DIR": "~/backups",
            "KLINETRIO_BACKUP_AT": "3:30",
        }
    )
    assert s.compress_after_ms is None
    assert s.retention == (("candles", 400 * DAY),)
    assert s.derived_intervals == ("2m", "10m", "45m", "2d")
    assert s.backup_dir is not None
    assert not s.backup_dir.startswith("~")
    assert s.backup_at == "03:30"
    assert load(overrides={"compress_after": "36h"}).compress_after_ms == 36 * HOUR


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KLINETRIO_COMPRESS_AFTER": "0d"}, "KLINETRIO_COMPRESS_AFTER"),
        ({"KLINETRIO_COMPRESS_AFTER": "soon"}, "KLINETRIO_COMPRESS_AFTER"),
        ({"KLINETRIO_RETENTION": "candles:12h"}, "longer than KLINETRIO_SYNC_LOOKBACK"),
        ({"KLINETRIO_RETENTION": "orders:7d"}, "unknown table 'orders'"),
        ({"KLINETRIO_DERIVED_INTERVALS": "90s"}, "KLINETRIO_DERIVED_INTERVALS"),
        (
            {"KLINETRIO_DERIVED_INTERVALS": "1h", "KLINETRIO_INTERVALS": "1m,1h"},
            "collected already",
        ),
        ({"KLINETRIO_BACKUP_AT": "7pm"}, "KLINETRIO_BACKUP_AT"),
    ],
)
def test_bad_store_settings_are_one_clear_error(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load(env)


def test_retention_is_checked_against_the_look_back_given() -> None:
    s = load({"KLINETRIO_RETENTION": "candles:12h", "KLINETRIO_SYNC_LOOKBACK": "6h"})
    assert s.retention == (("candles", 12 * HOUR),)


# --- markets and universes -------------------------------------------------------------------


def test_symbols_take_markets_and_globs_and_keys_only_exact_names() -> None:
    s = load(
        {
            "KLINETRIO_SYMBOLS": "btcusdt,*usdt,usdm:avaxusdt,coinm:btcusd_perp",
            "KLINETRIO_INTERVALS": "1s,1m",
        }
    )
    assert s.symbols == ("BTCUSDT", "*USDT", "usdm:AVAXUSDT", "coinm:BTCUSD_PERP")
    # Futures have no 1s candles; a glob's series are known only from the exchange.
    assert s.stream_keys == [
        StreamKey("BTCUSDT", "1s"),
        StreamKey("BTCUSDT", "1m"),
        StreamKey("AVAXUSDT", "1m", "usdm"),
        StreamKey("BTCUSD_PERP", "1m", "coinm"),
    ]


def test_each_market_has_its_urls_and_the_refresh_and_statistics_settings() -> None:
    s = load(
        {
            "KLINETRIO_USDM_REST_URL": "http://127.0.0.1:9650",
            "KLINETRIO_USDM_WS_URL": "ws://127.0.0.1:9650/usdm",
            "KLINETRIO_COINM_WS_URL": "ws://127.0.0.1:9650/coinm",
            "KLINETRIO_SYMBOLS_REFRESH": "10m",
            "KLINETRIO_FUTURES_STATS": "on",
            "KLINETRIO_FUTURES_STATS_PERIOD": "15m",
        }
    )
    assert s.rest_url_of("usdm") == "http://127.0.0.1:9650"
    assert s.ws_url_of("usdm") == "ws://127.0.0.1:9650/usdm"
    assert s.ws_url_of("coinm") == "ws://127.0.0.1:9650/coinm"
    assert s.rest_url_of("coinm") == "https://dapi.binance.com"
    assert s.rest_url_of("spot") == "https://api.binance.com"
    assert s.symbols_refresh_ms == 10 * MINUTE
    assert s.futures_stats is True
    assert s.futures_stats_period == "15m"
    assert load().symbols_refresh_ms == HOUR
    assert load().futures_stats is False


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KLINETRIO_SYMBOLS": "margin:btcusdt"}, "market"),
        ({"KLINETRIO_USDM_WS_URL": "http://x"}, "KLINETRIO_USDM_WS_URL"),
        ({"KLINETRIO_SYMBOLS_REFRESH": "100ms"}, "at least 1s"),
        ({"KLINETRIO_FUTURES_STATS": "maybe"}, "KLINETRIO_FUTURES_STATS"),
        ({"KLINETRIO_FUTURES_STATS_PERIOD": "3m"}, "KLINETRIO_FUTURES_STATS_PERIOD"),
    ],
)
def test_bad_market_settings_are_one_clear_error(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load(env)


def test_streams_setting_names_the_kinds_collected() -> None:
    from klinetrio.settings import stream_keys_of

    assert load_settings(environ={}, dotenv=None).streams == ("kline",)
    s = load_settings(
        environ={"KLINETRIO_STREAMS": "kline, aggtrade,bookTicker,ticker,DEPTH"}, dotenv=None
    )
    assert s.streams == ("kline", "aggTrade", "bookTicker", "ticker", "depth")
    keys = stream_keys_of("spot", "BTCUSDT", ("1m",), s.streams)
    assert [k.stream_name for k in keys] == [
        "btcusdt@kline_1m", "btcusdt@aggTrade", "btcusdt@bookTicker", "btcusdt@ticker",
        "btcusdt@depth20",
    ]  # fmt: skip
    assert [k.is_kline for k in keys] == [True, False, False, False, False]
    assert StreamKey("BTCUSDT", "aggTrade").stream_name == "btcusdt@aggTrade"
    with pytest.raises(SettingsError, match="unknown stream kind"):
        load_settings(environ={"KLINETRIO_STREAMS": "kline,trades"}, dotenv=None)
