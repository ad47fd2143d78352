-- 24-hour rolling statistics (KLINETRIO_STREAMS=ticker), one row per event time (E).
CREATE TABLE IF NOT EXISTS tickers (
    market                text        NOT NULL,
    symbol                text        NOT NULL,
    time                  timestamptz NOT NULL,
    open                  numeric     NOT NULL,
    high                  numeric     NOT NULL,
    low                   numeric     NOT NULL,
    last                  numeric     NOT NULL,
    volume                numeric     NOT NULL,
    quote_volume          numeric     NOT NULL,
    price_change_percent  numeric     NOT NULL,
    weighted_avg_price    numeric     NOT NULL,
    trades                bigint      NOT NULL,
    PRIMARY KEY (market, symbol, time)
);
