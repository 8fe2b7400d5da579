-- The contact card: every golden customer not soft-deleted, with order, behaviour and CRM
-- annotation summaries. The company placeholders are filled (or emptied) by
-- tessera.card.marts when the deployment has company users.
WITH soft_deleted AS (
    -- soft-deleted people disappear from cards (so from segments and feeds)
    -- until restored or purged
    {soft_deleted}
),
a AS ({annotations}),
o AS ({order_summary}),
e AS (
    SELECT customer_id, count(*) AS event_count, max(occurred_at) AS last_event_at,
           count(*) FILTER (WHERE event_type = 'page_view') AS page_views,
           count(*) FILTER (WHERE event_type = 'email_open') AS email_opens
    FROM core.events WHERE customer_id IS NOT NULL GROUP BY customer_id
){set_cte}{company_cte}
SELECT {customer_columns},
       coalesce(o.order_number, 0) AS order_number,
       CAST(coalesce(o.order_summary, 0) AS DECIMAL(18,2)) AS order_summary,
       o.order_avg, o.first_order_date, o.last_order_date,
       coalesce(e.event_count, 0) AS event_count, e.last_event_at,
       coalesce(e.page_views, 0) AS page_views, coalesce(e.email_opens, 0) AS email_opens,
       coalesce(a.note_count, 0) AS note_count, a.last_note_at,
       coalesce(a.open_tasks, 0) AS open_tasks, a.next_task_due_at{company_columns}
FROM core.customers c
LEFT JOIN o USING (customer_id)
LEFT JOIN e USING (customer_id)
LEFT JOIN a USING (customer_id)
{set_join}
{company_join}
WHERE c.customer_id NOT IN (SELECT customer_id FROM soft_deleted)
ORDER BY c.customer_id
