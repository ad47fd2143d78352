-- Top 20 levels of the book once a second (KLINETRIO_STREAMS=depth, <s>@depth20). bids and asks
-- are jsonb arrays of [price, qty] with the exact strings Binance sent. Spot frames carry no
-- time: time is the receive time on the exchange's clock estimate.
CREATE TABLE IF NOT EXISTS depth_snapshots (
    market          text        NOT NULL,
    symbol          text        NOT NULL,
    time            timestamptz NOT NULL,
    last_update_id  bigint      NOT NULL,
    bids            jsonb       NOT NULL,
    asks            jsonb       NOT NULL,
    PRIMARY KEY (market, symbol, last_update_id, time)
);
