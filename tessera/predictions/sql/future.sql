-- The day's stored predictions beside each contact's purchase days in ($day, $end] (the
-- purchase window) and in ($day, $churn_end] (the churn window).
WITH w AS (
    SELECT customer_id,
           count(DISTINCT order_date) FILTER (WHERE order_date <= CAST($end AS DATE)) AS actual_purchases,
           count(DISTINCT order_date) AS churn_window_purchases
    FROM pred_future_orders
    WHERE order_date > CAST($day AS DATE) AND order_date <= CAST($churn_end AS DATE)
    GROUP BY customer_id
)
SELECT p.customer_id, coalesce(w.actual_purchases, 0) AS actual_purchases,
       coalesce(w.churn_window_purchases, 0) AS churn_window_purchases, p.purchases,
       p.churn_risk, p.purchase_propensity, p.days_since_last_purchase, p.expected_purchases,
       p.expected_purchases_30d, p.expected_purchases_90d, p.expected_purchases_365d
FROM predictions.customer_predictions p LEFT JOIN w ON w.customer_id = p.customer_id
WHERE p.as_of_date = CAST($day AS DATE)
ORDER BY p.customer_id
