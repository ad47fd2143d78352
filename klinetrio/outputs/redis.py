"""The Redis publisher: every observed event to a channel, the newest to a key, and the list of
collected symbols (when ``KLINETRIO_REDIS_URL`` is set).

Names (DESIGN.md), with ``{m}`` empty for spot and ``usdm:``/``coinm:`` for futures::

    binance:{m}kline:{SYMBOL}:{interval}           PUBLISH of every kline event (closed or not)
    binance:latest:{m}kline:{SYMBOL}:{interval}    SET of the newest, EX 60
    binance:{m}symbols:active                      SET of the collected symbols

A payload is one JSON object: ``type``, ``market``, ``symbol``, the fields of the table with
times in ms and numbers as the exact decimal strings Binance sent, and ``closed`` for klines.

It is an observer of the fan-out (lossy): it reads its bounded channel in batches, and the
collector never waits for it. Redis being away never slows or stops anything: while it is, the
publisher keeps draining its channel (the events are counted as dropped, not queued up for a
flood later), logs one warning per outage, and reconnects with capped, jittered backoff.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import msgspec
import trio
from loguru import logger

from klinetrio.binance import wire_kinds
from klinetrio.binance.wire import KlineEvent
from klinetrio.core.backoff import Backoff
from klinetrio.fanout import Observed
from klinetrio.outputs.resp import RedisAddress, RespConnection, encode, parse_redis_url

LATEST_TTL_S = b"60"
BATCH = 2_000
# After the first event of a batch, this long for more to come: fewer, bigger round trips.
GATHER_S = 0.01
# Events encoded between checkpoints: a batch of thousands built in one go would hold the loop
# (and every stream connection on it) for milliseconds.
BUILD_SLICE = 200
# A batch that takes longer than this (Redis stalled, network frozen) is an outage.
CALL_DEADLINE_S = 5.0


class KlinePayload(msgspec.Struct, frozen=True, gc=False):
    type: str
    market: str
    symbol: str
    interval: str
    time: int
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
    event_time: int


_encoder = msgspec.json.Encoder()


def market_prefix(market: str) -> str:
    return "" if market == "spot" else f"{market}:"


def kline_payload(market: str, event: KlineEvent) -> bytes:
    k = event.kline
    return _encoder.encode(
        KlinePayload(
            "kline", market, k.symbol, k.interval, k.open_time, k.close_time, k.open, k.high,
            k.low, k.close, k.volume, k.quote_volume, k.trades, k.taker_buy_volume,
            k.taker_buy_quote_volume, k.closed, event.event_time,
        )
    )  # fmt: skip


_Names = dict[tuple[str, str, str], tuple[bytes, bytes]]
# A command's bytes are its head (the cached part up to the channel or key) and its payload.
_BULK = b"$%d\r\n%b\r\n"
_BULK_EX_60 = b"$%d\r\n%b\r\n$2\r\nEX\r\n$2\r\n60\r\n"


def _heads(channel: bytes, key: bytes) -> tuple[bytes, bytes]:
    """The RESP of ``PUBLISH channel`` and ``SET key``, less the payload (and ``EX 60``)."""
    return (
        b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%b\r\n" % (len(channel), channel),
        b"*5\r\n$3\r\nSET\r\n$%d\r\n%b\r\n" % (len(key), key),
    )


def _heads_of(cache: _Names, market: str, symbol: str, interval: str) -> tuple[bytes, bytes]:
    suffix = f"{market_prefix(market)}kline:{symbol}:{interval}"
    heads = cache[(market, symbol, interval)] = _heads(
        f"binance:{suffix}".encode(), f"binance:latest:{suffix}".encode()
    )
    return heads


class RequestBuilder:
    """One RESP request built a slice of events at a time: PUBLISH every event, SET only the
    newest of each key (EX 60). ``names`` caches the commands' heads per series."""

    def __init__(self, names: _Names | None = None) -> None:
        self._names = {} if names is None else names
        self._parts: list[bytes] = []
        self._latest: dict[bytes, bytes] = {}
        self.events = 0  # published by the request
        self.undecodable = 0  # left out: the frame did not decode in full

    def add(self, items: Sequence[Observed]) -> None:
        names = self._names
        append = self._parts.append
        latest = self._latest
        for item in items:
            event = item.decoded()
            if event is None:
                self.undecodable += 1
                continue
            if isinstance(event, KlineEvent):
                k = event.kline
                publish, set_latest = names.get((item.market, k.symbol, k.interval)) or _heads_of(
                    names, item.market, k.symbol, k.interval
                )
                payload = kline_payload(item.market, event)
            else:
                channel, key, payload = kind_message(item.market, item.stream, event, item.time_ms)
                publish, set_latest = _heads(channel, key)
            append(publish)
            append(_BULK % (len(payload), payload))
            latest[set_latest] = payload
            self.events += 1

    def finish(self) -> tuple[bytes, int]:
        """The request, and how many commands it holds."""
        parts = self._parts
        for set_latest, payload in self._latest.items():
            parts.append(set_latest)
            parts.append(_BULK_EX_60 % (len(payload), payload))
        return b"".join(parts), self.events + len(self._latest)


def request_for(batch: Sequence[Observed], cache: _Names | None = None) -> tuple[bytes, int]:
    """One RESP request for a whole batch (see ``RequestBuilder``)."""
    builder = RequestBuilder(cache)
    builder.add(batch)
    return builder.finish()


_KIND_CHANNEL = {
    "aggTrade": "trade",
    "bookTicker": "bookticker",
    "ticker": "ticker",
    "depth20": "depth",
}


