"""core.universe: parsing KLINETRIO_SYMBOLS entries, resolving them against listings, changes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from klinetrio.core.universe import (
    Change,
    Listing,
    Selector,
    changes,
    markets_of,
    parse_selector,
    parse_selectors,
    resolve,
    selectors_of,
)
from klinetrio.errors import SettingsError


def listing(symbol: str, status: str = "TRADING", market: str = "spot") -> Listing:
    return Listing(market, symbol, status)


SPOT = [
    listing("BTCUSDT"),
    listing("ETHUSDT"),
    listing("ETHBTC"),
    listing("LUNAUSDT", "BREAK"),
    listing("NEWUSDT", "PRE_TRADING"),
]
USDM = [listing("BTCUSDT", market="usdm"), listing("AVAXUSDT", market="usdm")]
COINM = [
    listing("BTCUSD_PERP", market="coinm"),
    listing("BTCUSD_211231", "PENDING_TRADING", market="coinm"),
]


# --- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "market", "pattern", "spelled"),
    [
        ("btcusdt", "spot", "BTCUSDT", "BTCUSDT"),
        (" BTCUSDT ", "spot", "BTCUSDT", "BTCUSDT"),
        ("spot:ethbtc", "spot", "ETHBTC", "ETHBTC"),
        ("*usdt", "spot", "*USDT", "*USDT"),
        ("usdm:btcusdt", "usdm", "BTCUSDT", "usdm:BTCUSDT"),
        ("USDM:*", "usdm", "*", "usdm:*"),
        ("coinm:btcusd_perp", "coinm", "BTCUSD_PERP", "coinm:BTCUSD_PERP"),
        ("coinm:btcusd_211231", "coinm", "BTCUSD_211231", "coinm:BTCUSD_211231"),
        ("spot:*btc", "spot", "*BTC", "*BTC"),
        ("usdm:btc?usdt", "usdm", "BTC?USDT", "usdm:BTC?USDT"),
    ],
)
def test_an_entry_is_a_market_and_a_name_or_glob(
    text: str, market: str, pattern: str, spelled: str
) -> None:
    selector = parse_selector(text)
    assert selector == Selector(market, pattern)
    assert str(selector) == spelled


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("margin:btcusdt", "market"),
        (":btcusdt", r"expected \[market:\]name"),
        ("btc-usdt", "invalid symbol"),
        ("coinm:btcusd", "COIN-M"),  # a COIN-M contract names its delivery: _PERP or a date
        ("*usdt;drop", "invalid symbol pattern"),
    ],
)
def test_a_bad_entry_is_one_clear_error(text: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        parse_selector(text)


def test_a_list_is_normalized_and_each_entry_kept_once() -> None:
    assert parse_selectors("btcusdt, BTCUSDT ,usdm:*,,spot:btcusdt") == ("BTCUSDT", "usdm:*")
    with pytest.raises(SettingsError, match="no symbols"):
        parse_selectors(" , ")


@given(st.text(max_size=40))
def test_any_text_parses_or_raises_settings_error(text: str) -> None:
    try:
        entries = parse_selectors(text)
    except SettingsError:
        return
    assert entries
    assert parse_selectors(",".join(entries)) == entries  # normalized is a fixed point


def test_markets_come_in_the_tables_order() -> None:
    assert markets_of(selectors_of(["coinm:*", "BTCUSDT", "usdm:x1"])) == ["spot", "usdm", "coinm"]


# --- resolving -------------------------------------------------------------------------------


def test_globs_take_trading_symbols_only_and_exact_names_take_theirs() -> None:
    selectors = selectors_of(["*USDT", "ETHBTC", "usdm:*", "coinm:*"])
    got = resolve(selectors, {"spot": SPOT, "usdm": USDM, "coinm": COINM})
    assert got.collected == {
        "spot": ("BTCUSDT", "ETHBTC", "ETHUSDT"),
        "usdm": ("AVAXUSDT", "BTCUSDT"),
        "coinm": ("BTCUSD_PERP",),
    }
    assert got.unknown == ()
    assert got.idle == ()
    assert got.empty_globs == ()
    assert got.keys_count() == 6
    # The same spot name on another market is another symbol.
    assert {(i.market, i.symbol) for i in got.selected} >= {
        ("spot", "BTCUSDT"),
        ("usdm", "BTCUSDT"),
    }


def test_an_unlisted_exact_name_is_unknown_and_a_halted_one_idle() -> None:
    got = resolve(selectors_of(["BTCUSDT", "BTCUSDX", "LUNAUSDT"]), {"spot": SPOT})
    assert got.unknown == ("BTCUSDX",)
    assert got.idle == (listing("LUNAUSDT", "BREAK"),)
    assert got.collected == {"spot": ("BTCUSDT",)}
    # An idle symbol is kept in the table (selected) but not collected.
    assert [i.symbol for i in got.selected] == ["BTCUSDT", "LUNAUSDT"]


def test_a_glob_that_matches_nothing_trading_is_reported() -> None:
    got = resolve(selectors_of(["*BUSD", "LUNA*", "BTCUSDT"]), {"spot": SPOT})
    assert got.empty_globs == ("*BUSD", "LUNA*")
    assert got.collected == {"spot": ("BTCUSDT",)}


def test_a_market_that_could_not_be_read_is_left_out_not_unknown() -> None:
    got = resolve(selectors_of(["BTCUSDT", "usdm:BTCUSDT"]), {"spot": SPOT})
    assert got.unknown == ()
    assert got.collected == {"spot": ("BTCUSDT",)}


@given(
    st.lists(st.sampled_from(["BTCUSDT", "ETHUSDT", "ETHBTC", "LUNAUSDT", "NEWUSDT"]), unique=True),
    st.lists(st.sampled_from(["*", "*USDT", "*BTC", "ETH*", "X*"]), unique=True),
)
def test_collected_is_exactly_the_trading_symbols_some_selector_matches(
    exact: list[str], globs: list[str]
) -> None:
    selectors = selectors_of(exact + globs)
    if not selectors:
        return
    got = resolve(selectors, {"spot": SPOT})
    want = sorted(
        i.symbol for i in SPOT if i.trading and any(s.matches(i.symbol) for s in selectors)
    )
    assert list(got.collected.get("spot", ())) == want


# --- changes ---------------------------------------------------------------------------------


def test_changes_per_market_say_what_was_added_and_removed() -> None:
    before = {"spot": ("BTCUSDT", "LUNAUSDT"), "usdm": ("BTCUSDT",)}
    after = {"spot": ("BTCUSDT", "NEWUSDT"), "usdm": ("BTCUSDT",)}
    assert changes(before, after, ["spot", "usdm"]) == [Change("spot", ("NEWUSDT",), ("LUNAUSDT",))]
    assert changes(before, before, ["spot", "usdm"]) == []
    # Only the markets asked about are compared (an unread market changes nothing).
    assert changes(before, {"spot": before["spot"]}, ["spot"]) == []
