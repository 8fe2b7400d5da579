-- Who holds each identifier now: every identifier a staged contact record carries, with
-- the customer that owns the record after this run's merges and splits. ``kind`` is
-- 'email' (the match key: junk addresses have none), 'phone' (mobile and landline keys,
-- E.164), 'erp_id', or 'record:<source>' for a record id of that contact source (how an
-- order, an event or a withdrawal names "its" contact). One row per (kind, key, customer).
CREATE OR REPLACE TEMP TABLE _identifier_owners AS
WITH rec AS (
    SELECT s.email_key, s.mobile_key, s.phone_key, s.erp_id, s.source, s.source_record_id,
           cs.customer_id
    FROM staging.contacts s JOIN core.customer_sources cs USING (source, source_record_id)
)
SELECT DISTINCT kind, key, customer_id FROM (
    SELECT 'email' AS kind, email_key AS key, customer_id FROM rec WHERE email_key IS NOT NULL
    UNION ALL SELECT 'phone', mobile_key, customer_id FROM rec WHERE mobile_key IS NOT NULL
    UNION ALL SELECT 'phone', phone_key, customer_id FROM rec WHERE phone_key IS NOT NULL
    UNION ALL SELECT 'erp_id', erp_id, customer_id FROM rec WHERE erp_id IS NOT NULL
    UNION ALL SELECT 'record:' || source, source_record_id, customer_id FROM rec
) AS ids