def kind_message(
    market: str, stream: str, event: wire_kinds.Event, time_ms: int
) -> tuple[bytes, bytes, bytes]:
    """Channel, latest key and payload of an event of another kind (DESIGN.md's names:
    ``binance:trade:{SYMBOL}``, ``binance:bookticker:...``, ``binance:ticker:...``,
    ``binance:depth:...``): ``type``, ``market``, ``symbol``, ``time`` (what its table stores,
    ms) and the event's fields."""
    name, _, suffix = stream.partition("@")
    kind = _KIND_CHANNEL.get(suffix.split("@")[0], suffix)
    symbol = name.upper()
    suffix_name = f"{market_prefix(market)}{kind}:{symbol}"
    fields = msgspec.structs.asdict(event)
    payload = _encoder.encode(
        {"type": kind, "market": market, "symbol": symbol, "time": time_ms, **fields}
    )
    return f"binance:{suffix_name}".encode(), f"binance:latest:{suffix_name}".encode(), payload


def symbols_commands(market: str, symbols: Iterable[str]) -> list[list[bytes]]:
    key = f"binance:{market_prefix(market)}symbols:active".encode()
    members = sorted({s.upper().encode() for s in symbols})
    return [[b"DEL", key], [b"SADD", key, *members]] if members else [[b"DEL", key]]


@dataclass(frozen=True, slots=True)
class RedisStatistics:
    connected: bool = False
    published: int = 0
    batches: int = 0
    dropped: int = 0  # drained while Redis was away
    undecodable: int = 0  # frames that passed the stream's glance, not the full decode
    errors: int = 0
    outages: int = 0
    last_error: str | None = None


class RedisPublisher:
    """``await nursery.start(publisher.run, receive_channel)``; ``active`` names the collected
    symbols per market (for ``binance:symbols:active``)."""

    def __init__(self, url: str, active: dict[str, Sequence[str]]) -> None:
        self._address: RedisAddress = parse_redis_url(url)
        self._active = {market: tuple(symbols) for market, symbols in active.items()}
        self._stats = RedisStatistics()
        self._conn: RespConnection | None = None
        self._down_since: float | None = None
        self._names: _Names = {}

    def statistics(self) -> RedisStatistics:
        return self._stats

    def set_active(self, market: str, symbols: Sequence[str]) -> None:
        """The collected symbols changed (a listing); written at the next batch."""
        self._active[market] = tuple(symbols)
        self._symbols_sent = False

    async def run(
        self,
        receive_channel: trio.MemoryReceiveChannel[Observed],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Publish until the channel closes or the task is cancelled; started at once (Redis
        need not be up: the collector never waits for it)."""
        backoff = Backoff(initial=0.5, maximum=30.0)
        retry_at = 0.0
        self._symbols_sent = False
        with receive_channel, logger.contextualize(component="redis"):
            task_status.started()
            try:
                async for first in receive_channel:
                    await trio.sleep(GATHER_S)
                    batch = [first]
                    while len(batch) < BATCH:
                        try:
                            batch.append(receive_channel.receive_nowait())
                        except trio.WouldBlock:
                            break
                    if self._conn is None and trio.current_time() < retry_at:
                        self._stats = replace(self._stats, dropped=self._stats.dropped + len(batch))
                        continue
                    try:
                        await self._publish(batch)
                    except (OSError, trio.BrokenResourceError, trio.TooSlowError) as exc:
                        await self._outage(exc, len(batch))
                        retry_at = trio.current_time() + backoff.next_delay()
                    else:
                        backoff.reset()
            finally:
                if self._conn is not None:
                    with trio.move_on_after(1, shield=True):
                        await self._conn.aclose()

    async def _publish(self, batch: list[Observed]) -> None:
        with trio.fail_after(CALL_DEADLINE_S):
            if self._conn is None:  # connected first: no request is built for an outage
                self._conn = await RespConnection.open(self._address)
                self._back()
            builder = RequestBuilder(self._names)
            for start in range(0, len(batch), BUILD_SLICE):
                if start:
                    await trio.lowlevel.checkpoint()
                builder.add(batch[start : start + BUILD_SLICE])
            request, count = builder.finish()
            if not self._symbols_sent:
                commands = [c for m, s in self._active.items() for c in symbols_commands(m, s)]
                request += encode(commands)
                count += len(commands)
            errors = await self._conn.call_simple(request, count)
        self._symbols_sent = True
        self._stats = replace(
            self._stats,
            published=self._stats.published + builder.events,
            undecodable=self._stats.undecodable + builder.undecodable,
            batches=self._stats.batches + 1,
            errors=self._stats.errors + len(errors),
        )
        if errors:
            logger.warning(
                "Redis refused {count} command(s) of a batch: {error}",
                count=len(errors),
                error=errors[0],
            )

    async def _outage(self, exc: BaseException, lost: int) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.aclose()  # forceful: instant, whatever state the peer is in
        reason = "no answer in time" if isinstance(exc, trio.TooSlowError) else str(exc)
        first = self._down_since is None
        if first:
            self._down_since = trio.current_time()
            logger.warning(
                "Redis at {host}:{port} is unavailable ({error}); events are dropped until it is"
                " back, nothing else waits for it",
                host=self._address.host,
                port=self._address.port,
                error=reason,
            )
        self._stats = replace(
            self._stats,
            connected=False,
            dropped=self._stats.dropped + lost,
            outages=self._stats.outages + first,
            last_error=reason,
        )

    def _back(self) -> None:
        if self._down_since is not None:
            logger.success(
                "Redis is back after {seconds:.1f}s: publishing again",
                seconds=trio.current_time() - self._down_since,
            )
            self._down_since = None
        self._symbols_sent = False
        self._stats = replace(self._stats, connected=True)


__all__ = [
    "RedisPublisher",
    "RedisStatistics",
    "RequestBuilder",
    "kline_payload",
    "market_prefix",
    "request_for",
    "symbols_commands",
]
