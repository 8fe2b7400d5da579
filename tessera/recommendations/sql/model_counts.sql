-- The product-level part of the model that needs no fit, trained with the pairs:
-- best sellers by orders since popularity_days, then by orders over the whole window
-- (so that a quiet season still has a list), score 1 / rank; and each product's
-- smoothed repeat rate (how often its buyers buy it again), which buy again scales.
-- Stored with the model (recommendations.model_products): the days between trainings
-- rank with these, not with counts of their own.
CREATE OR REPLACE TEMP TABLE _rec_popular AS
SELECT product_id, pop_rank, 1.0 / pop_rank AS score FROM (
    SELECT product_id,
           row_number() OVER (ORDER BY n_recent DESC, n_all DESC, product_id) AS pop_rank
    FROM (SELECT product_id,
                 count(DISTINCT CASE WHEN bought_on >= $popular_since THEN order_id END) AS n_recent,
                 count(DISTINCT order_id) AS n_all
          FROM _rec_purchases GROUP BY product_id));

CREATE OR REPLACE TEMP TABLE _rec_repeat AS
WITH per AS (
    SELECT customer_id, product_id, count(DISTINCT order_id) AS times FROM _rec_purchases
    WHERE customer_id IS NOT NULL GROUP BY customer_id, product_id)
SELECT product_id, (sum(CASE WHEN times >= 2 THEN 1 ELSE 0 END) + 1.0) / (count(*) + 2.0) AS repeat_rate
FROM per GROUP BY product_id
