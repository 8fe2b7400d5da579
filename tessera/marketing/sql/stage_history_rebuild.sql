-- Entered/left per stage from every stored day (gaps and islands): for backfills.
WITH runs AS (
    SELECT as_of_date, row_number() OVER (ORDER BY as_of_date) AS k,
           lead(as_of_date) OVER (ORDER BY as_of_date) AS next_day
    FROM marketing.stage_runs
),
m AS (
    SELECT s.customer_id, s.stage, s.stage_rank, r.k, r.as_of_date, r.next_day,
           r.k - row_number() OVER (PARTITION BY s.customer_id, s.stage ORDER BY r.k) AS island
    FROM marketing.stages s JOIN runs r USING (as_of_date)
)
-- arg_max skips NULLs: the open end (no next run) is carried as 9999-12-31
SELECT customer_id, stage, any_value(stage_rank), min(as_of_date),
       nullif(arg_max(coalesce(next_day, DATE '9999-12-31'), k), DATE '9999-12-31')
FROM m GROUP BY customer_id, stage, island ORDER BY customer_id, 4
