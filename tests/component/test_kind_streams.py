"""The hot loop's handling of the other kinds: rows to their writer channel once each, trade
id jumps to the trade syncer, real frames of ``../shared/data``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import trio

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
            assert await kinds.take(trade_frame(agg_id), {}, None)
        rows: list[wk.Row] = []
        while True:
            try:
                rows.append(receive.receive_nowait()[0])
            except trio.WouldBlock:
                break
        assert [r[3] for r in rows] == [10, 11, 15, 16]
        assert requests.began == [(key, 10)]
        assert requests.gaps == [(key, 12, 14)]
        assert not await kinds.take('{"result":null,"id":1}', {}, None)
        assert not await kinds.take('{"stream":"btcusdt@kline_1m","data":{}}', {}, None)


async def test_real_book_tickers_are_stored_once(shared_data: Path) -> None:
    frames = (shared_data / "ws" / "spot" / "bookTicker_frames.jsonl").read_text().splitlines()
    with trio.fail_after(5):
        send, receive = trio.open_memory_channel[Sequence[wk.Row]](len(frames) * 2)
        kinds = KindStreams("spot", KindSinks({"bookTicker": send}))
        names = {wk.envelope_decoder.decode(f).stream for f in frames}
        for name in names:
            kinds.add(StreamKey(name.split("@")[0].upper(), "bookTicker"))
        for frame in frames + frames:  # a rotation: both sessions deliver every frame
            assert await kinds.take(frame, {}, None)
        assert receive.statistics().current_buffer_used == len(frames)
        assert kinds.stats.duplicates == len(frames)
