-- Product ids that orders and views name but the catalogue does not hold: reported
-- with how often they occur, never recommended. Excluded products are not unknown.
WITH known AS (SELECT DISTINCT CAST(source_record_id AS VARCHAR) AS product_id FROM staging.products),
ordered AS (
    SELECT 'order_line' AS origin, CAST(l.product_id AS VARCHAR) AS product_id
    FROM core.orders o JOIN staging.order_lines l ON l.order_id = o.order_id
    WHERE l.product_id IS NOT NULL AND o.order_date < $until AND o.order_date >= $since),
-- the window's views as load_inputs read them for the same $until (its window is
-- history_days, as $since here): the JSON is not parsed a second time
viewed AS (SELECT 'view' AS origin, product_id FROM _rec_viewed)
SELECT CAST($day AS DATE) AS as_of_date, origin, product_id, count(*) AS occurrences
FROM (SELECT * FROM ordered UNION ALL SELECT * FROM viewed)
WHERE product_id IS NOT NULL AND product_id NOT IN (SELECT product_id FROM known)
GROUP BY origin, product_id
