"""The hot loop's handling of the other kinds: rows to their writer channel once each, one
batch per table and socket read, trade id jumps to the trade syncer, rows never sent counted
and their trades asked of REST, real frames of ``../shared/data``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import trio
import trio.testing

from klinetrio.binance import wire_kinds as wk
from klinetrio.binance.kind_streams import KindSinks, KindStreams
from klinetrio.core.models import StreamKey


class Requests:
    def __init__(self) -> None:
        self.gaps: list[tuple[StreamKey, int, int]] = []
        self.began: list[tuple[StreamKey, int]] = []

    def request_trades(self, key: StreamKey, first_id: int, last_id: int) -> None:
        self.gaps.append((key, first_id, last_id))

    def trades_began(self, key: StreamKey, first_id: int) -> None:
        self.began.append((key, first_id))


def trade_frame(agg_id: int) -> str:
    return (
        '{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1700000000000,"s":"BTCUSDT",'
        f'"a":{agg_id},"p":"1.5","q":"2","f":{agg_id},"l":{agg_id},"T":1700000000000,'
        '"m":true,"M":true}}'
    )


async def test_trades_once_each_and_jumps_become_requests() -> None:
    with trio.fail_after(5):
        send, receive = trio.open_memory_channel[Sequence[wk.Row]](100)
        requests = Requests()
        kinds = KindStreams("spot", KindSinks({"aggTrade": send}, requests))
        key = StreamKey("BTCUSDT", "aggTrade")
        kinds.add(key)
        for agg_id in (10, 11, 11, 10, 15, 16):
            assert kinds.take(trade_frame(agg_id), {}, None)
        assert receive.statistics().current_buffer_used == 0  # held until the read ends
        await kinds.flush()
        assert not kinds.pending
        (batch,) = [receive.receive_nowait()]  # one batch for the read
        assert [r[3] for r in batch] == [10, 11, 15, 16]
        assert requests.began == [(key, 10)]
        assert requests.gaps == [(key, 12, 14)]
        assert not kinds.take('{"result":null,"id":1}', {}, None)
        assert not kinds.take('{"stream":"btcusdt@kline_1m","data":{}}', {}, None)


async def test_rows_that_do_not_fit_are_counted_and_their_trades_asked_of_rest(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(5):
        trade_send, trade_receive = trio.open_memory_channel[Sequence[wk.Row]](0)
        book_send, book_receive = trio.open_memory_channel[Sequence[wk.Row]](1)
        requests = Requests()
        sinks = KindSinks({"aggTrade": trade_send, "bookTicker": book_send}, requests)
        kinds = KindStreams("spot", sinks)
        key = StreamKey("BTCUSDT", "aggTrade")
        kinds.add(key)
        kinds.add(StreamKey("BTCUSDT", "bookTicker"))
        book = '{"stream":"btcusdt@bookTicker","data":{"u":7,"s":"BTCUSDT","b":"1","B":"2","a":"3","A":"4"}}'
        for agg_id in (20, 21, 22):
            assert kinds.take(trade_frame(agg_id), {}, None)
        assert kinds.take(book, {}, None)
        # The session retires while the trades' channel is full: the flush is cancelled.
        with trio.move_on_after(1) as scope:
            await kinds.flush()
        assert scope.cancelled_caught
        assert not kinds.pending
        # The book row still fitted without waiting; the three trades did not.
        assert [r[3] for r in book_receive.receive_nowait()] == [7]
        assert sinks.undelivered == 3
        assert requests.gaps == [(key, 20, 22)]
        assert trade_receive.statistics().current_buffer_used == 0


async def test_real_book_tickers_are_stored_once(shared_data: Path) -> None:
    frames = (shared_data / "ws" / "spot" / "bookTicker_frames.jsonl").read_text().splitlines()
    with trio.fail_after(5):
        send, receive = trio.open_memory_channel[Sequence[wk.Row]](len(frames) * 2)
        kinds = KindStreams("spot", KindSinks({"bookTicker": send}))
        names = {wk.envelope_decoder.decode(f).stream for f in frames}
        for name in names:
            kinds.add(StreamKey(name.split("@")[0].upper(), "bookTicker"))
        for frame in frames + frames:  # a rotation: both sessions deliver every frame
            assert kinds.take(frame, {}, None)
        await kinds.flush()
        rows = [row for batch in [receive.receive_nowait()] for row in batch]
        assert len(rows) == len(frames)
        assert kinds.stats.duplicates == len(frames)
