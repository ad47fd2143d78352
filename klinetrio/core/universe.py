"""Which symbols to collect (pure): ``KLINETRIO_SYMBOLS`` entries and what they match.

An entry is ``[market:]name``, market ``spot`` when left out. A name is a symbol (any case) or a
glob (``*``, ``?``, ``[...]``) over the market's symbols: ``btcusdt``, ``*usdt``, ``usdm:*``,
``coinm:btcusd_perp``. Entries are kept normalized, as ``BTCUSDT`` for spot and
``usdm:BTCUSDT`` otherwise, so that a spot-only setting reads as it always has.

A glob selects the symbols that are TRADING now; an exact name selects its symbol whenever it is
TRADING. Both are read again at every refresh (see ``klinetrio.universe``): what starts trading
is added, what stops is removed. An exact name the exchange does not list at all is a typo and
stops the start; a glob that matches nothing is worth one warning.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from fnmatch import fnmatchcase

import msgspec

from klinetrio.binance.markets import MARKETS, Market, market_named
from klinetrio.errors import SettingsError

TRADING = "TRADING"
_GLOB_CHARS = frozenset("*?[")
_GLOB = re.compile(r"[A-Z0-9_*?\[\]!-]{1,40}")


class Selector(msgspec.Struct, frozen=True, order=True):
    """One entry of ``KLINETRIO_SYMBOLS``: a market and an exact name or a glob (upper case)."""

    market: str
    pattern: str

    @property
    def is_glob(self) -> bool:
        return not _GLOB_CHARS.isdisjoint(self.pattern)

    def matches(self, symbol: str) -> bool:
        return fnmatchcase(symbol, self.pattern) if self.is_glob else symbol == self.pattern

    def __str__(self) -> str:
        return self.pattern if self.market == "spot" else f"{self.market}:{self.pattern}"


class Listing(msgspec.Struct, frozen=True):
    """A symbol as the exchange lists it (from ``exchangeInfo``)."""

    market: str
    symbol: str
    status: str
    base_asset: str = ""
    quote_asset: str = ""

    @property
    def trading(self) -> bool:
        return self.status == TRADING

    def __str__(self) -> str:
        return self.symbol if self.market == "spot" else f"{self.market}:{self.symbol}"


def parse_selector(text: str) -> Selector:
    """``usdm:btcusdt`` → ``Selector("usdm", "BTCUSDT")``; a bad entry raises ``SettingsError``."""
    raw = text.strip()
    prefix, sep, name = raw.rpartition(":")
    if sep and not prefix.strip():
        raise SettingsError(f"invalid symbol {raw!r}; expected [market:]name, e.g. usdm:btcusdt")
    market: Market = market_named(prefix) if sep else MARKETS["spot"]
    pattern = name.strip().upper()
    selector = Selector(market.name, pattern)
    if selector.is_glob:
        if not _GLOB.fullmatch(pattern):
            raise SettingsError(f"invalid symbol pattern {raw!r}; e.g. *usdt or usdm:btc*")
    elif not market.valid_symbol(pattern):
        example = "btcusd_perp" if market.name == "coinm" else "btcusdt"
        where = "" if market.name == "spot" else f" on {market.title}"
        raise SettingsError(
            f"invalid symbol {raw!r}{where}; expected letters and digits, e.g. {example}"
        )
    return selector


def parse_selectors(text: str) -> tuple[str, ...]:
    """A comma list of entries → their normalized spellings, in order, each once."""
    entries: list[str] = []
    for raw in text.split(","):
        if raw.strip():
            entry = str(parse_selector(raw))
            if entry not in entries:
                entries.append(entry)
    if not entries:
        raise SettingsError("no symbols given; set KLINETRIO_SYMBOLS, e.g. btcusdt,ethusdt")
    return tuple(entries)


def selectors_of(entries: Iterable[str]) -> list[Selector]:
    return [parse_selector(entry) for entry in entries]


def markets_of(selectors: Iterable[Selector]) -> list[str]:
    """The markets the selectors reach, in the table's order (spot, usdm, coinm)."""
    wanted = {s.market for s in selectors}
    return [name for name in MARKETS if name in wanted]


class Resolution(msgspec.Struct, frozen=True):
    """What the selectors match in one reading of the exchange.

    ``selected`` holds every listing a selector matches, trading or not (what the ``symbols``
    table keeps); ``collected`` the trading ones, per market, in a stable order.
    """

    selected: tuple[Listing, ...]
    collected: dict[str, tuple[str, ...]]
    unknown: tuple[str, ...]  # exact entries the exchange does not list at all
    idle: tuple[Listing, ...]  # exact entries listed but not trading now
    empty_globs: tuple[str, ...]  # globs that match no trading symbol

    def keys_count(self) -> int:
        return sum(len(v) for v in self.collected.values())


def resolve(selectors: Sequence[Selector], listings: Mapping[str, Sequence[Listing]]) -> Resolution:
    """Match ``selectors`` against ``listings`` (per market, as exchangeInfo lists them).

    Only the markets present in ``listings`` are resolved; an exact entry of a market missing
    from it (the exchange could not be read) is neither selected nor unknown.
    """
    selected: dict[tuple[str, str], Listing] = {}
    unknown: list[str] = []
    idle: list[Listing] = []
    empty: list[str] = []
    for selector in selectors:
        if selector.market not in listings:
            continue
        by_name = {item.symbol: item for item in listings[selector.market]}
        if selector.is_glob:
            matched = [i for i in by_name.values() if i.trading and selector.matches(i.symbol)]
            if not matched:
                empty.append(str(selector))
            for match in matched:
                selected.setdefault((match.market, match.symbol), match)
            continue
        item = by_name.get(selector.pattern)
        if item is None:
            unknown.append(str(selector))
            continue
        selected.setdefault((item.market, item.symbol), item)
        if not item.trading:
            idle.append(item)
    collected: dict[str, tuple[str, ...]] = {}
    for (market, symbol), item in sorted(selected.items()):
        if item.trading:
            collected[market] = (*collected.get(market, ()), symbol)
    return Resolution(
        selected=tuple(selected[k] for k in sorted(selected)),
        collected=collected,
        unknown=tuple(unknown),
        idle=tuple(idle),
        empty_globs=tuple(empty),
    )


class Change(msgspec.Struct, frozen=True):
    """How the collected symbols of one market change between two resolutions."""

    market: str
    added: tuple[str, ...]
    removed: tuple[str, ...]


def changes(
    before: Mapping[str, Sequence[str]], after: Mapping[str, Sequence[str]], markets: Iterable[str]
) -> list[Change]:
    """Per market in ``markets``, the symbols ``after`` adds and the ones it drops."""
    result = []
    for market in markets:
        old, new = set(before.get(market, ())), set(after.get(market, ()))
        if old != new:
            result.append(Change(market, tuple(sorted(new - old)), tuple(sorted(old - new))))
    return result


__all__ = [
    "TRADING",
    "Change",
    "Listing",
    "Resolution",
    "Selector",
    "changes",
    "markets_of",
    "parse_selector",
    "parse_selectors",
    "resolve",
    "selectors_of",
]
