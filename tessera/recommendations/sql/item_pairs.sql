-- Item-to-item scores of the three co-occurrence kinds: (kind, a, b, score), the best
-- $neighbours b per a, pairs seen fewer than $min_support times dropped. Set-based
-- self-joins over sparse baskets: never a products x products matrix. Blocked before
-- each join: a product seen fewer than $min_support times cannot be in a pair that is
-- (so it is dropped first), and a basket or session of more than $max_basket products
-- (a bulk order, a crawler) says little about any pair and would add its square.
-- One statement per kind: each is planned, run and freed on its own.
CREATE OR REPLACE TEMP TABLE _rec_pairs (kind VARCHAR, a VARCHAR, b VARCHAR, score DOUBLE);

-- the catalogue's products numbered: the viewing kinds join and group on the number (an
-- integer) and name the products again only in the pairs they keep
CREATE OR REPLACE TEMP TABLE _rec_pids AS
SELECT product_id, CAST(row_number() OVER (ORDER BY product_id) AS INTEGER) AS pid FROM _rec_catalogue;

-- the sessions (a contact's products viewed on one day), which both viewing kinds read:
-- made distinct once, not once per kind
CREATE OR REPLACE TEMP TABLE _rec_sessions AS
SELECT DISTINCT v.customer_id, CAST(v.viewed_at AS DATE) AS d, c.pid AS product_id
FROM _rec_views v JOIN _rec_pids c ON c.product_id = v.product_id;

INSERT INTO _rec_pairs
WITH
-- bought together: co-occurrence in one order, corrected by lift
baskets AS (SELECT DISTINCT order_id, product_id FROM _rec_purchases),
basket_n AS (SELECT product_id, count(*) AS n FROM baskets GROUP BY product_id),
basket_total AS (SELECT count(DISTINCT order_id) AS n FROM baskets),
paired_baskets AS (
    SELECT b.order_id, b.product_id FROM baskets b
    JOIN basket_n n ON n.product_id = b.product_id
    JOIN (SELECT order_id FROM baskets GROUP BY order_id
          HAVING count(*) BETWEEN 2 AND $max_basket) k ON k.order_id = b.order_id
    WHERE n.n >= $min_support),
-- each unordered pair counted once (a < b), then both ways: the counts are symmetric,
-- and half the rows go through the join and the grouping
bt_half AS (
    SELECT x.product_id AS a, y.product_id AS b, count(*) AS n_ab
    FROM paired_baskets x JOIN paired_baskets y ON y.order_id = x.order_id AND y.product_id > x.product_id
    GROUP BY x.product_id, y.product_id HAVING count(*) >= $min_support),
bt AS (SELECT a, b, n_ab FROM bt_half UNION ALL SELECT b, a, n_ab FROM bt_half),
bt_scored AS (
    SELECT 'bought_together' AS kind, bt.a, bt.b,
           CASE WHEN $lift THEN bt.n_ab * t.n / (na.n * nb.n) ELSE CAST(bt.n_ab AS DOUBLE) END AS score
    FROM bt JOIN basket_n na ON na.product_id = bt.a JOIN basket_n nb ON nb.product_id = bt.b
    CROSS JOIN basket_total t)
SELECT kind, a, b, score FROM bt_scored
QUALIFY row_number() OVER (PARTITION BY a ORDER BY score DESC, b) <= $neighbours;

-- viewed together: co-views by one contact on one day (the session), cosine-normalised
INSERT INTO _rec_pairs
WITH
sessions AS (SELECT customer_id, d, product_id FROM _rec_sessions),
session_n AS (SELECT product_id, count(*) AS n FROM sessions GROUP BY product_id),
paired_sessions AS (
    SELECT s.customer_id, s.d, s.product_id FROM sessions s
    JOIN session_n n ON n.product_id = s.product_id
    JOIN (SELECT customer_id, d FROM sessions GROUP BY customer_id, d
          HAVING count(*) BETWEEN 2 AND $max_basket) k ON k.customer_id = s.customer_id AND k.d = s.d
    WHERE n.n >= $min_support),
vt_half AS (
    SELECT x.product_id AS a, y.product_id AS b, count(*) AS n_ab
    FROM paired_sessions x JOIN paired_sessions y
      ON y.customer_id = x.customer_id AND y.d = x.d AND y.product_id > x.product_id
    GROUP BY x.product_id, y.product_id HAVING count(*) >= $min_support),
vt AS (SELECT a, b, n_ab FROM vt_half UNION ALL SELECT b, a, n_ab FROM vt_half),
vt_scored AS (
    SELECT 'viewed_together' AS kind, pa.product_id AS a, pb.product_id AS b,
           vt.n_ab / sqrt(na.n * nb.n) AS score
    FROM vt JOIN session_n na ON na.product_id = vt.a JOIN session_n nb ON nb.product_id = vt.b
    JOIN _rec_pids pa ON pa.pid = vt.a JOIN _rec_pids pb ON pb.pid = vt.b)
SELECT kind, a, b, score FROM vt_scored
QUALIFY row_number() OVER (PARTITION BY a ORDER BY score DESC, b) <= $neighbours;

-- bought after viewing: share of a's viewers who bought b within $after_days of the view
INSERT INTO _rec_pairs
WITH
viewed AS (SELECT customer_id, product_id AS a, d FROM _rec_sessions),
viewers AS (SELECT a, count(*) AS n FROM (SELECT DISTINCT customer_id, a FROM viewed) GROUP BY a),
bought AS (SELECT DISTINCT p.customer_id, c.pid AS b, p.bought_on AS d
           FROM _rec_purchases p JOIN _rec_pids c ON c.product_id = p.product_id
           WHERE p.customer_id IS NOT NULL),
buyers AS (SELECT b, count(DISTINCT customer_id) AS n FROM bought GROUP BY b),
followed AS (
    SELECT DISTINCT v.customer_id, v.a, p.b
    FROM (SELECT viewed.* FROM viewed JOIN viewers USING (a) WHERE viewers.n >= $min_support) v
    JOIN (SELECT bought.* FROM bought JOIN buyers USING (b) WHERE buyers.n >= $min_support) p
      ON p.customer_id = v.customer_id AND p.b <> v.a
     AND date_diff('day', v.d, p.d) BETWEEN 0 AND $after_days),
bav AS (SELECT a, b, count(*) AS n_ab FROM followed GROUP BY a, b HAVING count(*) >= $min_support),
bav_scored AS (
    SELECT 'bought_after_viewing' AS kind, pa.product_id AS a, pb.product_id AS b,
           bav.n_ab / viewers.n AS score
    FROM bav JOIN viewers ON viewers.a = bav.a
    JOIN _rec_pids pa ON pa.pid = bav.a JOIN _rec_pids pb ON pb.pid = bav.b)
SELECT kind, a, b, score FROM bav_scored
QUALIFY row_number() OVER (PARTITION BY a ORDER BY score DESC, b) <= $neighbours;

-- the sessions are in the pairs: their memory goes back before the model and the ranking
DROP TABLE IF EXISTS _rec_sessions
