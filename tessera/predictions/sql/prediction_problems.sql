-- Broken promises of the day's predictions (each count 0 when sound).
WITH p AS (SELECT * FROM predictions.customer_predictions WHERE as_of_date = CAST($day AS DATE))
SELECT
    (SELECT count(*) FROM marts.contact_cards c
      WHERE NOT EXISTS (SELECT 1 FROM p WHERE p.customer_id = c.customer_id)),
    (SELECT count(*) FROM p
      WHERE NOT EXISTS (SELECT 1 FROM marts.contact_cards c WHERE c.customer_id = p.customer_id)),
    (SELECT count(*) FROM (SELECT customer_id FROM p GROUP BY customer_id HAVING count(*) > 1) d),
    (SELECT count(*) FROM p
      WHERE p_alive NOT BETWEEN 0 AND 1 OR purchase_propensity NOT BETWEEN 0 AND 1
         OR churn_risk NOT BETWEEN 0 AND 1 OR expected_purchases_30d < 0
         OR expected_purchases_90d < 0 OR expected_purchases_365d < 0
         OR expected_purchases < 0 OR expected_order_value < 0 OR clv < 0
         OR expected_purchases_30d > expected_purchases_365d
         OR (churn_risk IS NULL) <> (churn_band IS NULL)),
    (SELECT count(*) FROM p
      WHERE status <> 'scored' AND (p_alive IS NOT NULL OR clv IS NOT NULL
                                    OR churn_risk IS NOT NULL OR expected_order_value IS NOT NULL)),
    (SELECT count(*) FROM p WHERE status = 'scored' AND p_alive IS NULL)
