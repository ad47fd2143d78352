-- candle_features(market, symbol, interval, window, start, end): per candle opening in
-- [start, end), normalised features over the window of `window` candles that ends with it
-- (the candle itself and the window - 1 stored before it, also those before `start`):
--   close_minmax, volume_minmax  (x - min) / (max - min): 0 at the window's low, 1 at its high
--   close_zscore, volume_zscore  (x - mean) / sample standard deviation
--   log_return                   ln(close / the previous stored candle's close)
-- The normalised values are NULL until a whole window is stored (and where max = min or the
-- deviation is 0); log_return is NULL for the first candle of a series. Reads `candles`, or
-- the derived view candles_<interval> for an interval that is derived, not collected.
CREATE OR REPLACE FUNCTION candle_features(
    market text, symbol text, "interval" text, "window" integer, start timestamptz, "end" timestamptz
) RETURNS TABLE (
    "time"        timestamptz,
    close         numeric,
    volume        numeric,
    close_minmax  double precision,
    close_zscore  double precision,
    volume_minmax double precision,
    volume_zscore double precision,
    log_return    double precision
) LANGUAGE plpgsql STABLE AS $function$
DECLARE
    relation regclass := 'candles';
    derived  regclass := to_regclass(format('%I', 'candles_' || $3));
BEGIN
    IF $4 IS NULL OR $4 < 2 THEN
        RAISE EXCEPTION 'candle_features: window must be 2 or more, not %', $4
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF derived IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM candles c WHERE c.market = $1 AND c.symbol = $2 AND c.interval = $3
    ) THEN
        relation := derived;
    END IF;
    RETURN QUERY EXECUTE format($query$
        WITH series AS (
            SELECT c.time, c.close, c.volume
              FROM %1$s c
             WHERE c.market = $1 AND c.symbol = $2 AND c.interval = $3 AND c.time < $6
               AND c.time >= coalesce(
                   (SELECT p.time FROM %1$s p
                     WHERE p.market = $1 AND p.symbol = $2 AND p.interval = $3 AND p.time < $5
                     ORDER BY p.time DESC OFFSET $4 - 1 LIMIT 1),
                   '-infinity')
        ), stats AS (
            SELECT s.time, s.close, s.volume,
                   count(*) OVER w AS n,
                   min(s.close) OVER w AS close_min, max(s.close) OVER w AS close_max,
                   avg(s.close) OVER w AS close_mean, stddev_samp(s.close) OVER w AS close_sd,
                   min(s.volume) OVER w AS volume_min, max(s.volume) OVER w AS volume_max,
                   avg(s.volume) OVER w AS volume_mean, stddev_samp(s.volume) OVER w AS volume_sd,
                   lag(s.close) OVER (ORDER BY s.time) AS previous_close
              FROM series s
            WINDOW w AS (ORDER BY s.time ROWS BETWEEN $4 - 1 PRECEDING AND CURRENT ROW)
        )
        SELECT t.time, t.close, t.volume,
               CASE WHEN t.n = $4 THEN ((t.close - t.close_min)
                    / NULLIF(t.close_max - t.close_min, 0))::double precision END,
               CASE WHEN t.n = $4 THEN ((t.close - t.close_mean)
                    / NULLIF(t.close_sd, 0))::double precision END,
               CASE WHEN t.n = $4 THEN ((t.volume - t.volume_min)
                    / NULLIF(t.volume_max - t.volume_min, 0))::double precision END,
               CASE WHEN t.n = $4 THEN ((t.volume - t.volume_mean)
                    / NULLIF(t.volume_sd, 0))::double precision END,
               CASE WHEN t.close > 0 AND t.previous_close > 0
                    THEN ln(t.close / t.previous_close)::double precision END
          FROM stats t
         WHERE t.time >= $5
         ORDER BY t.time
    $query$, relation)
    USING $1, $2, $3, $4, $5, $6;
END
$function$;
