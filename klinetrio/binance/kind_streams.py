"""The streams beside klines in a shard's hot loop: aggTrade, bookTicker, ticker, depth20.

A kline frame never comes here: the shard's loop decodes it as before and only a frame that is
not a kline event (its decode failed) is offered to ``KindStreams.take``, so the cost per kline
frame is unchanged, whatever else is collected. A frame of another kind costs the failed kline
decode, one decode of the envelope and one of its data.

Per stream the shard remembers the newest id it handed on (agg id, update id, event time), so
during a rotation, when two sessions deliver the same frames, each event is stored once.
For trades that id is also what makes loss provable: agg ids are consecutive, so a jump on the
stream (a reconnect, a frame we could not read) is a range ``[last+1, next-1]`` handed to the
trade syncer, and the first trade of a stream after a start tells it where the stream began
(what lies between the store's newest id and that one is filled from REST).

Rows go to the writer of their table through ``KindSinks``: one channel per table. ``take``
claims a frame's row without a checkpoint; ``flush``, at the end of the socket read, sends each
table's rows of that read as one batch, without waiting while there is room (lossless: when a
channel is full the loop waits, as it does for candles). One send per table and read instead of
one per row: at thousands of book updates a second the writer's intake wakes once a read.
Rows claimed but never sent (the session retired or failed first) are counted in
``undelivered``, and for trades their ids go to the trade syncer, which fills them from REST.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import msgspec
import trio

from klinetrio.binance import wire_kinds as wk
from klinetrio.core.models import StreamKey
from klinetrio.fanout import Observed, Observer

KIND_OF_STREAM: dict[str, wk.Kind] = {
    "aggTrade": "aggTrade",
    "bookTicker": "bookTicker",
    "ticker": "ticker",
    "depth20": "depth",
}


class TradeSyncRequester(Protocol):
    """Who fills trade gaps by agg id (see ``trade_sync.TradeSyncer``)."""

    def request_trades(self, key: StreamKey, first_id: int, last_id: int) -> None: ...

    def trades_began(self, key: StreamKey, first_id: int) -> None: ...


@dataclass(slots=True, eq=False)
class KindSinks:
    """The writer channels of the other kinds (send ends, owned by whoever made this: closing
    it closes them all) and the trade syncer."""

    channels: dict[wk.Kind, trio.MemorySendChannel[Sequence[wk.Row]]]
    trade_syncer: TradeSyncRequester | None = None
    undelivered: int = 0

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()

    def __enter__(self) -> KindSinks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(slots=True)
class KindSeries:
    key: StreamKey
    kind: wk.Kind
    # The newest agg id / update id / event time handed on (-1: none yet).
    last: int = -1


@dataclass(slots=True)
class KindStatistics:
    frames: int = 0
    duplicates: int = 0
    trade_gaps: int = 0


class KindStreams:
    """The other-kind streams of one shard and what each has delivered."""

    def __init__(self, market: str, sinks: KindSinks | None) -> None:
        self.market = market
        self.sinks = sinks
        self.series: dict[str, KindSeries] = {}
        self.stats = KindStatistics()
        # The rows of this socket read, by table, until ``flush``; and of trades, per series,
        # the first and last agg id claimed (what REST must bring if they are never sent).
        self.pending: dict[wk.Kind, list[wk.Row]] = {}
        self._pending_trades: dict[str, tuple[KindSeries, int, int]] = {}
        # The exchange's clock, estimated from the newest event time seen (spot bookTicker and
        # depth20 frames carry none: their time is the receive time on this estimate).
        self._offset_ms = 0

    def add(self, key: StreamKey) -> bool:
        name = key.stream_name
        if name in self.series:
            return False
        self.series[name] = KindSeries(key, KIND_OF_STREAM[key.interval])
        return True

    def remove(self, key: StreamKey) -> bool:
        return self.series.pop(key.stream_name, None) is not None

    def exchange_now_ms(self) -> int:
        return int(time.time() * 1000) + self._offset_ms

    def saw_event_time(self, event_ms: int) -> None:
        self._offset_ms = event_ms - int(time.time() * 1000)

    def take(
        self,
        message: str | bytes,
        watching: dict[str, tuple[Observer, ...]],
        last_kline_event_ms: int | None,
    ) -> bool:
        """Handle a frame of another kind: its row is claimed and held for ``flush``, the event
        offered to observers. False when it is not one (the caller goes on)."""
        try:
            envelope = wk.envelope_decoder.decode(message)
        except msgspec.DecodeError:
            return False
        series = self.series.get(envelope.stream)
        if series is None:
            # A stream removed a moment ago, or not ours: nothing to decode.
            return "@kline_" not in envelope.stream and "@" in envelope.stream
        kind = series.kind
        try:
            event = wk.decode_data(kind, envelope.data, self.market)
        except msgspec.DecodeError:
            return False
        self.stats.frames += 1
        if last_kline_event_ms and last_kline_event_ms > self.exchange_now_ms():
            self.saw_event_time(last_kline_event_ms)
        row: wk.Row
        if isinstance(event, wk.AggTrade):
            self.saw_event_time(event.event_time)
            agg_id = event.agg_id
            last = series.last
            if agg_id <= last:
                self.stats.duplicates += 1
                return True
            syncer = None if self.sinks is None else self.sinks.trade_syncer
            if last < 0:
                if syncer is not None:
                    syncer.trades_began(series.key, agg_id)
            elif agg_id > last + 1:
                self.stats.trade_gaps += 1
                if syncer is not None:
                    syncer.request_trades(series.key, last + 1, agg_id - 1)
            series.last = agg_id
            row = event.row(self.market)
            held = self._pending_trades.get(envelope.stream)
            first = agg_id if held is None else held[1]
            self._pending_trades[envelope.stream] = (series, first, agg_id)
        elif isinstance(event, wk.BookTicker):
            if event.update_id <= series.last:
                self.stats.duplicates += 1
                return True
            series.last = event.update_id
            if event.event_time:
                self.saw_event_time(event.event_time)
            row = event.row(self.market, self.exchange_now_ms())
        elif isinstance(event, wk.Ticker):
            if event.event_time <= series.last:
                self.stats.duplicates += 1
                return True
            series.last = event.event_time
            self.saw_event_time(event.event_time)
            row = event.row(self.market)
        else:
            if event.last_update_id <= series.last:
                self.stats.duplicates += 1
                return True
            series.last = event.last_update_id
            row = event.row(self.market, series.key.symbol, self.exchange_now_ms())
        rows = self.pending.get(kind)
        if rows is None:
            self.pending[kind] = [row]
        else:
            rows.append(row)
        watchers = watching.get(envelope.stream)
        if watchers:
            observed = Observed(self.market, envelope.stream, message, event, row[2])
            for watcher in watchers:
                watcher.offer(observed)
        return True

    async def flush(self) -> None:
        """Send the rows of this read, one batch per table. Cancelled while a channel is full
        (a session retiring), the rows not sent are abandoned as ``undelivered``."""
        pending = self.pending
        sinks = self.sinks
        if sinks is None:
            self._clear()
            return
        try:
            for kind, rows in list(pending.items()):
                channel = sinks.channels.get(kind)
                if channel is not None:
                    try:
                        channel.send_nowait(rows)
                    except trio.WouldBlock:
                        await channel.send(rows)
                del pending[kind]  # sent: what is left is what ``abandon`` must account for
        except BaseException:
            self.abandon()
            raise
        self._clear()

    def abandon(self) -> None:
        """The read ends before ``flush`` could finish (a failure, a retiring session): what
        fits in its channel without waiting is still sent (no checkpoint); the rest is counted,
        and trades among it are asked of REST (the other session of a rotation skipped them as
        duplicates)."""
        sinks = self.sinks
        if sinks is not None:
            for kind, rows in list(self.pending.items()):
                channel = sinks.channels.get(kind)
                if channel is None:
                    continue
                try:
                    channel.send_nowait(rows)
                except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                    sinks.undelivered += len(rows)
                    continue
                del self.pending[kind]
            syncer = sinks.trade_syncer
            if syncer is not None and "aggTrade" in self.pending:
                for series, first, last in self._pending_trades.values():
                    syncer.request_trades(series.key, first, last)
        self._clear()

    def _clear(self) -> None:
        self.pending.clear()
        self._pending_trades.clear()


__all__ = [
    "KIND_OF_STREAM",
    "KindSeries",
    "KindSinks",
    "KindStatistics",
    "KindStreams",
    "TradeSyncRequester",
]
