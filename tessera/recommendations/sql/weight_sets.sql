-- NDCG at $k on the back-test's held-out purchases of $mode for each weight set of the
-- combination (_rec_weight_sets: set_id, kind, w), from the per-kind lists of that mode
-- in _rec_lists: the same scaling, sum, rounding and ranking as the combination in
-- lists.sql, so the winner scores here what it scores in the evaluation table.
WITH
l AS (
    SELECT kind, customer_id, product_id, score,
           max(score) OVER (PARTITION BY kind, customer_id) AS best
    FROM _rec_lists
    WHERE kind IN (SELECT kind FROM _rec_weight_sets)
      AND customer_id IN (SELECT customer_id FROM _rec_truth WHERE mode = $mode)),
c AS (
    SELECT g.set_id, l.customer_id, l.product_id, round(sum(g.w * l.score / l.best), 9) AS score
    FROM l JOIN _rec_weight_sets g ON g.kind = l.kind
    WHERE l.best > 0 AND g.w > 0
    GROUP BY g.set_id, l.customer_id, l.product_id),
r AS (
    SELECT set_id, customer_id, product_id,
           row_number() OVER (PARTITION BY set_id, customer_id ORDER BY score DESC, product_id) AS rank
    FROM c),
dcg AS (
    SELECT r.set_id, r.customer_id, sum(1.0 / log2(r.rank + 1)) AS dcg
    FROM r JOIN _rec_truth t
      ON t.mode = $mode AND t.customer_id = r.customer_id AND t.product_id = r.product_id
    WHERE r.rank <= $k
    GROUP BY r.set_id, r.customer_id),
ideal AS (
    SELECT customer_id, sum(1.0 / log2(rn + 1)) AS idcg FROM (
        SELECT customer_id, row_number() OVER (PARTITION BY customer_id ORDER BY product_id) AS rn
        FROM _rec_truth WHERE mode = $mode)
    WHERE rn <= $k GROUP BY customer_id),
sets AS (SELECT DISTINCT set_id FROM _rec_weight_sets)
SELECT s.set_id, avg(coalesce(d.dcg, 0) / i.idcg) AS ndcg
FROM sets s CROSS JOIN ideal i
LEFT JOIN dcg d ON d.set_id = s.set_id AND d.customer_id = i.customer_id
GROUP BY s.set_id
ORDER BY s.set_id
