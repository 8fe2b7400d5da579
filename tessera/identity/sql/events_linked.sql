-- core.events: every staged event with the customer that owns it after this run's
-- merges and splits, found through the identity graph rather than by one e-mail lookup.
--
-- An event carries identifiers (_event_identifiers: a contact record id of the source's
-- customer_source, an e-mail, a phone in E.164); an identifier links when it belongs to
-- exactly one customer now (_identifier_owners), however many records of that customer
-- carry it. The strongest linking identifier decides (record id, then e-mail, then
-- phone). A device or cookie id links the events that carry nothing else when every
-- event of that device which did link names one and the same customer.
WITH owners AS (
    SELECT kind, key, min(customer_id) AS customer_id
    FROM _identifier_owners GROUP BY kind, key HAVING count(*) = 1
),
direct AS (
    SELECT i.source, i.source_record_id,
           min_by(o.customer_id, i.strength) AS customer_id,
           min_by(i.linked_by, i.strength) AS linked_by
    FROM _event_identifiers i JOIN owners o ON o.kind = i.kind AND o.key = i.key
    GROUP BY i.source, i.source_record_id
),
devices AS (
    SELECT e.device_id, min(d.customer_id) AS customer_id
    FROM staging.events e JOIN direct d ON d.source = e.source AND d.source_record_id = e.source_record_id
    WHERE e.device_id IS NOT NULL
    GROUP BY e.device_id HAVING count(DISTINCT d.customer_id) = 1
)
SELECT e.source_record_id AS event_id, coalesce(d.customer_id, v.customer_id) AS customer_id,
       e.event_type, e.occurred_at, e.properties, e.source,
       CASE WHEN d.customer_id IS NOT NULL THEN d.linked_by
            WHEN v.customer_id IS NOT NULL THEN 'device' END AS linked_by
FROM staging.events e
LEFT JOIN direct d ON d.source = e.source AND d.source_record_id = e.source_record_id
LEFT JOIN devices v ON v.device_id = e.device_id
ORDER BY e.occurred_at, event_id
