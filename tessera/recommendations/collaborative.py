"""Collaborative filtering: implicit's alternating least squares on implicit feedback.

Why a library: ALS on a sparse contacts x products matrix is a solved problem, and
``implicit`` solves it in compiled code with a conjugate-gradient solver; what stays
here is only the hand-over. The interactions come from the engine as Arrow (purchases
weigh 1, views ``view_weight``), the scores go back as Arrow and are ranked, filtered
and stored in SQL like every other kind. Contacts with no interaction are cold: they
get the best sellers instead (added in SQL by :mod:`tessera.recommendations.lists`).

Why the fit and the ranking are apart: the fit is the model (its product factors,
stored with the day's training and kept until the next one); a contact's factors are
then solved exactly from the product factors and the contact's own interactions
(implicit's Cholesky ``recalculate_user``), on the training day as on the days between.
So a contact's collaborative list is a function of the stored model and its own inputs
only: a day between trainings ranks the contacts whose inputs changed and gives them
the lists a full ranking would (measured: the same factors and top lists whatever other
contacts are in the batch).

Why a warm start: a run fits twice, once on the data before the back-test's cut and once
on everything for the day's lists. The second fit starts from the first one's factors
(matched by contact and product id; newcomers start random) and runs only
``warm_iterations``: the day's data is the back-test's plus a few weeks, so the factors
are already close, and the full fit is paid once (measured on the bench: see README).
The back-test stays honest: its model never sees a held-out purchase.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.sparse import csr_matrix
from threadpoolctl import threadpool_limits

from tessera.engine import Engine, SqlStep
from tessera.settings.recommendations import AlsSettings

# The interactions, numbered for the sparse matrix: u (contact) and i (product) are dense
# ranks, so only three numeric columns cross into Python and back. Products go by the
# catalogue's integer number (``_rec_pids``, made by item_pairs.sql, numbered in product id
# order): the 14 M interactions are grouped and joined on integers, and the product id is
# named again only for the 10^4-10^5 products the model knows (``_rec_als_items``).
_INTERACTIONS = SqlStep("recommendations.als_interactions", """
    CREATE OR REPLACE TEMP TABLE _rec_als_inter AS
    WITH w AS (
        SELECT p.customer_id, c.pid, 1.0 AS w
        FROM _rec_purchases p JOIN _rec_pids c ON c.product_id = p.product_id
        WHERE p.customer_id IS NOT NULL
        UNION ALL
        SELECT v.customer_id, c.pid, $view_weight
        FROM _rec_views v JOIN _rec_pids c ON c.product_id = v.product_id WHERE $view_weight > 0),
    summed AS (SELECT customer_id, pid, sum(w) AS w FROM w GROUP BY customer_id, pid),
    -- numbered over the distinct ids (a sort of 10^5 ids, not of every interaction)
    cu AS (SELECT customer_id, CAST(row_number() OVER (ORDER BY customer_id) - 1 AS INTEGER) AS u
           FROM (SELECT DISTINCT customer_id FROM summed)),
    ci AS (SELECT pid, CAST(row_number() OVER (ORDER BY pid) - 1 AS INTEGER) AS i
           FROM (SELECT DISTINCT pid FROM summed))
    SELECT cu.u, ci.i, s.customer_id, s.pid, s.w
    FROM summed s JOIN cu ON cu.customer_id = s.customer_id JOIN ci ON ci.pid = s.pid""")
# in any order: the matrix sorts its indices itself (cheaper than a sort in SQL)
_MATRIX = SqlStep("recommendations.als_matrix", "SELECT u, i, w FROM _rec_als_inter")
_USERS = SqlStep("recommendations.als_users", """
    CREATE OR REPLACE TEMP TABLE _rec_als_users AS SELECT DISTINCT u, customer_id FROM _rec_als_inter""")
_ITEMS = SqlStep("recommendations.als_items", """
    CREATE OR REPLACE TEMP TABLE _rec_als_items AS
    SELECT a.i, a.pid, c.product_id FROM (SELECT DISTINCT i, pid FROM _rec_als_inter) a
    JOIN _rec_pids c ON c.pid = a.pid""")
_USER_IDS = SqlStep("recommendations.als_user_ids", "SELECT customer_id FROM _rec_als_users ORDER BY u")
_ITEM_IDS = SqlStep("recommendations.als_item_ids", "SELECT product_id FROM _rec_als_items ORDER BY i")
# The products the model may recommend: bought by at least $min_buyers contacts in the
# window. The rest still shape the fit (their views and rare purchases say something about
# taste), but scoring them for every contact is most of the top lists' cost on a long-tail
# catalogue and they are seldom the next purchase (see README: als.min_buyers).
_CANDIDATE_ITEMS = SqlStep("recommendations.als_candidate_items", """
    SELECT p.i FROM _rec_als_items p
    JOIN (SELECT product_id FROM _rec_purchases WHERE customer_id IS NOT NULL GROUP BY product_id
          HAVING count(DISTINCT customer_id) >= $min_buyers) b ON b.product_id = p.product_id
    ORDER BY p.i""")
# The model's products: number, catalogue number, id and whether it may be recommended.
_MODEL = SqlStep("recommendations.als_model", """
    CREATE OR REPLACE TEMP TABLE _rec_als_model AS
    SELECT p.i, p.pid, p.product_id, c.i IS NOT NULL AS candidate
    FROM _rec_als_items p LEFT JOIN _rec_als_candidates_arrow c ON c.i = p.i""")
# The targets' interactions with the model's products, the targets numbered (u) in id order.
_TARGET_INTERACTIONS = SqlStep("recommendations.als_target_interactions", """
    CREATE OR REPLACE TEMP TABLE _rec_als_inter AS
    WITH w AS (
        SELECT p.customer_id, m.i, 1.0 AS w
        FROM _rec_purchases p JOIN _rec_pids c ON c.product_id = p.product_id
        JOIN _rec_als_model m ON m.pid = c.pid
        WHERE p.customer_id IN (SELECT customer_id FROM _rec_targets)
        UNION ALL
        SELECT v.customer_id, m.i, $view_weight
        FROM _rec_views v JOIN _rec_pids c ON c.product_id = v.product_id
        JOIN _rec_als_model m ON m.pid = c.pid
        WHERE $view_weight > 0 AND v.customer_id IN (SELECT customer_id FROM _rec_targets)),
    summed AS (SELECT customer_id, i, sum(w) AS w FROM w GROUP BY customer_id, i),
    cu AS (SELECT customer_id, CAST(row_number() OVER (ORDER BY customer_id) - 1 AS INTEGER) AS u
           FROM (SELECT DISTINCT customer_id FROM summed))
    SELECT cu.u, s.i, s.customer_id, s.w FROM summed s JOIN cu ON cu.customer_id = s.customer_id""")
_TARGET_MATRIX = SqlStep("recommendations.als_target_matrix", "SELECT u, i, w FROM _rec_als_inter")
_CANDIDATES = SqlStep("recommendations.als_model_candidates",
                      "SELECT i FROM _rec_als_model WHERE candidate ORDER BY i")
# What each target bought before the cut among the model's products (any time, as the
# lists' exclusion reads it): filtered out of the model's top N, and scored on their own.
_BOUGHT = SqlStep("recommendations.als_bought", """
    SELECT a.u, p.i FROM _rec_bought b
    JOIN _rec_als_users a ON a.customer_id = b.customer_id
    JOIN _rec_als_model p ON p.product_id = b.product_id""")
_SCORES = SqlStep("recommendations.als_scores", """
    CREATE OR REPLACE TEMP TABLE _rec_als AS
    SELECT u.customer_id, p.product_id, CAST(s.score AS DOUBLE) AS score
    FROM _rec_als_arrow s
    JOIN _rec_als_users u ON u.u = s.u
    JOIN _rec_als_model p ON p.i = s.i""")
_FACTORS = SqlStep("recommendations.als_factors", "SELECT i, k, value FROM _rec_als_factors ORDER BY i, k")


@dataclass
class Factors:
    """A fitted model's factors with the contact and product id of each row."""

    users: pa.Array
    items: pa.Array
    user_factors: np.ndarray
    item_factors: np.ndarray


