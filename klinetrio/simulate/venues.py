"""The simulator's three markets: for each of spot, USD-M and COIN-M, its Binance rules (from
``binance.markets``), its candles, its listing schedule and its own request-weight meter.

Spot keeps the simulator's historical flags (``--weight-limit``, ``max_messages_per_second``);
the futures markets default to Binance's futures limits (2400 weight a minute, 10 incoming
WebSocket messages a second) and serve no ``1s`` candles.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from klinetrio.binance.markets import MARKETS
from klinetrio.binance.markets import Market as Rules
from klinetrio.core.intervals import INTERVALS
from klinetrio.simulate.books import BookModel
from klinetrio.simulate.config import SimulatorConfig
from klinetrio.simulate.faults import WeightLimiter
from klinetrio.simulate.listings import DELISTED_STATUS, ScheduledMarket, Window
from klinetrio.simulate.market import SYNTHETIC_LISTING_MS, Bar, Market, SyntheticMarket
from klinetrio.simulate.replay import ReplayedTrades, ReplayMarket
from klinetrio.simulate.trades import DerivedTrades, VenueTrades

MARKET_NAMES = ("spot", "usdm", "coinm")


@dataclass(slots=True)
class MarketStatistics:
    """One market's REST counters (a snapshot from ``Simulator.market_statistics()``); the
    totals over all markets are in ``SimulatorStatistics``."""

    rest_requests: int = 0
    rest_429: int = 0  # weight and /futures/data request limits alike
    rest_418: int = 0
    weight_used: int = 0  # all weight admitted since start


@dataclass(slots=True)
class Venue:
    """One market of the fake exchange, as its faces see it."""

    rules: Rules
    candles: Market
    windows: dict[str, Window]
    weight_limit: int
    limiter: WeightLimiter
    max_messages_per_second: int
    trades: VenueTrades
    books: BookModel
    counters: MarketStatistics = field(default_factory=MarketStatistics)
    _symbols: frozenset[str] = field(default=frozenset(), init=False, repr=False)

    def __post_init__(self) -> None:
        self._symbols = frozenset(self.candles.symbols)

    def has(self, symbol: str) -> bool:
        """Whether the market has ``symbol`` at all (listed, pending or delisted)."""
        return symbol in self._symbols

    @property
    def name(self) -> str:
        return self.rules.name

    def serves_interval(self, interval: str) -> bool:
        return interval in INTERVALS and interval not in self.rules.intervals_unsupported

    def status(self, symbol: str, now_ms: int) -> str | None:
        """exchangeInfo's status of ``symbol`` at ``now_ms``; None where it is not shown."""
        if symbol not in self._symbols:
            return None
        window = self.windows.get(symbol)
        state = "trading" if window is None else window.state(now_ms)
        if state == "trading":
            return "TRADING"
        if state == "delisted":
            return DELISTED_STATUS[self.name]
        return None if self.name == "spot" else "PENDING_TRADING"

    def known(self, symbol: str, now_ms: int) -> bool:
        """Whether REST answers for ``symbol`` (anything exchangeInfo shows)."""
        return self.status(symbol, now_ms) is not None


def make_venue(
    name: str,
    config: SimulatorConfig,
    candles: Market,
    windows: dict[str, Window],
    *,
    seed: int | None = None,
    listing_ms: int = SYNTHETIC_LISTING_MS,
) -> Venue:
    """The market ``name`` around ``candles``: its trades are replayed where ``candles`` is a
    replay with aggTrades files, derived from the candles elsewhere (``--trade-rate``), and its
    books and tickers follow the trades."""
    seed = config.seed if seed is None else seed
    inner = candles.inner if isinstance(candles, ScheduledMarket) else candles
    replay = inner if isinstance(inner, ReplayMarket) else None
    tables: dict[str, tuple[str, list[Bar]]] = {}
    if replay is not None:
        for symbol in replay.symbols:
            finest = replay.finest(symbol)
            if finest is not None:
                tables[symbol] = finest
    derived = DerivedTrades(
        candles,
        rate=config.trade_rate,
        seed=seed,
        listing_ms=inner.listing_ms if isinstance(inner, SyntheticMarket) else listing_ms,
        spot=name == "spot",
        tables=tables,
    )
    if replay is not None and replay.trades:
        trades = VenueTrades(derived, ReplayedTrades(replay.trades), tuple(replay.trades))
    else:
        trades = VenueTrades(derived)
    books = BookModel(candles, trades, seed=seed, listing_ms=listing_ms, inverse=name == "coinm")
    if name == "spot":
        limit, messages = config.weight_limit, config.max_messages_per_second
    else:
        limit, messages = config.futures_weight_limit, config.futures_messages_per_second
    return Venue(
        rules=MARKETS[name],
        candles=candles,
        windows=windows,
        weight_limit=limit,
        limiter=WeightLimiter(limit, config.weight_window),
        max_messages_per_second=messages,
        trades=trades,
        books=books,
    )


__all__ = ["MARKET_NAMES", "MarketStatistics", "Venue", "make_venue"]
