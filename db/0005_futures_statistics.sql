-- Futures statistics (USD-M and COIN-M; KLINETRIO_FUTURES_STATS=on), one row per symbol, period
-- and time as /futures/data/* returns them. Binance keeps 30 days of them: gaps inside those
-- are healed by the next poll, older ones stay holes. Numbers are the exchange's decimals.
-- kind: top_position (topLongShortPositionRatio), top_account (topLongShortAccountRatio),
-- global_account (globalLongShortAccountRatio). COIN-M rows are per pair (BTCUSD): symbol
-- holds the contract they were asked for (BTCUSD_PERP), as collected.
CREATE TABLE IF NOT EXISTS long_short_ratios (
    market            text        NOT NULL,
    symbol            text        NOT NULL,
    period            text        NOT NULL,
    kind              text        NOT NULL
        CHECK (kind IN ('top_position', 'top_account', 'global_account')),
    time              timestamptz NOT NULL,
    long_short_ratio  numeric     NOT NULL,
    long_share        numeric     NOT NULL,
    short_share       numeric     NOT NULL,
    PRIMARY KEY (market, symbol, period, kind, time)
);

CREATE TABLE IF NOT EXISTS open_interest (
    market               text        NOT NULL,
    symbol               text        NOT NULL,
    period               text        NOT NULL,
    time                 timestamptz NOT NULL,
    open_interest        numeric     NOT NULL,
    open_interest_value  numeric     NOT NULL,
    PRIMARY KEY (market, symbol, period, time)
);
