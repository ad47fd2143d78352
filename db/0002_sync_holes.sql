-- Ranges the exchange has confirmed empty (trading halts, e.g. BTCUSDT 1h 2023-03-24 13:00).
-- Gap finding subtracts them, so a real hole is fetched once, not again and again.
CREATE TABLE IF NOT EXISTS candle_holes (
    market      text        NOT NULL DEFAULT 'spot',
    symbol      text        NOT NULL,
    interval    text        NOT NULL,
    start_time  timestamptz NOT NULL,
    end_time    timestamptz NOT NULL,
    checked_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (market, symbol, interval, start_time),
    CHECK (end_time > start_time)
);
