-- Every kind's top $top per target contact: products the catalogue holds, and for the
-- discovery kinds (all but buy again) nothing the contact bought when $exclude is on.
-- Ties break on the product id and sums are rounded to 9 decimals (a parallel sum of
-- doubles may differ in the last bit), so a re-run gives the same lists.
CREATE OR REPLACE TEMP TABLE _rec_lists AS
SELECT kind, customer_id, CAST(rank AS INTEGER) AS rank, product_id, score FROM (
    SELECT c.kind, c.customer_id, c.product_id, c.score,
           row_number() OVER (PARTITION BY c.kind, c.customer_id ORDER BY c.score DESC, c.product_id) AS rank
    FROM _rec_candidates c
    -- every candidate is a target's and a catalogue product's by construction (the
    -- inputs hold catalogue products only, each kind is built for _rec_targets)
    WHERE (c.kind = 'buy_again' OR NOT $exclude OR NOT EXISTS (
            SELECT 1 FROM _rec_bought b WHERE b.customer_id = c.customer_id AND b.product_id = c.product_id)))
WHERE rank <= $top;

-- the weighted combination: each kind's scores scaled to its best (1.0) per contact,
-- weighted, summed and ranked again (buy again takes part only when bought products
-- are not excluded: a repeat-purchase catalogue)
INSERT INTO _rec_lists
SELECT 'combined', customer_id, CAST(rank AS INTEGER), product_id, score FROM (
    SELECT customer_id, product_id, score,
           row_number() OVER (PARTITION BY customer_id ORDER BY score DESC, product_id) AS rank
    FROM (
        SELECT customer_id, product_id, round(sum(w * score / best), 9) AS score FROM (
            SELECT customer_id, product_id, score,
                   max(score) OVER (PARTITION BY kind, customer_id) AS best,
                   CASE kind WHEN 'collaborative' THEN $w_collaborative
                             WHEN 'bought_after_viewing' THEN $w_bought_after_viewing
                             WHEN 'viewed_together' THEN $w_viewed_together
                             WHEN 'bought_together' THEN $w_bought_together
                             WHEN 'popular' THEN $w_popular
                             WHEN 'buy_again' THEN $w_buy_again ELSE 0.0 END AS w
            FROM _rec_lists)
        WHERE best > 0 AND w > 0
        GROUP BY customer_id, product_id))
WHERE rank <= $top
