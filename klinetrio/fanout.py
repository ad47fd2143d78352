"""The fan-out: every event the streams decode goes to its observers, each through a bounded
channel of its own.

Two edges leave a stream connection, with opposite policies::

    stream connection ──closed candles──▶ writer       lossless: backpressure, never dropped
                      └──every event───▶ observers    lossy: send_nowait into a bounded channel;
                                                       a full one drops the event and counts it
                                                       (or, for a relay client, closes it)

The writer edge is the channel the root hands to the streams (see ``collector``); this module is
the other one. An *observer* (the Redis publisher, a relay client, a library subscription)
asks for streams by name and gets a receive channel of ``Observed`` events. The hot loop of a
connection pays one dict lookup per frame for the fan-out when nobody observes a stream, and
builds one ``Observed`` per frame that somebody does; the frame's text travels as received, so a
relay passes Binance's bytes on instead of encoding them again.

``Fanout.watching(market)`` is the table the hot loop reads: stream name → the observers of it,
a tuple that is replaced (never mutated) when observers come and go, so a loop iterating over
the old tuple is never disturbed. Only streams somebody observes have an entry: with no observer
the table is empty, and one truth test per frame replaces a lookup among 24,000 names (a third
of a kline frame's cost on the loop). Observers of every stream (``streams=None``) are in the
entry of every collected stream. The collected streams themselves are kept apart.

A candle in progress reaches observers undecoded (``Observed.event`` None: only its frame, which
the loop's glance vouched for): the relay passes the frame on, and the Redis publisher and
library subscriptions decode it in their own tasks (``Observed.decoded()``), off the streams'
path. A closed candle arrives decoded, as the writer edge needed it anyway.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import msgspec
import trio
from loguru import logger

from klinetrio.binance import wire, wire_kinds

Overflow = Literal["drop", "close"]
DEFAULT_CAPACITY = 1024


class Observed(msgspec.Struct, frozen=True, gc=False):
    """One event as a stream connection received it: where from, the frame's text exactly as
    sent (the combined-stream envelope), and its decoded form (a ``KlineEvent``, or one of
    ``wire_kinds.Event`` for the other kinds). ``time_ms``: for the other kinds, the ``time`` its
    table stores (a trade's time; a spot bookTicker's or depth snapshot's receipt on the
    exchange's clock, which their frames do not carry)."""

    market: str
    stream: str
    frame: str | bytes
    # None: a kline in progress that the hot loop only glanced at (see ``decoded``).
    event: wire.KlineEvent | wire_kinds.Event | None
    time_ms: int = 0

    def decoded(self) -> wire.KlineEvent | wire_kinds.Event | None:
        """The event: as the stream decoded it, or decoded from the frame now (a candle in
        progress is decoded by whoever needs its values, not by the hot loop, and the relay
        never needs them); None if the frame does not decode."""
        if self.event is not None:
            return self.event
        try:
            return wire.combined_decoder.decode(self.frame).data
        except msgspec.DecodeError:
            return None


@dataclass(frozen=True, slots=True)
class ObserverStatistics:
    name: str
    streams: int
    delivered: int
    dropped: int
    closed_for_overflow: bool


@dataclass(slots=True, eq=False)
class Observer:
    """One consumer of events: its channel's send end, its streams, and its counters.

    Only the fan-out sends on the channel; the consumer owns the receive end and ends the
    observation by closing it (or with ``Fanout.remove``).
    """

    name: str
    market: str
    overflow: Overflow
    send_channel: trio.MemorySendChannel[Observed]
    streams: set[str] | None  # None: every stream
    delivered: int = 0
    dropped: int = 0
    closed_for_overflow: bool = False
    # Called when ``overflow="close"`` ends the observation: the consumer may be stuck (a relay
    # client that stopped reading blocks its socket), so waiting for it to notice won't do.
    on_overflow: Callable[[], None] | None = field(default=None, repr=False)
    _fanout: Fanout | None = field(default=None, repr=False)

    def offer(self, item: Observed) -> None:
        """Hand ``item`` over without waiting: lossy by design (see the module docstring)."""
        try:
            self.send_channel.send_nowait(item)
        except trio.WouldBlock:
            self.dropped += 1
            if self.overflow == "close" and not self.closed_for_overflow:
                self.closed_for_overflow = True
                self._leave()
                if self.on_overflow is not None:
                    self.on_overflow()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._leave()  # the consumer closed its end: it is done
        else:
            self.delivered += 1

    def _leave(self) -> None:
        if self._fanout is not None:
            self._fanout.remove(self)

    def statistics(self) -> ObserverStatistics:
        return ObserverStatistics(
            self.name,
            -1 if self.streams is None else len(self.streams),
            self.delivered,
            self.dropped,
            self.closed_for_overflow,
        )


@dataclass(frozen=True, slots=True)
class FanoutStatistics:
    observers: tuple[ObserverStatistics, ...]
    # Totals per observer name, departed observers included (relay clients come and go).
    dropped_by_name: dict[str, int]
    delivered_by_name: dict[str, int]


class Fanout:
    """Who observes which stream. ``subscribe`` adds an observer, ``remove`` takes it away; the
    stream connections read ``watching(market)`` in their hot loop."""

    def __init__(self, collected: dict[str, Iterable[str]] | None = None) -> None:
        # market → stream name → observers, for observed streams only; market → collected.
        self._watching: dict[str, dict[str, tuple[Observer, ...]]] = {}
        self._collected: dict[str, set[str]] = {}
        self._everything: dict[str, list[Observer]] = {}
        self._observers: list[Observer] = []
        self._dropped: dict[str, int] = {}
        self._delivered: dict[str, int] = {}
        self._numbers = itertools.count(1)
        for market, streams in (collected or {}).items():
            self.collect(market, streams)

    def watching(self, market: str) -> dict[str, tuple[Observer, ...]]:
        """The live table of ``market``, observed streams only (the same dict object for the
        whole run)."""
        return self._watching.setdefault(market, {})

    def _collected_in(self, market: str) -> set[str]:
        return self._collected.setdefault(market, set())

    def collected(self, market: str) -> frozenset[str]:
        return frozenset(self._collected_in(market))

    def collect(self, market: str, streams: Iterable[str]) -> None:
        """Streams that are (now) collected: observers may ask for them."""
        collected = self._collected_in(market)
        table = self.watching(market)
        everything = tuple(self._everything.get(market, ()))
        for name in streams:
            if name not in collected:
                collected.add(name)
                if everything:
                    table[name] = everything

    def uncollect(self, market: str, streams: Iterable[str]) -> None:
        """Streams no longer collected (a delisting): their observers stop hearing of them,
        and new observers may not ask for them."""
        collected = self._collected_in(market)
        table = self.watching(market)
        for name in streams:
            collected.discard(name)
            for observer in table.pop(name, ()):
                if observer.streams is not None:
                    observer.streams.discard(name)

    def subscribe(
        self,
        market: str,
        streams: Iterable[str] | None,
        *,
        capacity: int = DEFAULT_CAPACITY,
        name: str | None = None,
        overflow: Overflow = "drop",
        on_overflow: Callable[[], None] | None = None,
    ) -> tuple[Observer, trio.MemoryReceiveChannel[Observed]]:
        """A new observer of ``streams`` (None: every stream of ``market``); the caller owns the
        receive channel. Names not collected raise ``ValueError`` (see ``unknown``)."""
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        wanted = None if streams is None else set(streams)
        if wanted is not None and (missing := self.unknown(market, wanted)):
            raise ValueError(f"not collected: {', '.join(sorted(missing))}")
        send, receive = trio.open_memory_channel[Observed](capacity)
        observer = self._observe(market, wanted, send, name, overflow, on_overflow)
        return observer, receive

    def subscribe_markets(
        self, markets: Iterable[str], *, capacity: int = DEFAULT_CAPACITY, name: str
    ) -> trio.MemoryReceiveChannel[Observed]:
        """One channel for every stream of every market in ``markets`` (the Redis publisher):
        an observer per market, each with a clone of the channel's send end."""
        send, receive = trio.open_memory_channel[Observed](capacity)
        with send:
            for market in markets:
                self._observe(market, None, send.clone(), name, "drop", None)
        return receive

    def _observe(
        self,
        market: str,
        wanted: set[str] | None,
        send: trio.MemorySendChannel[Observed],
        name: str | None,
        overflow: Overflow,
        on_overflow: Callable[[], None] | None,
    ) -> Observer:
        observer = Observer(
            name or f"subscriber-{next(self._numbers)}",
            market,
            overflow,
            send,
            None if wanted is None else set(),
            on_overflow=on_overflow,
            _fanout=self,
        )
        self._observers.append(observer)
        if wanted is None:
            self._everything.setdefault(market, []).append(observer)
            table = self.watching(market)
            for stream in self._collected_in(market):
                table[stream] = (*table.get(stream, ()), observer)
        else:
            self.add_streams(observer, wanted)
        return observer

    def unknown(self, market: str, streams: Iterable[str]) -> list[str]:
        """The names among ``streams`` that klinetrio does not collect in ``market``."""
        collected = self._collected_in(market)
        return [s for s in streams if s not in collected]

    def add_streams(self, observer: Observer, streams: Iterable[str]) -> None:
        assert observer.streams is not None, "an observer of every stream has them all"
        collected = self._collected_in(observer.market)
        table = self.watching(observer.market)
        for stream in streams:
            if stream in observer.streams or stream not in collected:
                continue
            observer.streams.add(stream)
            table[stream] = (*table.get(stream, ()), observer)

    def remove_streams(self, observer: Observer, streams: Iterable[str]) -> None:
        assert observer.streams is not None
        table = self.watching(observer.market)
        for stream in streams:
            if stream in observer.streams:
                observer.streams.discard(stream)
                _stop_observing(table, stream, observer)

    def remove(self, observer: Observer) -> None:
        """End an observation: no more events, and the send end closed (the consumer sees
        the end of its channel once it has read what was queued)."""
        if observer not in self._observers:
            return
        self._observers.remove(observer)
        if observer.closed_for_overflow:
            logger.warning(
                "observer {name} fell {count:,} events behind and was closed",
                name=observer.name,
                count=observer.dropped,
            )
        self._account(observer)
        table = self.watching(observer.market)
        if observer.streams is None:
            self._everything[observer.market].remove(observer)
            names: Sequence[str] = list(table)
        else:
            names = list(observer.streams)
            observer.streams.clear()
        for stream in names:
            _stop_observing(table, stream, observer)
        observer.send_channel.close()

    def _account(self, observer: Observer) -> None:
        self._dropped[observer.name] = self._dropped.get(observer.name, 0) + observer.dropped
        self._delivered[observer.name] = self._delivered.get(observer.name, 0) + observer.delivered
        observer.dropped = observer.delivered = 0

    def statistics(self) -> FanoutStatistics:
        dropped = dict(self._dropped)
        delivered = dict(self._delivered)
        for o in self._observers:
            dropped[o.name] = dropped.get(o.name, 0) + o.dropped
            delivered[o.name] = delivered.get(o.name, 0) + o.delivered
        return FanoutStatistics(tuple(o.statistics() for o in self._observers), dropped, delivered)


def _stop_observing(
    table: dict[str, tuple[Observer, ...]], stream: str, observer: Observer
) -> None:
    """``observer`` no longer observes ``stream``: a stream left with none leaves the table."""
    rest = tuple(o for o in table.get(stream, ()) if o is not observer)
    if rest:
        table[stream] = rest
    else:
        table.pop(stream, None)


__all__ = [
    "DEFAULT_CAPACITY",
    "Fanout",
    "FanoutStatistics",
    "Observed",
    "Observer",
    "ObserverStatistics",
    "Overflow",
]
