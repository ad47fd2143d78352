"""Binance WebSocket kline streams of one market: the "streams" component.

``StreamGroup`` splits a market's streams into *shards* of at most ``streams_per_connection``
and runs one ``StreamConnection`` (``binance.connection``) per shard; what a shard knows and
the hot loop that reads its frames are in ``binance.shard``::

    StreamGroup.run                 one per market; shares one ConnectBudget (per-IP limit)
    └── StreamConnection.run        one per shard; sessions connect, subscribe, read, rotate
        └── Shard.read              per frame: decode, claim, send on, fan out

The set of streams changes while the group runs (``add``, ``remove``): a new stream goes to a
connection with room, or to a new connection when none has any, and is subscribed there without
touching any other stream; a connection left with no stream is closed.

Every connection of the group draws attempts from one ``ConnectBudget`` (Binance: 300 attempts
per 5 minutes per IP), so a reconnect storm across many shards stays within the limit whatever
each shard's backoff says.

Backpressure: every connection owns a clone of the send end of the channel to the writer and
closes it when it ends, so the writer's intake finishes once the last connection is gone. Per
frame the reader does as little as possible: a msgspec glance at the stream, event time and
``k.x``. Only closed candles travel on, one channel hop per socket read for all of that read's
candles; updates of candles still in progress are counted and dropped (observers may see them). The writer's intake drains the channel at memory speed
(see ``store.writer``), so the reader never stalls long enough to miss a ping; if it ever blocks
that long, the missing pong ends the session and the resulting gap is healed by sync.

Binance's rules that shape these modules: at most 1024 streams per connection; at most 5
incoming messages per second per connection on spot, 10 on futures (pings, pongs and
``SUBSCRIBE`` requests all count), so subscriptions are paced and our own pings are rare; the
server pings every 20 seconds (3 minutes on futures) and drops a connection that does not
answer (the transport answers pings while we keep reading).
"""

from __future__ import annotations

import itertools
import math
import ssl
from collections.abc import Sequence
from functools import partial

import trio
from loguru import logger

from klinetrio.binance.connection import (
    MAX_CONNECTION_AGE_S,
    PING_INTERVAL_S,
    PONG_TIMEOUT_S,
    StreamConnection,
    open_transport,
)
from klinetrio.binance.kind_streams import KindSinks
from klinetrio.binance.markets import SPOT, Market
from klinetrio.binance.shard_types import ConnectionStatistics, SyncRequester, Transport
from klinetrio.core.backoff import Backoff
from klinetrio.core.connect_budget import ConnectBudget
from klinetrio.core.models import Candle, StreamKey
from klinetrio.fanout import Fanout


def plan_connections(keys: Sequence[StreamKey], per_connection: int) -> list[list[StreamKey]]:
    """Split streams into evenly sized connections of at most ``per_connection`` each."""
    if not keys:
        return []
    count = math.ceil(len(keys) / per_connection)
    size = math.ceil(len(keys) / count)
    return [list(keys[i : i + size]) for i in range(0, len(keys), size)]


