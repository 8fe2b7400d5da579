-- The linkage check of core.events, computed apart from the build: events that carry an
-- identifier belonging to exactly one customer but are not linked (or are linked to
-- another customer than every such identifier names), events linked to an id that is
-- no customer now, and the anonymous share.
WITH owners AS (
    SELECT kind, key, min(customer_id) AS customer_id
    FROM _identifier_owners GROUP BY kind, key HAVING count(*) = 1
),
-- the owners an event's identifiers name: one customer when the least and the greatest
-- are the same (min and max in one hash aggregate; a distinct count planned two more
-- aggregates and a join over every event, 45 s and a 4 GB spill at 50 M events)
owned AS (
    SELECT i.source, i.source_record_id, min(o.customer_id) AS customer_id,
           max(o.customer_id) AS last_customer_id
    FROM _event_identifiers i JOIN owners o ON o.kind = i.kind AND o.key = i.key
    GROUP BY i.source, i.source_record_id
)
SELECT
    count(*) AS events,
    count(*) FILTER (WHERE e.customer_id IS NULL) AS anonymous,
    count(*) FILTER (WHERE w.customer_id IS NOT NULL AND e.customer_id IS NULL) AS owned_but_unlinked,
    count(*) FILTER (WHERE w.customer_id = w.last_customer_id AND e.customer_id <> w.customer_id)
        AS linked_elsewhere,
    count(*) FILTER (WHERE e.customer_id IS NOT NULL
                     AND e.customer_id NOT IN (SELECT customer_id FROM core.customer_sources)) AS not_a_customer
FROM core.events e
LEFT JOIN owned w ON w.source = e.source AND w.source_record_id = e.event_id
