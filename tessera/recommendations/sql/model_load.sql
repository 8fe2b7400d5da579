-- A stored model into the build's tables, as its training left them: the products'
-- numbers (those the catalogue still holds), the pairs, the best sellers (ranked again
-- over the catalogue that is left: the same ranks while it has not changed), the repeat
-- rates and the collaborative model's products. One statement per step.
CREATE OR REPLACE TEMP TABLE _rec_pids AS
SELECT product_id, pid FROM recommendations.model_products
WHERE trained_on = $trained_on AND product_id IN (SELECT product_id FROM _rec_catalogue);

CREATE OR REPLACE TEMP TABLE _rec_pairs AS
SELECT kind, a, b, score FROM recommendations.model_pairs WHERE trained_on = $trained_on;

CREATE OR REPLACE TEMP TABLE _rec_popular AS
SELECT product_id, pop_rank, 1.0 / pop_rank AS score FROM (
    SELECT product_id, row_number() OVER (ORDER BY pop_rank) AS pop_rank
    FROM recommendations.model_products
    WHERE trained_on = $trained_on AND pop_rank IS NOT NULL
      AND product_id IN (SELECT product_id FROM _rec_catalogue));

CREATE OR REPLACE TEMP TABLE _rec_repeat AS
SELECT product_id, repeat_rate FROM recommendations.model_products
WHERE trained_on = $trained_on AND repeat_rate IS NOT NULL;

CREATE OR REPLACE TEMP TABLE _rec_als_model AS
SELECT m.als_i AS i, m.pid, m.product_id, m.als_candidate AND c.product_id IS NOT NULL AS candidate
FROM recommendations.model_products m LEFT JOIN _rec_catalogue c ON c.product_id = m.product_id
WHERE m.trained_on = $trained_on AND m.als_i IS NOT NULL
