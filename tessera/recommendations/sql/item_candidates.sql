-- Per target contact, each co-occurrence kind's candidates: the sum of the pair scores
-- over the contact's seeds (products bought for "bought together", products viewed in
-- the last $recent_days for the two viewing kinds).
CREATE OR REPLACE TEMP TABLE _rec_item_candidates AS
WITH seeds AS (
    SELECT DISTINCT 'bought_together' AS kind, customer_id, product_id FROM _rec_purchases
    WHERE customer_id IN (SELECT customer_id FROM _rec_targets)
    UNION ALL
    SELECT DISTINCT k.kind, v.customer_id, v.product_id
    FROM _rec_views v
    CROSS JOIN (SELECT 'viewed_together' AS kind UNION ALL SELECT 'bought_after_viewing') k
    WHERE v.viewed_at >= $recent_since
      AND v.customer_id IN (SELECT customer_id FROM _rec_targets))
SELECT s.kind, s.customer_id, p.b AS product_id, round(sum(p.score), 9) AS score
FROM seeds s JOIN _rec_pairs p ON p.kind = s.kind AND p.a = s.product_id
GROUP BY s.kind, s.customer_id, p.b
