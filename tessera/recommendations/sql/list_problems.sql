-- Broken invariants of the latest day's lists, one count each (all zero when sound).
-- A list's distinct ranks and products are counted from the list of its (ten or so)
-- values, in the one aggregate: two distinct counts planned two more aggregates of every
-- row and their joins (19 s of 30 M rows at the reference scale; 11 s so).
WITH day AS (SELECT max(as_of_date) AS d FROM recommendations.contact_products),
l AS (SELECT p.* FROM recommendations.contact_products p JOIN day ON p.as_of_date = day.d),
ranks AS (
    SELECT kind, customer_id, count(*) AS n, array_length(list_distinct(list(rank))) AS ranks,
           array_length(list_distinct(list(product_id))) AS products, min(rank) AS lo, max(rank) AS hi
    FROM l GROUP BY kind, customer_id)
SELECT
  (SELECT count(DISTINCT customer_id) FROM l
   WHERE customer_id NOT IN (SELECT customer_id FROM marts.contact_cards)) AS contacts_without_card,
  (SELECT count(*) FROM ranks
   WHERE n <> ranks OR n <> products OR lo <> 1 OR hi <> n OR n > $top) AS broken_rankings,
  (SELECT count(*) FROM l
   WHERE product_id NOT IN (SELECT CAST(source_record_id AS VARCHAR) FROM staging.products
                            WHERE source_record_id IS NOT NULL)
      OR list_contains($excluded, product_id)) AS excluded_or_unknown_products,
  (SELECT count(*) FROM l
   WHERE $exclude_bought AND list_contains($discovery, l.kind)
     AND EXISTS (SELECT 1 FROM core.orders o JOIN staging.order_lines ol ON ol.order_id = o.order_id
                 WHERE o.customer_id = l.customer_id AND CAST(ol.product_id AS VARCHAR) = l.product_id
                   AND o.order_date <= l.as_of_date)) AS bought_products_offered
