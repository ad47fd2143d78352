-- The symbols klinetrio collects or has collected, per market, as the exchange last listed them
-- (KLINETRIO_SYMBOLS resolved against exchangeInfo; refreshed every KLINETRIO_SYMBOLS_REFRESH).
-- A symbol whose status is not TRADING is not collected: its silence is not a gap, and its
-- coverage ends at its last candle. Times are the exchange's.
CREATE TABLE IF NOT EXISTS symbols (
    market       text        NOT NULL,
    symbol       text        NOT NULL,
    status       text        NOT NULL,
    base_asset   text        NOT NULL DEFAULT '',
    quote_asset  text        NOT NULL DEFAULT '',
    first_seen   timestamptz NOT NULL,
    last_seen    timestamptz NOT NULL,
    PRIMARY KEY (market, symbol)
);
