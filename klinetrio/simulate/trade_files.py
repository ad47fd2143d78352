"""data.binance.vision aggTrades files (pure): reading and writing their CSV in the spot and
futures shapes, and the candles a replay of trades alone shows as klines.

Spot files have no header, 8 columns and ``True``/``False`` (ms times, µs from 2025 on);
futures files a header row, 7 columns (no best match) and ``true``/``false``.
"""

from __future__ import annotations

from collections.abc import Sequence

from klinetrio.core.intervals import INTERVALS, Interval
from klinetrio.simulate.market import _UNITS, Bar, format_units, parse_units
from klinetrio.simulate.trades import Trade

FUTURES_TRADES_HEADER = (
    "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker\n"
)


def _to_ms(t: int) -> int:
    return t // 1000 if t >= 100_000_000_000_000 else t


def parse_agg_trades_csv(text: str) -> list[Trade]:
    """Rows of a data.binance.vision aggTrades CSV: spot (8 columns, no header, ``True``/
    ``False``, ms or µs) or futures (a header, 7 columns, ``true``/``false``)."""
    trades: list[Trade] = []
    for line in text.splitlines():
        cells = line.strip().split(",")
        if len(cells) < 7 or not cells[0].isdigit():
            continue
        trades.append(
            Trade(
                agg_id=int(cells[0]),
                price=cells[1],
                quantity=cells[2],
                first_id=int(cells[3]),
                last_id=int(cells[4]),
                time=_to_ms(int(cells[5])),
                buyer_is_maker=cells[6].strip().lower() == "true",
                best_match=len(cells) < 8 or cells[7].strip().lower() == "true",
            )
        )
    return trades


def trades_csv(trades: Sequence[Trade], spot: bool, micros: bool) -> str:
    """The CSV data.binance.vision writes: spot without a header, ``True``/``False`` and a
    best-match column; futures with a header, ``true``/``false`` and no best match."""
    scale = 1000 if micros else 1
    if spot:
        return "".join(
            f"{t.agg_id},{t.price},{t.quantity},{t.first_id},{t.last_id},{t.time * scale},"
            f"{t.buyer_is_maker},{t.best_match}\n"
            for t in trades
        )
    return FUTURES_TRADES_HEADER + "".join(
        f"{t.agg_id},{t.price},{t.quantity},{t.first_id},{t.last_id},{t.time},"
        f"{'true' if t.buyer_is_maker else 'false'}\n"
        for t in trades
    )


def candles_from_trades(symbol: str, interval: str, trades: Sequence[Trade]) -> list[Bar]:
    """The candles of ``interval`` that ``trades`` make (what a replay of trades alone shows as
    klines): exact sums of the quantities, quote volumes cut to 8 decimals."""
    iv = Interval(interval)
    bars: list[Bar] = []
    group: list[Trade] = []

    def close_group() -> None:
        if not group:
            return
        prices = [parse_units(t.price) for t in group]
        qtys = [parse_units(t.quantity) for t in group]
        quote = sum(p * q for p, q in zip(prices, qtys, strict=True)) // _UNITS
        taker = [q for t, q in zip(group, qtys, strict=True) if not t.buyer_is_maker]
        taker_quote = (
            sum(p * q for t, p, q in zip(group, prices, qtys, strict=True) if not t.buyer_is_maker)
            // _UNITS
        )
        open_ms = iv.floor(group[0].time)
        bars.append(
            Bar(
                symbol=symbol,
                interval=interval,
                open_time=open_ms,
                close_time=iv.close_time(open_ms),
                open=format_units(prices[0]),
                high=format_units(max(prices)),
                low=format_units(min(prices)),
                close=format_units(prices[-1]),
                volume=format_units(sum(qtys)),
                quote_volume=format_units(quote),
                trades=sum(t.last_id - t.first_id + 1 for t in group),
                taker_buy_volume=format_units(sum(taker)),
                taker_buy_quote_volume=format_units(taker_quote),
                first_trade_id=group[0].first_id,
            )
        )
        group.clear()

    for trade in trades:
        if group and iv.floor(trade.time) != iv.floor(group[0].time):
            close_group()
        group.append(trade)
    close_group()
    return bars


def finest_interval(intervals: Sequence[str]) -> str:
    """The shortest of ``intervals`` (``1M`` counts as 31 days)."""
    order = {name: i for i, name in enumerate(INTERVALS)}
    return min(intervals, key=lambda name: order.get(name, len(order)))


__all__ = [
    "FUTURES_TRADES_HEADER",
    "candles_from_trades",
    "finest_interval",
    "parse_agg_trades_csv",
    "trades_csv",
]
