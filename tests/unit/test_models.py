"""Exact time conversions, log timestamps, and the key of a series."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from klinetrio.core.models import (
    Candle,
    StreamKey,
    datetime_to_ms,
    format_ms,
    ms_to_datetime,
    parse_utc_ms,
    us_to_datetime,
)
from klinetrio.errors import SettingsError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def test_epoch_is_zero() -> None:
    assert ms_to_datetime(0) == EPOCH
    assert us_to_datetime(0) == EPOCH
    assert datetime_to_ms(EPOCH) == 0


@pytest.mark.parametrize(
    ("t_ms", "expected"),
    [
        (1672531200000, datetime(2023, 1, 1, tzinfo=UTC)),
        (1672534799999, datetime(2023, 1, 1, 0, 59, 59, 999000, tzinfo=UTC)),
        (1679662800000, datetime(2023, 3, 24, 13, tzinfo=UTC)),
        (-1, datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)),
        (253402300799999, datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)),
    ],
)
def test_ms_to_datetime_is_exact_and_utc(t_ms: int, expected: datetime) -> None:
    dt = ms_to_datetime(t_ms)
    assert dt == expected
    assert dt.utcoffset() == timedelta(0)
    assert datetime_to_ms(dt) == t_ms


def test_microsecond_close_time_of_the_2025_archives_is_exact() -> None:
    # Spot archives since 2025 carry close times like this one (BTCUSDT 1h 2025-01-01 00:00).
    dt = us_to_datetime(1735693199999999)
    assert dt == datetime(2025, 1, 1, 0, 59, 59, 999999, tzinfo=UTC)
    assert datetime_to_ms(dt) == 1735693199999


def test_ms_round_trips_exactly_where_floats_would_not() -> None:
    rng = random.Random(2024)
    for _ in range(5000):
        t_ms = rng.randrange(-62_135_596_800_000 + 86_400_000, 253_402_300_799_999)
        assert datetime_to_ms(ms_to_datetime(t_ms)) == t_ms


def test_us_round_trips_exactly() -> None:
    rng = random.Random(7)
    for _ in range(5000):
        t_us = rng.randrange(0, 4_102_444_800_000_000)
        dt = us_to_datetime(t_us)
        assert (dt - EPOCH) // timedelta(microseconds=1) == t_us
        assert dt.microsecond == t_us % 1_000_000
        assert datetime_to_ms(dt) == t_us // 1000


def test_naive_datetime_is_read_as_utc() -> None:
    assert datetime_to_ms(datetime(2024, 1, 1)) == 1704067200000


def test_aware_datetime_in_another_zone_converts_to_the_same_instant() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert datetime_to_ms(datetime(2024, 1, 1, 2, tzinfo=plus_two)) == 1704067200000


def test_sub_millisecond_datetime_rounds_down_even_before_the_epoch() -> None:
    assert datetime_to_ms(datetime(2024, 1, 1, 0, 0, 0, 1999, tzinfo=UTC)) == 1704067200001
    assert datetime_to_ms(EPOCH - timedelta(microseconds=1)) == -1


@pytest.mark.parametrize(
    ("t_ms", "text"),
    [
        (1704067200000, "2024-01-01T00:00Z"),
        (1679662800000, "2023-03-24T13:00Z"),
        (1704067205000, "2024-01-01T00:00:05Z"),
        (1672534799999, "2023-01-01T00:59:59Z"),
        (1704067200123, "2024-01-01T00:00:00Z"),
        (0, "1970-01-01T00:00Z"),
    ],
)
def test_format_ms_shows_seconds_only_off_the_minute(t_ms: int, text: str) -> None:
    assert format_ms(t_ms) == text


def test_stream_key_names_the_binance_stream() -> None:
    key = StreamKey("BTCUSDT", "1M")
    assert key.stream_name == "btcusdt@kline_1M"
    assert key.market == "spot"
    assert str(key) == "BTCUSDT 1M"
    assert StreamKey("ETHUSDT", "1m", "usdm").stream_name == "ethusdt@kline_1m"


def test_stream_keys_are_hashable_and_ordered() -> None:
    keys = [StreamKey("ETHUSDT", "1m"), StreamKey("BTCUSDT", "1h"), StreamKey("BTCUSDT", "1d")]
    assert sorted(keys) == [keys[2], keys[1], keys[0]]
    assert len({*keys, StreamKey("ETHUSDT", "1m")}) == 3


def test_candle_key_and_defaults() -> None:
    candle = Candle(
        symbol="BTCUSDT",
        interval="1h",
        open_time=1672531200000,
        close_time_us=1672534799999000,
        open="16541.77000000",
        high="16545.70000000",
        low="16508.39000000",
        close="16529.67000000",
        volume="4364.83570000",
        quote_volume="72146293.58672290",
        trades=149854,
        taker_buy_volume="2179.94772000",
        taker_buy_quote_volume="36032352.87035720",
    )
    assert candle.key == StreamKey("BTCUSDT", "1h", "spot")
    assert (candle.source, candle.market) == ("ws", "spot")


# --- dates on the command line -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024", "2024-01-01T00:00Z"),
        ("2024-03", "2024-03-01T00:00Z"),
        ("2024-01-01", "2024-01-01T00:00Z"),
        ("2024-01-01T12", "2024-01-01T12:00Z"),
        ("2024-01-01T12:00", "2024-01-01T12:00Z"),
        ("2024-01-01T12:00Z", "2024-01-01T12:00Z"),
        ("2024-01-01 12:00:30", "2024-01-01T12:00:30Z"),
        ("2024-01-01t12:00z", "2024-01-01T12:00Z"),
        ("2024-01-01T12:00+02:00", "2024-01-01T10:00Z"),
        ("2024-01-01T00:30-0130", "2024-01-01T02:00Z"),
        ("1704067200000", "2024-01-01T00:00Z"),
        (" 2024-01-01 ", "2024-01-01T00:00Z"),
    ],
)
def test_dates_are_iso_8601_prefixes_in_utc_or_13_digit_ms(text: str, expected: str) -> None:
    assert format_ms(parse_utc_ms(text, "--start")) == expected


def test_fractions_of_a_second_are_exact_milliseconds() -> None:
    assert parse_utc_ms("2024-01-01T00:00:00.125Z", "--start") == 1_704_067_200_125
    assert parse_utc_ms("2024-01-01T00:00:00.5", "--start") == 1_704_067_200_500


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("2024-02-30", "day is out of range"),
        ("2023-02-29", "day is out of range"),
        ("2024-13", "month must be in 1..12"),
        ("2024-01-01T24:00", "hour must be in 0..23"),
        ("1704067200", "13 digits"),  # seconds, not milliseconds
        ("17040672000000", "13 digits"),
        ("20240101", "13 digits"),
        ("yesterday", "ISO 8601"),
        ("2024-1-1", "ISO 8601"),
        ("", "ISO 8601"),
    ],
)
def test_a_bad_date_is_one_clear_error(text: str, says: str) -> None:
    with pytest.raises(SettingsError, match="--start") as caught:
        parse_utc_ms(text, "--start")
    assert says in str(caught.value)
