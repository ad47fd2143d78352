"""The universe: which symbols are collected, kept in step with the exchange's listings.

``KLINETRIO_SYMBOLS`` names symbols and globs per market (``*usdt,usdm:*``; see
``core.universe``). At start-up ``Universe.start`` reads each market's exchangeInfo once and
resolves them: an exact name the exchange does not list stops the start with one line (a typo),
a glob that matches nothing is one warning. Every ``KLINETRIO_SYMBOLS_REFRESH`` ``run`` reads
them again and hands each change to the collector: a new listing is added to the streams (which
subscribe it on a running connection and sync it from REST), a symbol that stops trading is
removed (unsubscribed, its later silence no gap). Each resolution is saved in the ``symbols``
table, with the exchange's time.

The exchange being unreachable is no reason to stop: at start-up the universe of the last run
(the ``symbols`` table) is collected meanwhile, and a refresh that fails is tried again a minute
later, the collected symbols left as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import trio
from loguru import logger

from klinetrio.binance.markets import MARKETS
from klinetrio.binance.wire import ExchangeInfo
from klinetrio.core.models import format_ms, plural
from klinetrio.core.universe import (
    TRADING,
    Change,
    Listing,
    Resolution,
    Selector,
    changes,
    markets_of,
    resolve,
    selectors_of,
)
from klinetrio.errors import (
    DatabaseUnavailable,
    ExchangeError,
    ExchangeUnavailable,
    SettingsError,
    UnknownSymbol,
)
from klinetrio.store.database import Database
from klinetrio.store.symbols import load_symbols, mark_unlisted, save_listings
from klinetrio.threads import Offload, thread_offload

# A refresh that could not read the exchange is tried again after this long (real seconds).
RETRY_S = 60.0
# Spot's exchangeInfo may be asked for a list of symbols (a much smaller answer) up to this many.
SPOT_LIST_LIMIT = 100

OnChange = Callable[[Change], None]


class ListingSource(Protocol):
    """What the universe needs of a market's REST client."""

    async def exchange_info(self, symbols: Sequence[str] | None = None) -> ExchangeInfo: ...


@dataclass(slots=True)
class UniverseStatistics:
    refreshes: int = 0
    failures: int = 0
    listed: int = 0  # symbols added after start-up
    delisted: int = 0  # symbols removed after start-up
    collected: dict[str, int] = field(default_factory=dict)  # per market
    last_refresh_ms: int | None = None  # the exchange's time of the last complete reading


