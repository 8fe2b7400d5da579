-- Per contact with a card: a signature of every input its lists are ranked from (what
-- it ever bought, its purchases and catalogue views of the window, and which views are
-- recent enough to seed). Each row is hashed and the hashes summed per contact (a sum is
-- order-free and sees a repeated row), reduced by two primes so that the sums fit 64
-- bits on any engine: two independent 32-bit sums, about 2^-64 for a change to go
-- unseen. Same signature, same model and context: the same lists.
CREATE OR REPLACE TEMP TABLE _rec_signatures AS
WITH b AS (
    SELECT customer_id, sum(hash(product_id) % 4294967291) AS h1,
           sum(hash(product_id, 'b') % 4294967279) AS h2, count(*) AS n
    FROM _rec_bought GROUP BY customer_id),
p AS (
    SELECT customer_id, sum(hash(product_id, order_id, bought_on) % 4294967291) AS h1,
           sum(hash(product_id, order_id, bought_on, 'p') % 4294967279) AS h2, count(*) AS n
    FROM _rec_purchases WHERE customer_id IS NOT NULL GROUP BY customer_id),
v AS (
    SELECT customer_id,
           sum(hash(product_id, viewed_at, viewed_at >= $recent_since) % 4294967291) AS h1,
           sum(hash(product_id, viewed_at, viewed_at >= $recent_since, 'v') % 4294967279) AS h2,
           count(*) AS n
    FROM _rec_views GROUP BY customer_id)
SELECT t.customer_id,
       CAST(hash(b.h1, b.h2, b.n, p.h1, p.h2, p.n, v.h1, v.h2, v.n) AS VARCHAR) AS signature
FROM (SELECT DISTINCT customer_id FROM marts.contact_cards) t
LEFT JOIN b ON b.customer_id = t.customer_id
LEFT JOIN p ON p.customer_id = t.customer_id
LEFT JOIN v ON v.customer_id = t.customer_id
