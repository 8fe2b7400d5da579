-- Best sellers: by orders since popularity_days, then by orders over the whole window
-- (so that a quiet season still has a list), score 1 / rank. Then the candidates of the
-- kinds that need no model: popularity (the baseline and the cold-contact fallback),
-- buy again, and the co-occurrence kinds.
CREATE OR REPLACE TEMP TABLE _rec_popular AS
SELECT product_id, pop_rank, 1.0 / pop_rank AS score FROM (
    SELECT product_id,
           row_number() OVER (ORDER BY n_recent DESC, n_all DESC, product_id) AS pop_rank
    FROM (SELECT product_id,
                 count(DISTINCT CASE WHEN bought_on >= $popular_since THEN order_id END) AS n_recent,
                 count(DISTINCT order_id) AS n_all
          FROM _rec_purchases GROUP BY product_id));

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
-- (smoothed repeat rate) and how often this contact bought it
INSERT INTO _rec_candidates
WITH per AS (
    SELECT customer_id, product_id, count(DISTINCT order_id) AS times FROM _rec_purchases
    WHERE customer_id IS NOT NULL GROUP BY customer_id, product_id),
rate AS (
    SELECT product_id, (sum(CASE WHEN times >= 2 THEN 1 ELSE 0 END) + 1.0) / (count(*) + 2.0) AS repeat_rate
    FROM per GROUP BY product_id)
SELECT 'buy_again', per.customer_id, per.product_id, rate.repeat_rate * ln(1 + per.times)
FROM per JOIN rate ON rate.product_id = per.product_id
WHERE per.customer_id IN (SELECT customer_id FROM _rec_targets)