class Universe:
    """Resolves ``KLINETRIO_SYMBOLS`` at start-up and follows the listings (see the module doc)."""

    def __init__(
        self,
        entries: Sequence[str],
        rest: Mapping[str, ListingSource],
        database: Database,
        *,
        refresh_s: float,
        offload: Offload | None = None,
    ) -> None:
        self.selectors: list[Selector] = selectors_of(entries)
        self.markets = markets_of(self.selectors)
        self._rest = rest
        self._db = database
        self._offload = offload or thread_offload(trio.CapacityLimiter(1))
        self._refresh_s = refresh_s
        self.collected: dict[str, tuple[str, ...]] = {}
        self._stats = UniverseStatistics()
        self._failing = False

    def statistics(self) -> UniverseStatistics:
        return replace(self._stats, collected={m: len(s) for m, s in self.collected.items()})

    @property
    def has_globs(self) -> bool:
        return any(s.is_glob for s in self.selectors)

    # --- start-up ----------------------------------------------------------------------------

    async def start(self) -> dict[str, tuple[str, ...]]:
        """Resolve the entries: the symbols to collect per market.

        Raises ``SettingsError`` for an exact name no market lists. A market that cannot be
        reached is collected as the last run left it in the ``symbols`` table (its exact names
        in any case).
        """
        listings: dict[str, list[Listing]] = {}
        seen: dict[str, int] = {}
        unreachable: list[str] = []
        for market in self.markets:
            try:
                listings[market], seen[market] = await self._read(market)
            except ExchangeUnavailable as exc:
                logger.warning(
                    "cannot reach the exchange's {market} REST API ({error}); collecting the "
                    "symbols the last run knew until it answers",
                    market=MARKETS[market].title,
                    error=exc,
                )
                unreachable.append(market)
            except ExchangeError as exc:
                raise SettingsError(str(exc)) from exc
        resolution = resolve(self.selectors, listings)
        if resolution.unknown:
            raise SettingsError(
                f"unknown symbol(s) on the exchange: {', '.join(resolution.unknown)}"
            )
        for entry in resolution.empty_globs:
            logger.warning("KLINETRIO_SYMBOLS {entry!r} matches no trading symbol now", entry=entry)
        if resolution.idle:
            logger.warning(
                "not trading now: {symbols}; collected from when they trade again",
                symbols=", ".join(f"{i} ({i.status})" for i in resolution.idle),
            )
        collected = dict(resolution.collected)
        for market in unreachable:
            collected[market] = await self._last_known(market)
        await self._save(resolution.selected, seen, {})
        self.collected = {m: collected.get(m, ()) for m in self.markets}
        if seen:
            self._stats.last_refresh_ms = max(seen.values())
        self._failing = bool(unreachable)
        logger.info(
            "collecting {symbols}: {markets}",
            symbols=plural(sum(len(s) for s in self.collected.values()), "symbol"),
            markets=", ".join(f"{len(s):,} {m}" for m, s in self.collected.items()),
        )
        return self.collected

    async def _last_known(self, market: str) -> tuple[str, ...]:
        """What the ``symbols`` table says was trading and is selected, and the exact names."""
        try:
            rows = await self._offload(self._db.call, "reading symbols", load_symbols, [market])
        except DatabaseUnavailable:
            rows = []
        names = {
            r.symbol
            for r in rows
            if r.status == TRADING
            and any(s.market == market and s.matches(r.symbol) for s in self.selectors)
        }
        names.update(s.pattern for s in self.selectors if s.market == market and not s.is_glob)
        return tuple(sorted(names))

    async def _read(self, market: str) -> tuple[list[Listing], int]:
        """One reading of ``market``'s exchangeInfo: its listings and the exchange's time."""
        rest = self._rest[market]
        names = [s.pattern for s in self.selectors if s.market == market]
        exact_only = not any(s.is_glob for s in self.selectors if s.market == market)
        info: ExchangeInfo | None = None
        if market == "spot" and exact_only and len(names) <= SPOT_LIST_LIMIT:
            try:
                info = await rest.exchange_info(names)
            except UnknownSymbol:
                info = None  # one of them is unknown: the whole list tells which
        if info is None:
            info = await rest.exchange_info()
        listings = [
            Listing(market, s.symbol, s.state, s.baseAsset, s.quoteAsset) for s in info.symbols
        ]
        return listings, info.serverTime

    async def _save(
        self,
        listings: Sequence[Listing],
        seen: Mapping[str, int],
        unlisted: Mapping[str, Sequence[str]],
    ) -> None:
        by_market: dict[str, list[Listing]] = {}
        for item in listings:
            by_market.setdefault(item.market, []).append(item)
        try:
            for market, items in by_market.items():
                await self._offload(
                    self._db.call, "saving symbols", save_listings, items, seen[market]
                )
            for market, names in unlisted.items():
                await self._offload(
                    self._db.call, "saving symbols", mark_unlisted, market, names, seen[market]
                )
        except DatabaseUnavailable as exc:
            # The table is rewritten at every refresh: the next one heals it.
            logger.warning("cannot save the symbols now ({error})", error=exc)

    # --- following the listings --------------------------------------------------------------

    async def run(
        self, on_change: OnChange, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Refresh every ``refresh_s`` (sooner after a failure) until cancelled."""
        task_status.started()
        with logger.contextualize(component="universe"):
            while True:
                await trio.sleep(
                    RETRY_S if self._failing and self._refresh_s > RETRY_S else self._refresh_s
                )
                await self.refresh(on_change)

    async def refresh(self, on_change: OnChange) -> list[Change]:
        """Read the markets again and apply what changed; returns the changes."""
        listings: dict[str, list[Listing]] = {}
        seen: dict[str, int] = {}
        failed = []
        for market in self.markets:
            try:
                listings[market], seen[market] = await self._read(market)
            except ExchangeError as exc:
                failed.append(market)
                self._stats.failures += 1
                if not self._failing:
                    logger.warning(
                        "cannot refresh the {market} symbols ({error}); trying again in"
                        " {retry:.0f}s",
                        market=MARKETS[market].title,
                        error=exc,
                        retry=min(RETRY_S, self._refresh_s),
                    )
        if self._failing and not failed:
            logger.info("symbols refreshed again")
        self._failing = bool(failed)
        self._stats.refreshes += 1
        if seen:
            self._stats.last_refresh_ms = max(seen.values())
        resolution = resolve(self.selectors, listings)
        after = dict(self.collected)
        for market in listings:
            after[market] = resolution.collected.get(market, ())
        found = changes(self.collected, after, list(listings))
        await self._save(self._to_save(resolution, listings), seen, self._unlisted(found, listings))
        self.collected = after
        for change in found:
            self._announce(change, listings[change.market], seen[change.market])
            self._stats.listed += len(change.added)
            self._stats.delisted += len(change.removed)
            on_change(change)
        return found

    def _to_save(
        self, resolution: Resolution, listings: Mapping[str, Sequence[Listing]]
    ) -> list[Listing]:
        """What the selectors match now, and what was collected until now (its new status)."""
        chosen = {(i.market, i.symbol): i for i in resolution.selected}
        for market, items in listings.items():
            before = set(self.collected.get(market, ()))
            for item in items:
                if item.symbol in before:
                    chosen.setdefault((market, item.symbol), item)
        return [chosen[k] for k in sorted(chosen)]

    @staticmethod
    def _unlisted(
        found: Sequence[Change], listings: Mapping[str, Sequence[Listing]]
    ) -> dict[str, list[str]]:
        result: dict[str, list[str]] = {}
        for change in found:
            listed = {i.symbol for i in listings[change.market]}
            gone = [s for s in change.removed if s not in listed]
            if gone:
                result[change.market] = gone
        return result

    @staticmethod
    def _announce(change: Change, listings: Sequence[Listing], seen_ms: int) -> None:
        status = {i.symbol: i.status for i in listings}
        for symbol in change.added:
            logger.info(
                "{entry} is trading: collecting it from its first candle (exchange time {at})",
                entry=str(Listing(change.market, symbol, TRADING)),
                at=format_ms(seen_ms),
            )
        for symbol in change.removed:
            logger.info(
                "{entry} stopped trading ({status}): no longer collected; its coverage ends at"
                " its last candle",
                entry=str(Listing(change.market, symbol, TRADING)),
                status=status.get(symbol, "no longer listed"),
            )


__all__ = ["ListingSource", "OnChange", "Universe", "UniverseStatistics"]