def _warm(ids: pa.Array, previous: pa.Array, factors: np.ndarray, start: np.ndarray) -> np.ndarray:
    """``start`` with the rows of ids the previous model knew replaced by its factors."""
    pos = pc.index_in(ids, value_set=previous).to_numpy(zero_copy_only=False)
    known = ~np.isnan(pos) if pos.dtype.kind == "f" else pos >= 0
    start[known] = factors[pos[known].astype(np.int64)]
    return start


def _model(als: AlsSettings, factors: int, iterations: int):
    from implicit.als import AlternatingLeastSquares  # the import takes ~1 s: only when used

    return AlternatingLeastSquares(factors=factors, regularization=als.regularization,
                                   iterations=iterations, random_state=als.seed,
                                   use_gpu=False, calculate_training_loss=False)


def _set_factors(engine: Engine, item_factors: np.ndarray) -> None:
    """``_rec_als_factors`` (i, k, value): the product factors, one row per cell (the
    form any engine stores; recommendations.model_factors keeps them)."""
    n_items, f = item_factors.shape
    engine.register_arrow("_rec_als_factors_arrow", pa.table({
        "i": np.repeat(np.arange(n_items, dtype=np.int32), f),
        "k": np.tile(np.arange(f, dtype=np.int32), n_items),
        "value": np.ascontiguousarray(item_factors, dtype=np.float32).ravel()}))
    engine.run(SqlStep("recommendations.als_factors_table",
                       "CREATE OR REPLACE TEMP TABLE _rec_als_factors AS SELECT i, k, value FROM _rec_als_factors_arrow"))
    engine.unregister("_rec_als_factors_arrow")


