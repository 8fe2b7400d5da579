-- Broken invariants of the latest day's lists, one count each (all zero when sound).
-- A list's ranks are 1..n exactly when its n ranks lie in 1..n and are distinct: counted
-- as the bits a bitwise or sets in a 64-bit mask where top_n allows (checks.py; the list
-- of ranks and its distinct count cost 6 s of 30 M rows); its products are distinct when the list of its (ten or so)
-- products has n distinct values, in the same aggregate (two distinct counts planned
-- two more aggregates of every row and their joins). A bought product offered: the
-- day's lists joined with the distinct (customer, product) pairs bought by the day (one
-- hash join, not a correlated lookup per list row: 5.3 s -> 2.8 s at the reference scale).
WITH day AS (SELECT max(as_of_date) AS d FROM recommendations.contact_products),
l AS (SELECT p.* FROM recommendations.contact_products p JOIN day ON p.as_of_date = day.d),
ranks AS (
    SELECT kind, customer_id, count(*) AS n,
           {distinct_ranks} AS ranks,
           array_length(list_distinct(list(product_id))) AS products, min(rank) AS lo, max(rank) AS hi
    FROM l GROUP BY kind, customer_id),
bought AS (
    SELECT DISTINCT o.customer_id, CAST(ol.product_id AS VARCHAR) AS product_id
    FROM core.orders o JOIN staging.order_lines ol ON ol.order_id = o.order_id
    WHERE $exclude_bought AND o.order_date <= (SELECT d FROM day))
SELECT
  (SELECT count(DISTINCT customer_id) FROM l
   WHERE customer_id NOT IN (SELECT customer_id FROM marts.contact_cards)) AS contacts_without_card,
  (SELECT count(*) FROM ranks
   WHERE n <> ranks OR n <> products OR lo <> 1 OR hi <> n OR n > $top) AS broken_rankings,
  (SELECT count(*) FROM l
   WHERE product_id NOT IN (SELECT CAST(source_record_id AS VARCHAR) FROM staging.products
                            WHERE source_record_id IS NOT NULL)
      OR list_contains($excluded, product_id)) AS excluded_or_unknown_products,
  (SELECT count(*) FROM l JOIN bought b ON b.customer_id = l.customer_id AND b.product_id = l.product_id
   WHERE list_contains($discovery, l.kind)) AS bought_products_offered
