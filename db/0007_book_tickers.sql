-- Best bid and ask (KLINETRIO_STREAMS=bookTicker), a sample stream: nothing heals it. Spot
-- frames carry no event time: time is the receive time on the exchange's clock estimate.
CREATE TABLE IF NOT EXISTS book_tickers (
    market     text        NOT NULL,
    symbol     text        NOT NULL,
    time       timestamptz NOT NULL,
    update_id  bigint      NOT NULL,
    bid_price  numeric     NOT NULL,
    bid_qty    numeric     NOT NULL,
    ask_price  numeric     NOT NULL,
    ask_qty    numeric     NOT NULL,
    PRIMARY KEY (market, symbol, update_id, time)
);
