-- The catalogue (minus excluded products), purchases and product views before $until,
-- and everything each contact ever bought before $until. One statement per step.
CREATE OR REPLACE TEMP TABLE _rec_catalogue AS
SELECT DISTINCT CAST(source_record_id AS VARCHAR) AS product_id FROM staging.products
WHERE source_record_id IS NOT NULL AND NOT list_contains($excluded, CAST(source_record_id AS VARCHAR));

CREATE OR REPLACE TEMP TABLE _rec_bought AS
SELECT DISTINCT o.customer_id, CAST(l.product_id AS VARCHAR) AS product_id
FROM core.orders o JOIN staging.order_lines l ON l.order_id = o.order_id
WHERE o.customer_id IS NOT NULL AND l.product_id IS NOT NULL AND o.order_date < $until;

CREATE OR REPLACE TEMP TABLE _rec_purchases AS
SELECT DISTINCT o.customer_id, CAST(l.product_id AS VARCHAR) AS product_id, o.order_id,
       CAST(o.order_date AS DATE) AS bought_on
FROM core.orders o JOIN staging.order_lines l ON l.order_id = o.order_id
WHERE o.order_date < $until AND o.order_date >= $since
  AND CAST(l.product_id AS VARCHAR) IN (SELECT product_id FROM _rec_catalogue);

-- every product view of the window, linked or not and of any product id: {product_id} is
-- the id core.events stored as it linked the event (lists.events_view; read from the JSON
-- and the URL here only where it stored none: ~8 s for 30 M views at the reference scale).
-- The lists read the linked views of catalogue products (_rec_views); the
-- unknown-products report counts the rest. (A filter on the id beside it made DuckDB
-- evaluate a read id twice.)
CREATE OR REPLACE TEMP TABLE _rec_viewed AS
SELECT customer_id, product_id, viewed_at FROM (
    SELECT customer_id, occurred_at AS viewed_at, {product_id} AS product_id
    FROM _rec_events
    WHERE list_contains($view_types, event_type) AND occurred_at < $until AND occurred_at >= $since);

CREATE OR REPLACE TEMP VIEW _rec_views AS
SELECT customer_id, product_id, viewed_at FROM _rec_viewed
WHERE customer_id IS NOT NULL AND product_id IN (SELECT product_id FROM _rec_catalogue)
