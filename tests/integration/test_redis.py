"""The Redis publisher against a real Redis, read by an independent client (redis-py).

Every event played into the fan-out is published to its channel in order with DESIGN.md's
payload, the newest is kept under ``binance:latest:...`` with a TTL, the collected symbols are a
set; and Redis going away is counted and survived, never waited for.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import msgspec
import redis
import trio
import trio.lowlevel
from support import eventually
from support.proxy import CuttableProxy

from klinetrio.binance import wire
from klinetrio.fanout import Fanout, Observed
from klinetrio.outputs.redis import RedisPublisher


def symbol() -> str:
    """A symbol of this test alone: channels are global to a Redis server."""
    return f"T{uuid.uuid4().hex[:8].upper()}USDT"


def frame(name: str, open_time: int, closed: bool) -> str:
    k = {
        "t": open_time, "T": open_time + 3_599_999, "s": name, "i": "1h", "f": 1, "L": 2,
        "o": "1.10", "c": f"1.{open_time % 97}", "h": "9.30", "l": "1.00", "v": "5.5",
        "n": 7, "x": closed, "q": "6.6", "V": "2.2", "Q": "3.3", "B": "0",
    }  # fmt: skip
    data = {"e": "kline", "E": open_time + 5, "s": name, "k": k}
    return msgspec.json.encode({"stream": f"{name.lower()}@kline_1h", "data": data}).decode()


def play(fanout: Fanout, text: str) -> None:
    envelope = wire.combined_decoder.decode(text)
    observed = Observed("spot", envelope.stream, text, envelope.data)
    for watcher in fanout.watching("spot").get(envelope.stream, ()):
        watcher.offer(observed)


@contextmanager
def subscriber(url: str, channel: str) -> Iterator[list[dict[str, object]]]:
    """Messages of ``channel``, gathered by redis-py in a thread of its own."""
    client = redis.Redis.from_url(url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel)
    received: list[dict[str, object]] = []
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            message = pubsub.get_message(timeout=0.05)
            if message is not None:
                received.append(json.loads(message["data"]))

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    try:
        yield received
    finally:
        stop.set()
        thread.join(5)
        pubsub.close()
        client.close()


async def test_every_event_is_published_with_the_newest_kept(redis_url: str) -> None:
    name = symbol()
    stream = f"{name.lower()}@kline_1h"
    fanout = Fanout({"spot": [stream]})
    publisher = RedisPublisher(redis_url, {"spot": [name, "ETHUSDT"]})
    check = redis.Redis.from_url(redis_url)
    with subscriber(redis_url, f"binance:kline:{name}:1h") as received, trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            _, events = fanout.subscribe("spot", None, capacity=1000, name="redis")
            await nursery.start(publisher.run, events)
            texts = [
                frame(name, h * 3_600_000, closed=(i % 2 == 1)) for i, h in enumerate(range(40))
            ]
            for text in texts:
                play(fanout, text)
                await trio.lowlevel.checkpoint()
            await eventually(lambda: len(received) == len(texts))
            nursery.cancel_scope.cancel()
    assert [(m["time"], m["close"], m["closed"]) for m in received] == [
        (h * 3_600_000, f"1.{(h * 3_600_000) % 97}", i % 2 == 1) for i, h in enumerate(range(40))
    ]
    assert {m["type"] for m in received} == {"kline"}
    assert {m["market"] for m in received} == {"spot"}
    latest = json.loads(check.get(f"binance:latest:kline:{name}:1h") or b"{}")
    assert latest == received[-1]
    assert 0 < check.ttl(f"binance:latest:kline:{name}:1h") <= 60
    assert {name.encode(), b"ETHUSDT"} <= check.smembers("binance:symbols:active")
    stats = publisher.statistics()
    assert (stats.published, stats.dropped, stats.errors, stats.outages) == (40, 0, 0, 0)
    check.close()


async def test_redis_away_is_counted_and_survived(redis_url: str) -> None:
    parts = urlsplit(redis_url)
    proxy = CuttableProxy(parts.hostname or "127.0.0.1", parts.port or 6379)
    name = symbol()
    stream = f"{name.lower()}@kline_1h"
    fanout = Fanout({"spot": [stream]})
    with subscriber(redis_url, f"binance:kline:{name}:1h") as received, trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(proxy.run)
            publisher = RedisPublisher(
                f"redis://127.0.0.1:{proxy.port}{parts.path}", {"spot": [name]}
            )
            _, events = fanout.subscribe("spot", None, capacity=1000, name="redis")
            await nursery.start(publisher.run, events)
            play(fanout, frame(name, 0, closed=True))
            await eventually(lambda: len(received) == 1)
            proxy.cut()
            # The fan-out never waits: every event is offered at once while Redis is away.
            for h in range(1, 21):
                play(fanout, frame(name, h * 3_600_000, closed=True))
                await trio.sleep(0.01)
            await eventually(lambda: publisher.statistics().outages == 1)
            assert not publisher.statistics().connected
            proxy.restore()
            for h in range(21, 400):
                play(fanout, frame(name, h * 3_600_000, closed=True))
                await trio.sleep(0.01)
                if publisher.statistics().connected:
                    break
            await eventually(lambda: publisher.statistics().connected)
            last = h
            play(fanout, frame(name, (last + 1) * 3_600_000, closed=True))
            await eventually(lambda: received[-1]["time"] == (last + 1) * 3_600_000)
            # The subscriber may see the last message before the publisher has read Redis's
            # reply and counted it: wait for the count too.
            await eventually(
                lambda: (
                    publisher.statistics().published + publisher.statistics().dropped == last + 2
                )
            )
            nursery.cancel_scope.cancel()
    stats = publisher.statistics()
    assert stats.outages == 1
    assert stats.dropped >= 1
    assert stats.published + stats.dropped == last + 2
    assert fanout.statistics().dropped_by_name.get("redis", 0) == 0


async def test_the_other_kinds_go_to_their_channels(redis_url: str) -> None:
    """aggTrade and bookTicker events: DESIGN.md's channels, ``time`` as the table stores it,
    the event's fields as exact strings, the newest kept under ``binance:latest:...``."""
    from klinetrio.binance import wire_kinds

    name = symbol()
    streams = [f"{name.lower()}@aggTrade", f"{name.lower()}@bookTicker"]
    fanout = Fanout({"spot": streams})
    publisher = RedisPublisher(redis_url, {"spot": [name]})
    trade = {
        "e": "aggTrade",
        "E": 1_700_000_000_005,
        "s": name,
        "a": 12,
        "p": "0.00001234",
        "q": "1234567.00",
        "f": 40,
        "l": 41,
        "T": 1_700_000_000_001,
        "m": True,
        "M": True,
    }
    book = {"u": 400900217, "s": name, "b": "25.35190000", "B": "31.21000000",
            "a": "25.36520000", "A": "40.66000000"}  # fmt: skip
    check = redis.Redis.from_url(redis_url)
    with (
        subscriber(redis_url, f"binance:trade:{name}") as trades,
        subscriber(redis_url, f"binance:bookticker:{name}") as books,
        trio.fail_after(20),
    ):
        async with trio.open_nursery() as nursery:
            _, events = fanout.subscribe("spot", None, capacity=100, name="redis")
            await nursery.start(publisher.run, events)
            for stream, data, time_ms in (
                (streams[0], trade, trade["T"]),
                (streams[1], book, 1_700_000_000_777),
            ):
                text = msgspec.json.encode({"stream": stream, "data": data}).decode()
                kind = "aggTrade" if "aggTrade" in stream else "bookTicker"
                event = wire_kinds.decode_data(kind, msgspec.json.encode(data), "spot")
                observed = Observed("spot", stream, text, event, int(time_ms))  # type: ignore[call-overload]
                for watcher in fanout.watching("spot").get(stream, ()):
                    watcher.offer(observed)
            await eventually(lambda: len(trades) == 1 and len(books) == 1)
            nursery.cancel_scope.cancel()
    [t] = trades
    assert (t["type"], t["market"], t["symbol"], t["time"]) == ("trade", "spot", name, trade["T"])
    assert (t["agg_id"], t["price"], t["quantity"], t["buyer_is_maker"]) == (
        12,
        "0.00001234",
        "1234567.00",
        True,
    )
    [b] = books
    assert (b["type"], b["time"], b["update_id"], b["bid_price"], b["ask_qty"]) == (
        "bookticker",
        1_700_000_000_777,
        400900217,
        "25.35190000",
        "40.66000000",
    )
    assert json.loads(check.get(f"binance:latest:trade:{name}") or b"{}") == t
    assert json.loads(check.get(f"binance:latest:bookticker:{name}") or b"{}") == b
    check.close()
