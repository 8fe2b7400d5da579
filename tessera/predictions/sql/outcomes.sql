-- What each contact of the population did in the window ($start, $end]: purchase days and
-- spend. The population's order, so it lines up with the features of the window's start.
WITH w AS (
    SELECT customer_id, count(*) AS purchases, CAST(sum(value) AS DOUBLE) AS spend
    FROM pred_days
    WHERE d > CAST($start AS DATE) AND d <= CAST($end AS DATE)
    GROUP BY customer_id
)
SELECT p.customer_id, coalesce(w.purchases, 0) AS purchases, coalesce(w.spend, 0) AS spend
FROM pred_population p LEFT JOIN w ON w.customer_id = p.customer_id
ORDER BY p.customer_id
