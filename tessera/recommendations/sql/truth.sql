-- The back-test's truth: held-out purchases (from $cutoff to $day) of current contacts
-- of catalogue products, every one (all_items) and those the contact had not bought
-- before the cut (new_items).
CREATE OR REPLACE TEMP TABLE _rec_truth AS
WITH held AS (
    SELECT DISTINCT o.customer_id, CAST(l.product_id AS VARCHAR) AS product_id
    FROM core.orders o JOIN staging.order_lines l ON l.order_id = o.order_id
    WHERE o.order_date >= $cutoff AND o.order_date <= $day
      AND o.customer_id IN (SELECT customer_id FROM marts.contact_cards)
      AND CAST(l.product_id AS VARCHAR) IN (SELECT product_id FROM _rec_catalogue))
SELECT 'all_items' AS mode, customer_id, product_id FROM held
UNION ALL
SELECT 'new_items', h.customer_id, h.product_id FROM held h
WHERE NOT EXISTS (SELECT 1 FROM _rec_bought b
                  WHERE b.customer_id = h.customer_id AND b.product_id = h.product_id)
