-- Entered/left of one segment from every stored day (gaps and islands): used when an
-- earlier day is (re)built, so a backfill gives the same history as if the days had run
-- in order.
WITH runs AS (
    SELECT as_of_date, row_number() OVER (ORDER BY as_of_date) AS k,
           lead(as_of_date) OVER (ORDER BY as_of_date) AS next_day
    FROM ops.segment_runs WHERE segment = $segment
),
m AS (
    SELECT sm.customer_id, r.k, r.as_of_date, r.next_day,
           r.k - row_number() OVER (PARTITION BY sm.customer_id ORDER BY r.k) AS island
    FROM marketing.segment_members sm JOIN runs r USING (as_of_date)
    WHERE sm.segment = $segment
)
-- arg_max skips NULLs: the open end (no next run) is carried as 9999-12-31
SELECT $segment, customer_id, min(as_of_date) AS entered_on,
       nullif(arg_max(coalesce(next_day, DATE '9999-12-31'), k), DATE '9999-12-31') AS left_on
FROM m GROUP BY customer_id, island ORDER BY customer_id, entered_on
