"""The live events an embedding program receives from ``Collector.subscribe``.

A ``KlineEvent`` is one kline frame as the exchange sent it, in klinetrio's names: the candle
so far (``closed`` False, it will change) or final (``closed`` True, exactly what the table
gets). Prices and volumes are the exact decimal strings Binance sent; times are ms since 1970.

A ``Subscription`` is a Trio receive channel of them, lossy by design: it holds ``capacity``
events, and when the program falls further behind the newest are dropped and counted
(``statistics().dropped``), never the collector slowed. Closing it ends the subscription.
"""

from __future__ import annotations

from types import TracebackType

import msgspec
import trio

from klinetrio.binance import wire
from klinetrio.fanout import Observed, Observer, ObserverStatistics


class KlineEvent(msgspec.Struct, frozen=True, gc=False):
    market: str
    symbol: str
    interval: str
    event_time: int
    open_time: int
    close_time: int
    open: str
    high: str
    low: str
    close: str
    volume: str
    quote_volume: str
    trades: int
    taker_buy_volume: str
    taker_buy_quote_volume: str
    closed: bool

    @classmethod
    def of(cls, observed: Observed) -> KlineEvent | None:
        """The event of a kline frame; None for another kind or a frame that does not decode."""
        e = observed.decoded()
        if not isinstance(e, wire.KlineEvent):
            return None
        k = e.kline
        return cls(
            observed.market, k.symbol, k.interval, e.event_time, k.open_time, k.close_time,
            k.open, k.high, k.low, k.close, k.volume, k.quote_volume, k.trades,
            k.taker_buy_volume, k.taker_buy_quote_volume, k.closed,
        )  # fmt: skip


class Subscription(trio.abc.ReceiveChannel[KlineEvent]):
    """Live events of the streams asked for; ``async for event in subscription``."""

    def __init__(self, observer: Observer, receive: trio.MemoryReceiveChannel[Observed]) -> None:
        self._observer = observer
        self._receive = receive

    async def receive(self) -> KlineEvent:
        # Only kline events: the other kinds (trades, tickers, depth) are not KlineEvents.
        while True:
            event = KlineEvent.of(await self._receive.receive())
            if event is not None:
                return event

    def receive_nowait(self) -> KlineEvent:
        while True:
            event = KlineEvent.of(self._receive.receive_nowait())
            if event is not None:
                return event

    async def aclose(self) -> None:
        await self._receive.aclose()

    def close(self) -> None:
        self._receive.close()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def statistics(self) -> ObserverStatistics:
        return self._observer.statistics()


__all__ = ["KlineEvent", "Subscription"]
