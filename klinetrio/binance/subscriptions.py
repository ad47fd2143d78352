"""What a session says to the server: ``SUBSCRIBE``/``UNSUBSCRIBE``, in batches, at the market's
pace.

A session of ``binance.connection`` first subscribes every stream its shard wants and waits
for every answer (``subscribe``), then, while it lives, keeps what it has asked for equal to
what the shard wants (``follow``). Every command goes out through ``request``, no sooner than
the market's message pace after the session's last one: Binance counts every incoming message
and closes a connection that sends too many. The answers to ``follow``'s commands come back
through the shard's reader (``Shard.answered``).
"""

from __future__ import annotations

from typing import Literal

import msgspec
import trio
from loguru import logger

from klinetrio.binance import wire
from klinetrio.binance.shard import Shard
from klinetrio.binance.shard_types import Session, Transport
from klinetrio.errors import StreamError

SUBSCRIBE_BATCH = 200


async def request(
    ws: Transport,
    session: Session,
    method: Literal["SUBSCRIBE", "UNSUBSCRIBE"],
    names: list[str],
    *,
    pace: float,
) -> int:
    """Send one ``SUBSCRIBE``/``UNSUBSCRIBE`` at the market's pace; returns its id."""
    wait_until = session.last_sent_at + pace
    if trio.current_time() < wait_until:
        await trio.sleep_until(wait_until)
    request_id = session.next_id
    session.next_id += 1
    command = wire.Subscribe(method, names, request_id)
    session.requests[request_id] = (method, names)
    await ws.send_message(wire.encoder.encode(command).decode())
    session.last_sent_at = trio.current_time()
    return request_id


async def subscribe(ws: Transport, session: Session, names: list[str], *, pace: float) -> None:
    """SUBSCRIBE ``names`` in batches at Binance's pace; wait for every answer.

    Kline frames that arrive before the last answer are dropped: after a failure the sync
    requested once we are subscribed covers them, and during a rotation the old session is
    still delivering them.
    """
    session.subscribed.update(names)
    for start in range(0, len(names), SUBSCRIBE_BATCH):
        await request(ws, session, "SUBSCRIBE", names[start : start + SUBSCRIBE_BATCH], pace=pace)
    pending = set(session.requests)
    with trio.move_on_after(max(10.0, len(pending) * 2 * pace)) as scope:
        while pending:
            message = await ws.get_message()
            try:
                result = wire.command_result_decoder.decode(message)
            except msgspec.DecodeError:
                try:
                    error = wire.command_error_decoder.decode(message)
                except msgspec.DecodeError:
                    continue  # a kline frame may already arrive; see the docstring
                raise StreamError(f"subscription refused: {error.error.msg}") from None
            if isinstance(result.id, int):
                pending.discard(result.id)
                session.requests.pop(result.id, None)
    if scope.cancelled_caught:
        raise StreamError("no answer to SUBSCRIBE within the time limit")


async def follow(ws: Transport, session: Session, shard: Shard, *, pace: float) -> None:
    """Keep this session's subscriptions equal to what the shard wants, while it lives.

    The answers come back through the reader (``Shard.answered``), which asks sync for each
    new stream once it is confirmed.
    """
    stats = shard.stats
    while True:
        changed = shard.wanted_changed
        wanted = set(shard.names)
        gone = sorted(session.subscribed - wanted)
        new = sorted(wanted - session.subscribed)
        for start in range(0, len(gone), SUBSCRIBE_BATCH):
            batch = gone[start : start + SUBSCRIBE_BATCH]
            session.subscribed.difference_update(batch)
            await request(ws, session, "UNSUBSCRIBE", batch, pace=pace)
            stats.unsubscribes += len(batch)
            logger.info(
                "{name} session {number} unsubscribed {count} streams",
                name=stats.name,
                number=session.number,
                count=len(batch),
            )
        for start in range(0, len(new), SUBSCRIBE_BATCH):
            batch = new[start : start + SUBSCRIBE_BATCH]
            session.subscribed.update(batch)
            await request(ws, session, "SUBSCRIBE", batch, pace=pace)
            stats.subscribes += len(batch)
            logger.info(
                "{name} session {number} subscribed {count} more streams",
                name=stats.name,
                number=session.number,
                count=len(batch),
            )
        if changed is shard.wanted_changed and wanted == set(shard.names):
            await changed.wait()


__all__ = ["SUBSCRIBE_BATCH", "follow", "request", "subscribe"]
