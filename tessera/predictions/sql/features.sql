-- Features of every contact of the population as of $cutoff, from the orders and events on
-- or before it (nothing after the cut-off, so a back-test cut-off sees what it would have
-- seen). Several orders on one day are one purchase (the customer-base models count
-- purchase days): pred_days holds them, summed once per build (build.py), so the order
-- lines are grouped once, not at every cut-off. Never-buyers get zeros and NULL recency.
WITH days AS (
    SELECT customer_id, d, value, orders FROM pred_days WHERE d <= CAST($cutoff AS DATE)
),
buy AS (
    SELECT customer_id, count(*) AS purchase_days, sum(orders) AS orders,
           min(d) AS first_day, max(d) AS last_day,
           CAST(sum(value) AS DOUBLE) AS spend,
           -- the exact sum as a DOUBLE over the count, not avg(): Spark averages a
           -- DECIMAL into a DECIMAL of 6 places (651.633333), DuckDB into a DOUBLE
           CAST(sum(value) FILTER (WHERE value > 0) AS DOUBLE)
               / nullif(count(*) FILTER (WHERE value > 0), 0) AS mean_value,
           count(*) FILTER (WHERE value > 0) AS valued_days,
           CAST(max(value) AS DOUBLE) AS max_value,
           count(*) FILTER (WHERE d > CAST($cutoff AS DATE) - INTERVAL 30 DAY) AS days_30,
           count(*) FILTER (WHERE d > CAST($cutoff AS DATE) - INTERVAL 90 DAY) AS days_90,
           count(*) FILTER (WHERE d > CAST($cutoff AS DATE) - INTERVAL 365 DAY) AS days_365,
           count(*) FILTER (WHERE d > CAST($cutoff AS DATE) - INTERVAL 730 DAY
                              AND d <= CAST($cutoff AS DATE) - INTERVAL 365 DAY) AS days_prev_365,
           -- seasonality: the 90 days that followed this date a year ago
           count(*) FILTER (WHERE d > CAST($cutoff AS DATE) - INTERVAL 365 DAY
                              AND d <= CAST($cutoff AS DATE) - INTERVAL 275 DAY) AS days_season_last_year,
           coalesce(CAST(sum(value) FILTER (WHERE d > CAST($cutoff AS DATE) - INTERVAL 365 DAY)
                    AS DOUBLE), 0) AS spend_365
    FROM days GROUP BY customer_id
),
ev AS (
    SELECT customer_id,
           count(*) FILTER (WHERE occurred_at >= CAST($cutoff AS DATE) - INTERVAL 29 DAY) AS events_30,
           count(*) FILTER (WHERE occurred_at >= CAST($cutoff AS DATE) - INTERVAL 89 DAY) AS events_90,
           count(*) FILTER (WHERE event_type = 'page_view'
                              AND occurred_at >= CAST($cutoff AS DATE) - INTERVAL 29 DAY) AS views_30,
           count(*) FILTER (WHERE event_type = 'cart'
                              AND occurred_at >= CAST($cutoff AS DATE) - INTERVAL 89 DAY) AS carts_90,
           count(*) FILTER (WHERE event_type IN ('email_open', 'email_click')
                              AND occurred_at >= CAST($cutoff AS DATE) - INTERVAL 89 DAY) AS email_90,
           date_diff('day', CAST(max(occurred_at) AS DATE), CAST($cutoff AS DATE)) AS days_since_event
    FROM pred_events
    WHERE customer_id IS NOT NULL AND occurred_at < CAST($cutoff AS DATE) + INTERVAL 1 DAY
    GROUP BY customer_id
)
SELECT p.customer_id,
       coalesce(b.purchase_days, 0) AS purchase_days,
       coalesce(b.orders, 0) AS orders,
       date_diff('day', b.last_day, CAST($cutoff AS DATE)) AS recency_days,
       date_diff('day', b.first_day, CAST($cutoff AS DATE)) AS tenure_days,
       date_diff('day', b.first_day, b.last_day) AS active_span_days,
       coalesce(b.spend, 0) AS spend,
       b.mean_value, coalesce(b.valued_days, 0) AS valued_days, b.max_value,
       coalesce(b.days_30, 0) AS days_30, coalesce(b.days_90, 0) AS days_90,
       coalesce(b.days_365, 0) AS days_365, coalesce(b.days_prev_365, 0) AS days_prev_365,
       coalesce(b.days_season_last_year, 0) AS days_season_last_year,
       coalesce(b.spend_365, 0) AS spend_365,
       coalesce(e.events_30, 0) AS events_30, coalesce(e.events_90, 0) AS events_90,
       coalesce(e.views_30, 0) AS views_30, coalesce(e.carts_90, 0) AS carts_90,
       coalesce(e.email_90, 0) AS email_90, e.days_since_event
FROM pred_population p
LEFT JOIN buy b ON b.customer_id = p.customer_id
LEFT JOIN ev e ON e.customer_id = p.customer_id
ORDER BY p.customer_id