def fit_items(engine: Engine, als: AlsSettings, warm: Factors | None = None) -> tuple[dict, Factors | None]:
    """Fit ALS on every interaction of the window (``load_inputs`` ran): the model's
    products in ``_rec_als_model`` (i, pid, product_id, candidate) and their factors in
    ``_rec_als_factors``. With ``warm`` (an earlier fit of the same run), start from its
    factors and run ``als.warm_iterations``. Returns counts and the fit's factors."""
    engine.run(_INTERACTIONS.bind(view_weight=als.view_weight), _USERS, _ITEMS)
    inter = engine.arrow(_MATRIX)
    u = inter.column("u").to_numpy()
    i = inter.column("i").to_numpy()
    if len(u) == 0:
        engine.register_arrow("_rec_als_candidates_arrow", pa.table({"i": np.zeros(0, np.int32)}))
        engine.run(_MODEL)
        engine.unregister("_rec_als_candidates_arrow")
        _set_factors(engine, np.zeros((0, als.factors), np.float32))
        engine.run(SqlStep("recommendations.als_drop_interactions", "DROP TABLE IF EXISTS _rec_als_inter"))
        return {"als_products": 0, "als_candidate_products": 0, "als_iterations": 0}, None
    n_users, n_items = int(u.max()) + 1, int(i.max()) + 1
    weights = inter.column("w").to_numpy().astype(np.float32) * np.float32(als.alpha)
    del inter
    user_items = csr_matrix((weights, (u, i)), shape=(n_users, n_items), dtype=np.float32)
    user_items.sort_indices()  # the same matrix, so the same fit, whatever order the rows came in
    del u, i, weights
    # One BLAS thread: implicit parallelises the fit over users itself, and a fixed thread
    # layout keeps the factors and scores (and so the lists) the same from run to run
    # (measured: several BLAS threads give other top lists, and are slower on 2 cores).
    user_ids = engine.arrow(_USER_IDS).column("customer_id").combine_chunks()
    item_ids = engine.arrow(_ITEM_IDS).column("product_id").combine_chunks()
    iterations = als.iterations if warm is None else als.warm_iterations
    with threadpool_limits(1, "blas"):
        model = _model(als, als.factors, iterations)
        if warm is not None and warm.user_factors.shape[1] == model.factors:
            rng = np.random.default_rng(als.seed)
            model.user_factors = _warm(user_ids, warm.users, warm.user_factors,
                                       rng.random((n_users, model.factors), dtype=np.float32) * 0.01)
            model.item_factors = _warm(item_ids, warm.items, warm.item_factors,
                                       rng.random((n_items, model.factors), dtype=np.float32) * 0.01)
        model.fit(user_items, show_progress=False)
    del user_items
    items = (np.arange(n_items, dtype=np.int32) if als.min_buyers == 0 else
             np.asarray(engine.columns(_CANDIDATE_ITEMS.bind(min_buyers=als.min_buyers))["i"], dtype=np.int32))
    engine.register_arrow("_rec_als_candidates_arrow", pa.table({"i": items}))
    engine.run(_MODEL)
    engine.unregister("_rec_als_candidates_arrow")
    # the interactions are in the fit: their memory goes back to DuckDB before the ranking
    engine.run(SqlStep("recommendations.als_drop_interactions", "DROP TABLE IF EXISTS _rec_als_inter"))
    item_factors = np.asarray(model.item_factors, dtype=np.float32)
    _set_factors(engine, item_factors)
    fitted = Factors(user_ids, item_ids, np.asarray(model.user_factors), item_factors)
    return {"als_products": int(n_items), "als_candidate_products": int(len(items)),
            "als_iterations": int(iterations)}, fitted


