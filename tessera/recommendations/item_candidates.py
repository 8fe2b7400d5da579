"""The co-occurrence kinds' candidates as a sparse matrix product.

Per target contact and kind, a product's score is the sum of the pair scores over the
contact's seeds (what it bought in the window for "bought together", what it viewed in
the last ``recent_days`` for the two viewing kinds): ``seeds (contacts x products) @
pairs (products x products)``. Why scipy and not SQL: in SQL the join of seeds and
neighbours is the largest intermediate of the whole build (about 200 M rows at the
reference scale, grouped into 30 M: 24 s on a training day); the sparse product never
makes it. A contact's row depends only on its own seeds and the model's pairs, so a day
that ranks only the changed contacts gets their rows as a full ranking would.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
from scipy.sparse import csr_matrix

from tessera.engine import Engine, SqlStep

KINDS = ("bought_together", "viewed_together", "bought_after_viewing")

# the targets numbered (t) in id order, and their seeds: 0 bought, 1 viewed recently
_SEEDS = SqlStep("recommendations.item_seeds", """
    WITH t AS (SELECT customer_id, CAST(row_number() OVER (ORDER BY customer_id) - 1 AS INTEGER) AS t
               FROM (SELECT DISTINCT customer_id FROM _rec_targets)),
    bought AS (
        SELECT DISTINCT p.customer_id, c.pid FROM _rec_purchases p JOIN _rec_pids c ON c.product_id = p.product_id
        WHERE p.customer_id IN (SELECT customer_id FROM _rec_targets)),
    viewed AS (
        SELECT DISTINCT v.customer_id, c.pid FROM _rec_views v JOIN _rec_pids c ON c.product_id = v.product_id
        WHERE v.viewed_at >= $recent_since AND v.customer_id IN (SELECT customer_id FROM _rec_targets))
    SELECT 0 AS seed, t.t, b.pid FROM bought b JOIN t ON t.customer_id = b.customer_id
    UNION ALL
    SELECT 1, t.t, v.pid FROM viewed v JOIN t ON t.customer_id = v.customer_id""")
_TARGET_IDS = SqlStep("recommendations.item_seed_targets",
                      "SELECT DISTINCT customer_id FROM _rec_targets ORDER BY customer_id")
_PAIRS = SqlStep("recommendations.item_pairs_numbered", """
    SELECT CAST(CASE p.kind WHEN 'bought_together' THEN 0 WHEN 'viewed_together' THEN 1 ELSE 2 END
                AS INTEGER) AS k, pa.pid AS a, pb.pid AS b, p.score
    FROM _rec_pairs p JOIN _rec_pids pa ON pa.product_id = p.a JOIN _rec_pids pb ON pb.product_id = p.b""")
_NAMED = SqlStep("recommendations.item_candidates", """
    CREATE OR REPLACE TEMP TABLE _rec_item_candidates AS
    SELECT CASE s.k WHEN 0 THEN 'bought_together' WHEN 1 THEN 'viewed_together' ELSE 'bought_after_viewing' END
               AS kind, s.customer_id, c.product_id, s.score
    FROM _rec_item_scores_arrow s JOIN _rec_pids c ON c.pid = s.b""")


def item_candidates(engine: Engine, recent_since: dt.date) -> None:
    """``_rec_item_candidates`` (kind, customer_id, product_id, score) for the contacts of
    ``_rec_targets``, from the pairs of ``_rec_pairs`` (``_rec_pids`` numbers them)."""
    seeds = engine.arrow(_SEEDS.bind(recent_since=recent_since))
    pairs = engine.arrow(_PAIRS)
    ids = np.asarray(engine.columns(_TARGET_IDS)["customer_id"], dtype=np.int64)
    n_products = int(max(np.max(pairs.column("a").to_numpy(), initial=0),
                         np.max(pairs.column("b").to_numpy(), initial=0),
                         np.max(seeds.column("pid").to_numpy(), initial=0))) + 1
    seed_kind = seeds.column("seed").to_numpy()
    seed_t = seeds.column("t").to_numpy()
    seed_p = seeds.column("pid").to_numpy()
    k, a, b = (pairs.column(c).to_numpy() for c in ("k", "a", "b"))
    score = pairs.column("score").to_numpy().astype(np.float64)
    out_k, out_c, out_b, out_s = [], [], [], []
    for kind in range(len(KINDS)):
        s = seed_kind == (0 if kind == 0 else 1)
        seed_matrix = csr_matrix((np.ones(int(s.sum())), (seed_t[s], seed_p[s])), shape=(len(ids), n_products))
        p = k == kind
        pair_matrix = csr_matrix((score[p], (a[p], b[p])), shape=(n_products, n_products))
        reached = (seed_matrix @ pair_matrix).tocoo()
        # (every pair score is above 0: a product reached has a sum above 0, so none is
        # dropped as a zero of the product)
        out_k.append(np.full(reached.nnz, kind, np.int32))
        out_c.append(ids[reached.row])
        out_b.append(reached.col.astype(np.int32))
        # sums rounded to 9 decimals: a re-run (and another order of addition) gives the same lists
        out_s.append(np.round(reached.data, 9))
    engine.register_arrow("_rec_item_scores_arrow", pa.table({
        "k": np.concatenate(out_k), "customer_id": np.concatenate(out_c),
        "b": np.concatenate(out_b), "score": np.concatenate(out_s)}))
    engine.run(_NAMED)
    engine.unregister("_rec_item_scores_arrow")
