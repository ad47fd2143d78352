"""``exchangeInfo`` bodies in each market's shape (pure), modelled on real responses: spot's
``/api/v3/exchangeInfo``, USD-M's ``/fapi/v1/exchangeInfo`` (``futuresType``, ``pair``,
``contractType``, ``status``) and COIN-M's ``/dapi/v1/exchangeInfo`` (``contractStatus``
instead of ``status``, ``contractSize``, symbols like ``BTCUSD_PERP`` and ``BTCUSD_211231``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

_QUOTES = ("FDUSD", "USDT", "USDC", "BUSD", "TUSD", "BTC", "ETH", "BNB", "EUR", "TRY", "BRL")
_PERPETUAL_DELIVERY_MS = 4_133_404_800_000  # 2100-12-25 08:00 UTC, as Binance writes it
_ONBOARD_MS = 1_569_398_400_000
_FUTURES_ORDER_TYPES = [
    "LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
    "TRAILING_STOP_MARKET",
]  # fmt: skip


def split_symbol(symbol: str) -> tuple[str, str]:
    """``BTCUSDT`` → (``BTC``, ``USDT``); a delivery suffix is left out."""
    pair = symbol.partition("_")[0]
    for quote in (*_QUOTES, "USD"):
        if pair.endswith(quote) and len(pair) > len(quote):
            return pair[: -len(quote)], quote
    return pair[:-4], pair[-4:]


def weight_limits(limit: int, window: float, futures: bool) -> list[dict[str, Any]]:
    minute = window == 60
    weight = {
        "rateLimitType": "REQUEST_WEIGHT",
        "interval": "MINUTE" if minute else "SECOND",
        "intervalNum": 1 if minute else max(1, round(window)),
        "limit": limit,
    }
    if futures:
        return [
            weight,
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
        ]
    return [
        weight,
        {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
        {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
        {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
    ]


def delivery_ms(symbol: str) -> int | None:
    """``BTCUSD_211231`` → 2021-12-31 08:00 UTC; None for a perpetual."""
    suffix = symbol.rpartition("_")[2]
    if "_" not in symbol or not suffix.isdigit() or len(suffix) != 6:
        return None
    year, month, day = 2000 + int(suffix[:2]), int(suffix[2:4]), int(suffix[4:])
    try:
        return int(datetime(year, month, day, 8, tzinfo=UTC).timestamp() * 1000)
    except ValueError:
        return None


def contract_types(symbols: Sequence[str]) -> dict[str, str]:
    """``PERPETUAL``, or for delivery contracts of one pair ``CURRENT_QUARTER`` for the nearest
    and ``NEXT_QUARTER`` for the later ones."""
    result: dict[str, str] = {}
    by_pair: dict[str, list[tuple[int, str]]] = {}
    for symbol in symbols:
        delivery = delivery_ms(symbol)
        if delivery is None:
            result[symbol] = "PERPETUAL"
        else:
            by_pair.setdefault(symbol.partition("_")[0], []).append((delivery, symbol))
    for contracts in by_pair.values():
        for rank, (_, symbol) in enumerate(sorted(contracts)):
            result[symbol] = "CURRENT_QUARTER" if rank == 0 else "NEXT_QUARTER"
    return result


def spot_symbol(symbol: str, status: str) -> dict[str, Any]:
    base, quote = split_symbol(symbol)
    return {
        "symbol": symbol,
        "status": status,
        "baseAsset": base,
        "baseAssetPrecision": 8,
        "quoteAsset": quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [],
        "permissions": ["SPOT"],
    }


def usdm_symbol(symbol: str, status: str, contract_type: str) -> dict[str, Any]:
    base, quote = split_symbol(symbol)
    return {
        "symbol": symbol,
        "pair": symbol.partition("_")[0],
        "contractType": contract_type,
        "deliveryDate": delivery_ms(symbol) or _PERPETUAL_DELIVERY_MS,
        "onboardDate": _ONBOARD_MS,
        "status": status,
        "maintMarginPercent": "2.5000",
        "requiredMarginPercent": "5.0000",
        "baseAsset": base,
        "quoteAsset": quote,
        "marginAsset": quote,
        "pricePrecision": 2,
        "quantityPrecision": 3,
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "underlyingType": "COIN",
        "underlyingSubType": [],
        "settlePlan": 0,
        "triggerProtect": "0.0500",
        "liquidationFee": "0.012000",
        "marketTakeBound": "0.30",
        "filters": [],
        "orderTypes": _FUTURES_ORDER_TYPES,
        "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
    }


def coinm_symbol(symbol: str, status: str, contract_type: str) -> dict[str, Any]:
    base, quote = split_symbol(symbol)
    return {
        "symbol": symbol,
        "pair": symbol.partition("_")[0],
        "contractType": contract_type,
        "deliveryDate": delivery_ms(symbol) or _PERPETUAL_DELIVERY_MS,
        "onboardDate": _ONBOARD_MS,
        "contractStatus": status,
        "contractSize": 100 if base == "BTC" else 10,
        "marginAsset": base,
        "maintMarginPercent": "2.5000",
        "requiredMarginPercent": "5.0000",
        "baseAsset": base,
        "quoteAsset": quote,
        "pricePrecision": 1,
        "quantityPrecision": 0,
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "equalQtyPrecision": 4,
        "maxMoveOrderLimit": 10000,
        "triggerProtect": "0.0500",
        "underlyingType": "COIN",
        "underlyingSubType": [],
        "filters": [],
        "orderTypes": _FUTURES_ORDER_TYPES,
        "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
        "liquidationFee": "0.006000",
        "marketTakeBound": "0.30",
    }


def exchange_info(
    market: str,
    statuses: dict[str, str],
    server_time: int,
    weight_limit: int,
    window: float,
) -> dict[str, Any]:
    """The whole body for ``market``; ``statuses`` maps each shown symbol to its status."""
    if market == "spot":
        return {
            "timezone": "UTC",
            "serverTime": server_time,
            "rateLimits": weight_limits(weight_limit, window, futures=False),
            "exchangeFilters": [],
            "symbols": [spot_symbol(s, status) for s, status in statuses.items()],
        }
    types = contract_types(list(statuses))
    make = usdm_symbol if market == "usdm" else coinm_symbol
    body: dict[str, Any] = {
        "timezone": "UTC",
        "serverTime": server_time,
        "rateLimits": weight_limits(weight_limit, window, futures=True),
        "exchangeFilters": [],
        "symbols": [make(s, status, types[s]) for s, status in statuses.items()],
    }
    if market == "usdm":
        body = {"futuresType": "U_MARGINED", **body}
    return body


__all__ = ["contract_types", "delivery_ms", "exchange_info", "split_symbol"]
