-- The candidates of the kinds that need no fit, for the contacts in _rec_targets, from
-- the model's tables (_rec_popular, _rec_repeat, and _rec_item_candidates made from its
-- pairs): popularity (the baseline and the cold-contact fallback), buy again, and the
-- co-occurrence kinds.
CREATE OR REPLACE TEMP TABLE _rec_candidates AS
SELECT kind, customer_id, product_id, score FROM _rec_item_candidates;

-- copied: its memory goes back before the model and the ranking
DROP TABLE IF EXISTS _rec_item_candidates;

-- each target's best sellers: the top $top, and one more for each of the first $pool
-- best sellers the contact bought (an exclusion removes those), never beyond $pool.
-- Mostly $top rows a contact, not $pool: fewer rows to rank, same lists.
INSERT INTO _rec_candidates
WITH deep AS (
    SELECT t.customer_id, count(p.product_id) AS n_bought
    FROM _rec_targets t
    LEFT JOIN _rec_bought b ON b.customer_id = t.customer_id
    LEFT JOIN _rec_popular p ON p.product_id = b.product_id AND p.pop_rank <= $pool
    GROUP BY t.customer_id)
SELECT 'popular', d.customer_id, p.product_id, p.score
FROM deep d CROSS JOIN (SELECT product_id, pop_rank, score FROM _rec_popular WHERE pop_rank <= $pool) p
WHERE p.pop_rank <= d.n_bought + $top;

-- buy again: what the contact bought, by how often buyers of the product buy it again
-- (the model's smoothed repeat rate; a product first bought after the training has no
-- buyers in it: (0 + 1) / (0 + 2)) and how often this contact bought it
INSERT INTO _rec_candidates
WITH per AS (
    SELECT customer_id, product_id, count(DISTINCT order_id) AS times FROM _rec_purchases
    WHERE customer_id IN (SELECT customer_id FROM _rec_targets) GROUP BY customer_id, product_id)
SELECT 'buy_again', per.customer_id, per.product_id, coalesce(r.repeat_rate, 0.5) * ln(1 + per.times)
FROM per LEFT JOIN _rec_repeat r ON r.product_id = per.product_id
