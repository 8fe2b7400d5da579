-- Broken invariants of the latest day's lists, one count each (all zero when sound).
-- A list's ranks are 1..n exactly when its n ranks lie in 1..n and are distinct: counted
-- as the bits a bitwise or sets in a 64-bit mask where top_n allows (checks.py; the list
-- of ranks and its distinct count cost 6 s of 30 M rows). Its products are distinct when
-- its known products set as many bits of a 128-bit mask by their catalogue index (a join
-- with the small catalogue), or their list has as many distinct indexes in a larger
-- catalogue: list_distinct of the product ids was 4.3 of the check's 5.3 s at the
-- reference scale, the mask 0.2 s. A product the catalogue lacks is counted apart. A
-- bought product offered: the day's lists joined with the distinct (customer, product)
-- pairs bought by the day (one hash join, not a correlated lookup per list row: 5.3 s ->
-- 2.8 s at the reference scale).
WITH day AS (SELECT max(as_of_date) AS d FROM recommendations.contact_products),
catalogue AS (
    SELECT product_id, CAST(row_number() OVER (ORDER BY product_id) - 1 AS INTEGER) AS idx
    FROM (SELECT DISTINCT CAST(source_record_id AS VARCHAR) AS product_id FROM staging.products
          WHERE source_record_id IS NOT NULL)),
l AS (SELECT p.*, c.idx FROM recommendations.contact_products p JOIN day ON p.as_of_date = day.d
      LEFT JOIN catalogue c ON c.product_id = p.product_id),
ranks AS (
    SELECT kind, customer_id, count(*) AS n,
           {distinct_ranks} AS ranks,
           {distinct_products} AS products, count(idx) AS known, min(rank) AS lo, max(rank) AS hi
    FROM l GROUP BY kind, customer_id),
bought AS (
    SELECT DISTINCT o.customer_id, CAST(ol.product_id AS VARCHAR) AS product_id
    FROM core.orders o JOIN staging.order_lines ol ON ol.order_id = o.order_id
    WHERE $exclude_bought AND o.order_date <= (SELECT d FROM day))
SELECT
  (SELECT count(DISTINCT customer_id) FROM l
   WHERE customer_id NOT IN (SELECT customer_id FROM marts.contact_cards)) AS contacts_without_card,
  (SELECT count(*) FROM ranks
   WHERE n <> ranks OR known <> products OR lo <> 1 OR hi <> n OR n > $top) AS broken_rankings,
  (SELECT count(*) FROM l
   WHERE idx IS NULL OR list_contains($excluded, product_id)) AS excluded_or_unknown_products,
  (SELECT count(*) FROM l JOIN bought b ON b.customer_id = l.customer_id AND b.product_id = l.product_id
   WHERE list_contains($discovery, l.kind)) AS bought_products_offered