class StreamGroup:
    """The "streams" component of one market: its streams over as many connections as it takes.

    All connections share one ``ConnectBudget``: Binance limits attempts per IP, not per
    connection. Pass ``connect_budget`` to share it with the groups of other markets.
    """

    def __init__(
        self,
        ws_url: str,
        keys: Sequence[StreamKey],
        *,
        streams_per_connection: int = 1024,
        stall_timeout: float = 60.0,
        syncer: SyncRequester | None = None,
        max_connection_age: float = MAX_CONNECTION_AGE_S,
        ping_interval: float = PING_INTERVAL_S,
        pong_timeout: float = PONG_TIMEOUT_S,
        connect_budget: ConnectBudget | None = None,
        backoff_initial: float = 1.0,
        backoff_maximum: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
        fanout: Fanout | None = None,
        market: Market = SPOT,
        kinds: KindSinks | None = None,
    ) -> None:
        self.market = market
        self.connect_budget = connect_budget or ConnectBudget()
        self._per_connection = min(streams_per_connection, market.streams_per_connection)
        # How every connection of the group is made; only its streams, name and backoff differ.
        self._connection = partial(
            StreamConnection,
            ws_url,
            stall_timeout=stall_timeout,
            syncer=syncer,
            budget=self.connect_budget,
            max_connection_age=max_connection_age,
            ping_interval=ping_interval,
            pong_timeout=pong_timeout,
            ssl_context=ssl_context,
            fanout=fanout,
            market=market,
            kinds=kinds,
        )
        self._backoff = (backoff_initial, backoff_maximum)
        self._numbers = itertools.count(1)
        self.connections: list[StreamConnection] = []
        # Connections closed for want of streams; their counters stay readable.
        self.retired: list[StreamConnection] = []
        self._where: dict[StreamKey, StreamConnection] = {}
        # Set by run(): where connections added later are started, and the channel they get.
        self._nursery: trio.Nursery | None = None
        self._send_channel: trio.MemorySendChannel[Sequence[Candle]] | None = None
        for shard in plan_connections(keys, self._per_connection):
            self._new_connection(shard)

    @property
    def keys(self) -> list[StreamKey]:
        return list(self._where)

    def statistics(self) -> list[ConnectionStatistics]:
        """The running connections' counters (the retired ones: ``retired_statistics``)."""
        return [c.statistics() for c in self.connections]

    def retired_statistics(self) -> list[ConnectionStatistics]:
        return [c.statistics() for c in self.retired]

    @property
    def all_subscribed(self) -> bool:
        return all(c.subscribed for c in self.connections)

    def _new_connection(self, keys: Sequence[StreamKey]) -> StreamConnection:
        number = next(self._numbers)
        name = f"ws-{number}" if self.market.name == "spot" else f"{self.market.name}-ws-{number}"
        initial, maximum = self._backoff
        connection = self._connection(
            keys, name=name, backoff=Backoff(initial=initial, maximum=maximum)
        )
        self.connections.append(connection)
        for key in keys:
            self._where[key] = connection
        return connection

    def add(self, keys: Sequence[StreamKey]) -> list[StreamKey]:
        """Collect ``keys`` too: on connections with room, else on new ones. The other streams
        are not interrupted. Returns the keys that were new."""
        new = [
            k for k in dict.fromkeys(keys) if k not in self._where and k.market == self.market.name
        ]
        pending = list(new)
        for connection in self.connections:
            room = self._per_connection - connection.streams
            if room > 0 and pending:
                taken, pending = pending[:room], pending[room:]
                connection.add(taken)
                for key in taken:
                    self._where[key] = connection
        for shard in plan_connections(pending, self._per_connection):
            connection = self._new_connection(shard)
            if self._nursery is not None and self._send_channel is not None:
                self._nursery.start_soon(connection.run, self._send_channel.clone())
            logger.info(
                "{name}: a new connection for {count} streams",
                name=connection.name,
                count=len(shard),
            )
        return new

    def remove(self, keys: Sequence[StreamKey]) -> list[StreamKey]:
        """Stop collecting ``keys`` (unsubscribed where they are); a connection left with no
        stream is closed. Returns the keys that were collected."""
        by_connection: dict[StreamConnection, list[StreamKey]] = {}
        for key in keys:
            connection = self._where.pop(key, None)
            if connection is not None:
                by_connection.setdefault(connection, []).append(key)
        for connection, gone in by_connection.items():
            connection.remove(gone)
            if connection.streams == 0:
                logger.info("{name}: no stream left; closing it", name=connection.name)
                connection.close()
                self.connections.remove(connection)
                self.retired.append(connection)
        return [k for gone in by_connection.values() for k in gone]

    async def run(
        self,
        send_channel: trio.MemorySendChannel[Sequence[Candle]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run every connection; report started once each has subscribed for the first time."""
        with send_channel:
            async with trio.open_nursery() as nursery:
                # Connections added from now on are started in this nursery with a clone of
                # the channel; the group's own end stays open until the group is cancelled.
                self._nursery = nursery
                self._send_channel = send_channel
                # Start the connections side by side: each subscribes at Binance's pace.
                async with trio.open_nursery() as starting:
                    for connection in list(self.connections):
                        starting.start_soon(nursery.start, connection.run, send_channel.clone())
                task_status.started()
                await trio.sleep_forever()


__all__ = [
    "ConnectionStatistics",
    "StreamConnection",
    "StreamGroup",
    "SyncRequester",
    "Transport",
    "open_transport",
    "plan_connections",
]
