-- RFM quintiles of the customers who bought on or before $as_of, with their group.
WITH base AS (
    SELECT customer_id, CAST($as_of AS DATE) - max(order_date) AS recency_days,
           count(*) AS frequency, sum(amount) AS monetary
    FROM core.orders
    WHERE customer_id IS NOT NULL AND order_date <= $as_of
    GROUP BY customer_id
),
scored AS (
    SELECT *,
           ntile(5) OVER (ORDER BY recency_days DESC, customer_id) AS r_score,
           ntile(5) OVER (ORDER BY frequency, monetary, customer_id) AS f_score,
           ntile(5) OVER (ORDER BY monetary, customer_id) AS m_score
    FROM base
)
SELECT CAST($as_of AS DATE), customer_id, recency_days, frequency, monetary, r_score, f_score,
       m_score,
       CAST(r_score AS VARCHAR) || CAST(f_score AS VARCHAR) || CAST(m_score AS VARCHAR),
       CASE WHEN r_score >= 4 AND f_score >= 4 THEN 'champions'
            WHEN r_score >= 3 AND f_score >= 3 THEN 'loyal'
            WHEN r_score >= 3 THEN 'potential'
            WHEN f_score >= 3 THEN 'at_risk'
            WHEN r_score = 2 THEN 'hibernating'
            ELSE 'lost' END
FROM scored ORDER BY customer_id
