-- core.events: every staged event with the customer that owns it after this run's
-- merges and splits, found through the identity graph rather than by one e-mail lookup.
--
-- An event carries identifiers (a contact record id of the source's customer_source, an
-- e-mail, a phone in E.164); an identifier links when it belongs to exactly one customer
-- now (_link_owners), however many records of that customer carry it. The strongest
-- linking identifier decides (record id, then ERP id, e-mail, phone): {lookups} are one
-- LEFT JOIN of the owners per kind (linkage._owner_lookups), {customer_id} and
-- {linked_by} the first that found an owner. A device or cookie id links the events that
-- carry nothing else when every event of that device which did link names one and the
-- same customer. {product_id}: the product the event is about (linkage.product_id_sql).
-- Sorted by time: the day's events are a range the scans prune by zone maps.
WITH direct AS (
    SELECT e.source_record_id, e.event_type, e.occurred_at, e.properties, e.source, e.device_id,
           {customer_id} AS customer_id, {linked_by} AS linked_by, {product_id} AS product_id
    FROM staging.events e {lookups}
),
devices AS (
    SELECT device_id, min(customer_id) AS customer_id FROM direct
    WHERE device_id IS NOT NULL AND customer_id IS NOT NULL
    GROUP BY device_id HAVING count(DISTINCT customer_id) = 1
)
SELECT d.source_record_id AS event_id, coalesce(d.customer_id, v.customer_id) AS customer_id,
       d.event_type, d.occurred_at, d.properties, d.source,
       CASE WHEN d.customer_id IS NOT NULL THEN d.linked_by
            WHEN v.customer_id IS NOT NULL THEN 'device' END AS linked_by,
       d.product_id
FROM direct d
LEFT JOIN devices v ON v.device_id = d.device_id
ORDER BY d.occurred_at, event_id