def model_factors(engine: Engine, n_factors: int) -> np.ndarray:
    """The product factors of ``_rec_als_factors`` as a (products x factors) array."""
    cols = engine.arrow(_FACTORS)
    values = cols.column("value").to_numpy().astype(np.float32)
    f = int(np.max(cols.column("k").to_numpy())) + 1 if len(values) else n_factors
    return values.reshape(-1, f)


def als_candidates(engine: Engine, als: AlsSettings, n: int, pool: int = 0) -> dict:
    """Rank the contacts of ``_rec_targets`` with the model of ``_rec_als_model`` /
    ``_rec_als_factors``: ``_rec_als`` (customer, product, score) for the targets with an
    interaction on a model product, ``_rec_als_users`` (those targets). Each target's
    factors are solved exactly from the product factors and its own interactions. Per
    target: the model's top ``n`` of the products it did not buy (looked for in the top
    ``n + pool``) and every product it bought, scored. Returns counts."""
    engine.run(_TARGET_INTERACTIONS.bind(view_weight=als.view_weight), _USERS)
    item_factors = model_factors(engine, als.factors)
    inter = engine.arrow(_TARGET_MATRIX)
    u = inter.column("u").to_numpy()
    i = inter.column("i").to_numpy()
    n_items = len(item_factors)
    if len(u) == 0 or n_items == 0:
        engine.run(SqlStep("recommendations.als_drop_interactions", "DROP TABLE IF EXISTS _rec_als_inter"))
        _store(engine, np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float32))
        return {"als_contacts": 0}
    n_users = int(u.max()) + 1
    weights = inter.column("w").to_numpy().astype(np.float32) * np.float32(als.alpha)
    del inter
    user_items = csr_matrix((weights, (u, i)), shape=(n_users, n_items), dtype=np.float32)
    user_items.sort_indices()
    del u, i, weights
    engine.run(SqlStep("recommendations.als_drop_interactions", "DROP TABLE IF EXISTS _rec_als_inter"))
    items = np.asarray(engine.columns(_CANDIDATES)["i"], dtype=np.int32)
    users = np.arange(n_users, dtype=np.int32)
    with threadpool_limits(1, "blas"):
        model = _model(als, item_factors.shape[1], 1)
        model.item_factors = item_factors
        # each contact's least squares on its own row: the same factors whatever rows
        # are in the batch (so a day between trainings ranks a changed contact as a full
        # ranking would)
        model.user_factors = model.recalculate_user(users, user_items)
        del user_items
        if len(items):
            ids, scores = model.recommend(users, None, N=min(n + pool, len(items)),
                                          filter_already_liked_items=False, items=items)
        else:
            ids = np.full((len(users), 0), -1, np.int64)
            scores = np.zeros((len(users), 0), np.float32)
        uf, itf = np.asarray(model.user_factors), np.asarray(model.item_factors)
        # What each target bought: dropped from the model's top n + pool, whose first n
        # left are kept, and scored on their own. With bought products excluded the lists
        # take the first n, with them kept the top n of both is the model's top n: n
        # rows and the purchases a contact reach the ranking, not n + pool. (implicit's
        # own filter, filter_already_liked_items with the bought matrix, measured 3x the
        # CPU of the unfiltered top list at 100k contacts.)
        bought = engine.arrow(_BOUGHT)
        b_u = bought.column("u").to_numpy().astype(np.int64)
        b_i = bought.column("i").to_numpy().astype(np.int64)
        b_scores = _row_dots(uf, itf, b_u, b_i)
    ids = np.atleast_2d(ids)
    scores = np.atleast_2d(scores)
    keep_u, keep_i, keep_s = _unbought_top(users, ids, scores, np.unique(b_u * n_items + b_i), n_items, n)
    _store(engine, np.concatenate([keep_u, b_u]).astype(np.int32),
           np.concatenate([keep_i, b_i]).astype(np.int32),
           np.concatenate([keep_s, b_scores]).astype(np.float32))
    return {"als_contacts": int(n_users)}


