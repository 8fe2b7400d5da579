-- The linkage check of core.events, computed apart from the build: events that carry an
-- identifier belonging to exactly one customer but are not linked (or are linked to
-- another customer than every such identifier names), events linked to an id that is
-- no customer now, and the anonymous share. The subquery w is every staged event with the
-- least and greatest owner its identifier columns name (linkage.events_linkage writes
-- it: one lookup per identifier kind present in staging.events).
SELECT
    count(*) AS events,
    count(*) FILTER (WHERE e.customer_id IS NULL) AS anonymous,
    count(*) FILTER (WHERE w.customer_id IS NOT NULL AND e.customer_id IS NULL) AS owned_but_unlinked,
    count(*) FILTER (WHERE w.customer_id = w.last_customer_id AND e.customer_id <> w.customer_id)
        AS linked_elsewhere,
    count(*) FILTER (WHERE e.customer_id IS NOT NULL
                     AND e.customer_id NOT IN (SELECT customer_id FROM core.customer_sources)) AS not_a_customer
FROM core.events e
LEFT JOIN ({staged}) AS w ON w.source = e.source AND w.source_record_id = e.event_id
