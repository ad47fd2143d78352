-- Aggregate trades (KLINETRIO_STREAMS=aggTrade): one row per agg_id as Binance numbers them,
-- consecutive per market and symbol, so a missing id is a provable gap (healed from REST
-- aggTrades by id and the aggTrades archives). time is the trade time (T); the key carries it
-- because a hypertable's unique keys must.
CREATE TABLE IF NOT EXISTS trades (
    market          text        NOT NULL,
    symbol          text        NOT NULL,
    time            timestamptz NOT NULL,
    agg_id          bigint      NOT NULL,
    price           numeric     NOT NULL,
    quantity        numeric     NOT NULL,
    first_trade_id  bigint      NOT NULL,
    last_trade_id   bigint      NOT NULL,
    buyer_is_maker  boolean     NOT NULL,
    source          text        NOT NULL DEFAULT 'ws',
    PRIMARY KEY (market, symbol, agg_id, time)
);

CREATE INDEX IF NOT EXISTS trades_symbol_time ON trades (symbol, time DESC);
