-- _rekey(old_id, new_id): every customer id retired by a merge, to the customer that holds
-- it now. From the whole merge log, so a run that was skipped or failed is caught up: a
-- retired id goes to the customer that took most of its records, and a chain of merges
-- (a into b, later b into c) is followed by the caller until it ends at a current id.
CREATE OR REPLACE TEMP TABLE _rekey AS
SELECT other_customer_id AS old_id, arg_max(customer_id, records) AS new_id
FROM core.merge_log
WHERE event = 'merged' AND other_customer_id NOT IN (SELECT customer_id FROM core.customer_sources)
GROUP BY other_customer_id