def _row_dots(uf: np.ndarray, itf: np.ndarray, u: np.ndarray, i: np.ndarray,
              block: int = 262_144) -> np.ndarray:
    """``uf[u[k]] . itf[i[k]]`` for every k, in blocks (the gathered factor rows of every
    purchase at once are hundreds of MB at 500k contacts)."""
    out = np.zeros(len(u), np.float32)
    for start in range(0, len(u), block):
        end = start + block
        out[start:end] = np.einsum("ij,ij->i", uf[u[start:end]], itf[i[start:end]])
    return out


def _unbought_top(users: np.ndarray, ids: np.ndarray, scores: np.ndarray, bought: np.ndarray,
                  n_items: int, n: int, block: int = 65_536) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of ``ids`` (the top list of ``users[row]``), its first ``n`` products that
    are not in ``bought`` (sorted keys ``user * n_items + product``; -1 ids are padding).
    Why in blocks of users: at 500k contacts the keys of every list at once (plus the
    search's positions) were the stage's memory peak; a block's are a few MB."""
    out_u, out_i, out_s = [], [], []
    last = max(len(bought) - 1, 0)
    for start in range(0, len(users), block):
        blk = ids[start:start + block].astype(np.int64)
        u = users[start:start + block].astype(np.int64)[:, None]
        key = u * n_items + blk
        is_bought = blk < 0
        if len(bought):
            is_bought |= bought[np.minimum(np.searchsorted(bought, key), last)] == key
        keep = ~is_bought & (np.cumsum(~is_bought, axis=1) <= n)
        out_u.append(np.broadcast_to(u, blk.shape)[keep])
        out_i.append(blk[keep])
        out_s.append(scores[start:start + block][keep])
    if not out_u:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.concatenate(out_u), np.concatenate(out_i), np.concatenate(out_s)


def _store(engine: Engine, users: np.ndarray, items: np.ndarray, scores: np.ndarray) -> None:
    engine.register_arrow("_rec_als_arrow", pa.table({"u": users, "i": items, "score": scores}))
    engine.run(_SCORES)
    engine.unregister("_rec_als_arrow")
