-- The candles table: the public contract (see README "The table").
-- Prices and volumes are numeric: exactly the decimal strings Binance sent, never floats.
CREATE TABLE IF NOT EXISTS candles (
    market                 text        NOT NULL DEFAULT 'spot',
    symbol                 text        NOT NULL,
    interval               text        NOT NULL,
    time                   timestamptz NOT NULL,
    close_time             timestamptz NOT NULL,
    open                   numeric     NOT NULL,
    high                   numeric     NOT NULL,
    low                    numeric     NOT NULL,
    close                  numeric     NOT NULL,
    volume                 numeric     NOT NULL,
    quote_volume           numeric     NOT NULL,
    trades                 bigint      NOT NULL,
    taker_buy_volume       numeric     NOT NULL,
    taker_buy_quote_volume numeric     NOT NULL,
    source                 text        NOT NULL,
    PRIMARY KEY (market, symbol, interval, time),
    CONSTRAINT candles_source_check CHECK (source IN ('ws', 'rest', 'archive'))
);

-- Serves WHERE symbol = ? AND interval = ? ORDER BY time DESC without naming the market.
CREATE INDEX IF NOT EXISTS candles_symbol_interval_time_idx
    ON candles (symbol, interval, time DESC);
