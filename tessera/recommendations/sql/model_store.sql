-- The day's trained model into the stored tables (replacing a training of the same day).
-- One statement per step; run in one transaction with the model's row.
DELETE FROM recommendations.model_products WHERE trained_on = $day;

DELETE FROM recommendations.model_pairs WHERE trained_on = $day;

INSERT INTO recommendations.model_pairs SELECT CAST($day AS DATE), kind, a, b, score FROM _rec_pairs;

INSERT INTO recommendations.model_products
SELECT CAST($day AS DATE), c.product_id, c.pid, p.pop_rank, r.repeat_rate, a.i, a.candidate
FROM _rec_pids c
LEFT JOIN _rec_popular p ON p.product_id = c.product_id
LEFT JOIN _rec_repeat r ON r.product_id = c.product_id
LEFT JOIN _rec_als_model a ON a.pid = c.pid
