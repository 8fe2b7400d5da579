"""Collaborative filtering: implicit's alternating least squares on implicit feedback.

Why a library: ALS on a sparse contacts x products matrix is a solved problem, and
``implicit`` solves it in compiled code with a conjugate-gradient solver; what stays
here is only the hand-over. The interactions come from the engine as Arrow (purchases
weigh 1, views ``view_weight``), the scores go back as Arrow and are ranked, filtered
and stored in SQL like every other kind. Contacts with no interaction are cold: they
get the best sellers instead (added in SQL by :mod:`tessera.recommendations.lists`).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from scipy.sparse import csr_matrix
from threadpoolctl import threadpool_limits

from tessera.engine import Engine, SqlStep
from tessera.settings.recommendations import AlsSettings

# Collaborative candidates per contact in the Arrow hand-back, before SQL takes out
# excluded and bought products and keeps the top N.
_INTERACTIONS = SqlStep("recommendations.als_interactions", """
    WITH w AS (
        SELECT customer_id, product_id, 1.0 AS w FROM _rec_purchases WHERE customer_id IS NOT NULL
        UNION ALL
        SELECT customer_id, product_id, $view_weight FROM _rec_views WHERE $view_weight > 0)
    SELECT CAST(dense_rank() OVER (ORDER BY customer_id) - 1 AS INTEGER) AS u,
           CAST(dense_rank() OVER (ORDER BY product_id) - 1 AS INTEGER) AS i,
           customer_id, product_id, sum(w) AS w
    FROM w GROUP BY customer_id, product_id""")

_TARGET_USERS = SqlStep("recommendations.als_targets", """
    SELECT DISTINCT a.u FROM _rec_als_users a JOIN _rec_targets t ON t.customer_id = a.customer_id
    ORDER BY a.u""")


def als_candidates(engine: Engine, als: AlsSettings, n: int) -> dict:
    """Fit ALS on the interactions before the cut, write ``_rec_als`` (customer, product,
    score) for the targets it knows and ``_rec_als_users`` (every contact it knows)."""
    from implicit.als import AlternatingLeastSquares  # the import takes ~1 s: only when used

    inter = engine.arrow(_INTERACTIONS.bind(view_weight=als.view_weight))
    u = inter.column("u").to_numpy()
    i = inter.column("i").to_numpy()
    engine.register_arrow("_rec_als_users_arrow", pa.table({
        "u": u, "customer_id": inter.column("customer_id")}))
    engine.run(SqlStep("recommendations.als_users",
                       "CREATE OR REPLACE TEMP TABLE _rec_als_users AS "
                       "SELECT DISTINCT u, customer_id FROM _rec_als_users_arrow"))
    engine.unregister("_rec_als_users_arrow")
    empty = pa.table({"customer_id": pa.array([], pa.int64()), "product_id": pa.array([], pa.string()),
                      "score": pa.array([], pa.float64())})
    users = engine.columns(_TARGET_USERS)["u"]
    if len(u) == 0 or not users:
        _store(engine, empty)
        return {"als_contacts": 0, "als_products": 0}
    n_users, n_items = int(u.max()) + 1, int(i.max()) + 1
    weights = inter.column("w").to_numpy().astype(np.float32) * np.float32(als.alpha)
    user_items = csr_matrix((weights, (u, i)), shape=(n_users, n_items), dtype=np.float32)
    customer_of = np.zeros(n_users, dtype=np.int64)
    customer_of[u] = inter.column("customer_id").to_numpy()
    product_of = np.empty(n_items, dtype=object)
    product_of[i] = inter.column("product_id").to_numpy(zero_copy_only=False)

    # One BLAS thread: implicit parallelises over users itself, and a fixed thread
    # layout keeps the factors (and so the lists) the same from run to run.
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(factors=als.factors, regularization=als.regularization,
                                        iterations=als.iterations, random_state=als.seed,
                                        use_gpu=False, calculate_training_loss=False)
        model.fit(user_items, show_progress=False)
        targets = np.asarray(users, dtype=np.int64)
        k = min(n, n_items)
        ids, scores = model.recommend(targets, user_items[targets], N=k,
                                      filter_already_liked_items=False)
    ids = np.atleast_2d(ids)
    scores = np.atleast_2d(scores)
    keep = ids.ravel() >= 0  # implicit pads short rows with -1
    table = pa.table({
        "customer_id": np.repeat(customer_of[targets], ids.shape[1])[keep],
        "product_id": pa.array(product_of[ids.ravel()[keep]].tolist(), pa.string()),
        "score": scores.ravel()[keep].astype(np.float64),
    })
    _store(engine, table)
    return {"als_contacts": int(n_users), "als_products": int(n_items)}


def _store(engine: Engine, table: pa.Table) -> None:
    engine.register_arrow("_rec_als_arrow", table)
    engine.run(SqlStep("recommendations.als_scores",
                       "CREATE OR REPLACE TEMP TABLE _rec_als AS "
                       "SELECT customer_id, product_id, score FROM _rec_als_arrow"))
    engine.unregister("_rec_als_arrow")
