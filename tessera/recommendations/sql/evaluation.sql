-- The back-test figures at $k per mode and kind, over every contact with a held-out
-- purchase in the mode (a contact with no list counts as a miss). Relevant items have
-- no order, so the ideal DCG takes the first min(k, relevant) positions.
WITH
nrel AS (SELECT mode, customer_id, count(*) AS n_rel FROM _rec_truth GROUP BY mode, customer_id),
ideal AS (
    SELECT mode, customer_id, sum(1.0 / log2(rn + 1)) AS idcg FROM (
        SELECT mode, customer_id,
               row_number() OVER (PARTITION BY mode, customer_id ORDER BY product_id) AS rn
        FROM _rec_truth)
    WHERE rn <= $k GROUP BY mode, customer_id),
hits AS (
    SELECT l.mode, l.kind, l.customer_id, l.rank,
           row_number() OVER (PARTITION BY l.mode, l.kind, l.customer_id ORDER BY l.rank) AS hit_no
    FROM _rec_eval_lists l JOIN _rec_truth t
      ON t.mode = l.mode AND t.customer_id = l.customer_id AND t.product_id = l.product_id
    WHERE l.rank <= $k),
per AS (
    SELECT mode, kind, customer_id, count(*) AS hits, sum(hit_no / rank) AS ap_sum,
           sum(1.0 / log2(rank + 1)) AS dcg
    FROM hits GROUP BY mode, kind, customer_id),
grid AS (
    SELECT n.mode, k.kind, n.customer_id, n.n_rel, i.idcg
    FROM nrel n JOIN ideal i ON i.mode = n.mode AND i.customer_id = n.customer_id
    CROSS JOIN _rec_eval_kinds k),
coverage AS (
    SELECT mode, kind, count(DISTINCT product_id) AS products FROM _rec_eval_lists
    WHERE rank <= $k GROUP BY mode, kind)
SELECT CAST($day AS DATE) AS as_of_date, g.mode, g.kind, CAST($k AS INTEGER) AS k,
       CAST($cutoff AS DATE) AS cutoff_date, count(*) AS contacts,
       -- DOUBLE, not the literal 1.0: Spark averages a DECIMAL(2,1) into DECIMAL(6,5) (0.33333)
       avg(CASE WHEN coalesce(p.hits, 0) > 0 THEN CAST(1 AS DOUBLE) ELSE CAST(0 AS DOUBLE) END) AS hit_rate,
       avg(coalesce(p.hits, 0) / $k) AS precision_at_k,
       avg(coalesce(p.hits, 0) / g.n_rel) AS recall_at_k,
       avg(coalesce(p.ap_sum, 0) / least(g.n_rel, $k)) AS map_at_k,
       avg(coalesce(p.dcg, 0) / g.idcg) AS ndcg_at_k,
       coalesce(max(c.products), 0) / $catalogue AS coverage
FROM grid g
LEFT JOIN per p ON p.mode = g.mode AND p.kind = g.kind AND p.customer_id = g.customer_id
LEFT JOIN coverage c ON c.mode = g.mode AND c.kind = g.kind
GROUP BY g.mode, g.kind
