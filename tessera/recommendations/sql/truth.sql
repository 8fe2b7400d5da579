-- The back-test's truth: held-out purchases (from $cutoff to $day) of current contacts
-- of catalogue products, every one (all_items) and those the contact had not bought
-- before the cut (new_items). One statement per step.
CREATE OR REPLACE TEMP TABLE _rec_held AS
SELECT DISTINCT o.customer_id, CAST(l.product_id AS VARCHAR) AS product_id
FROM core.orders o JOIN staging.order_lines l ON l.order_id = o.order_id
WHERE o.order_date >= $cutoff AND o.order_date <= $day
  AND o.customer_id IN (SELECT customer_id FROM marts.contact_cards)
  AND CAST(l.product_id AS VARCHAR) IN (SELECT product_id FROM _rec_catalogue);

-- Only a sample of the contacts with a held-out purchase when there are more than
-- $sample of them (0: every one): the $sample contacts with the smallest hash of their
-- id, so the same contacts every run (and every day they still buy), spread over the
-- whole id range, and everyone when fewer. Scoring a contact's lists is the back-test's
-- cost; the figures' error shrinks with the square root of the contacts.
CREATE OR REPLACE TEMP TABLE _rec_truth AS
WITH sampled AS (
    SELECT customer_id FROM (
        SELECT customer_id, row_number() OVER (ORDER BY hash(customer_id), customer_id) AS rn
        FROM (SELECT DISTINCT customer_id FROM _rec_held))
    WHERE $sample = 0 OR rn <= $sample),
kept AS (SELECT h.customer_id, h.product_id FROM _rec_held h JOIN sampled s ON s.customer_id = h.customer_id)
SELECT 'all_items' AS mode, customer_id, product_id FROM kept
UNION ALL
SELECT 'new_items', h.customer_id, h.product_id FROM kept h
WHERE NOT EXISTS (SELECT 1 FROM _rec_bought b
                  WHERE b.customer_id = h.customer_id AND b.product_id = h.product_id)
