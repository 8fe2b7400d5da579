"""Why two records are (or are not) one customer: the comparison levels and their weights.

An analyst asks about two source records; the answer is computed the way the last run
scored pairs: the same match values and term frequencies (``_mrec`` over today's
staging), the same level rules, and the weights the run trained (``core.identity_model``).
It also says what actually happened: the customer each record belongs to, and the link
(rule and weight) or refusal recorded between them. Writes nothing but temporary tables.
"""

from __future__ import annotations

from tessera.engine import Engine, SqlStep, as_engine
from tessera.identity import model_store
from tessera.identity.matching import (
    COMPARISONS,
    codes,
    levels_table_sql,
    load_variants,
    prepare_sql,
    scored_pairs_sql,
)
from tessera.identity.resolve import _records

LABELS = {"fn": "first name", "ln": "last name", "dob": "birth date", "em": "e-mail", "ph": "phone",
          "tax": "tax code", "addr": "street", "loc": "postcode / city"}
VALUES = {"fn": "fn", "ln": "ln", "dob": "dob_s", "em": "em", "ph": "ph", "tax": "tax", "addr": "addr",
          "loc": "pc"}


class ExplainError(ValueError):
    """A record that is not in staging, or no trained model yet (no personal data in it)."""


def _model(engine: Engine) -> tuple[dict, dict, float]:
    if not engine.table_exists("core", "identity_model"):
        raise ExplainError("no trained identity model yet: run the daily job first")
    m, u, threshold = {}, {}, None
    for comp, _level, code, mm, uu, w in engine.rows(SqlStep(
            "identity.explain.model", "SELECT comparison, level, code, m, u, weight_bits FROM core.identity_model")):
        if comp == "threshold":
            threshold = w
        else:
            m[(comp, code)] = mm
            if uu is not None:
                u[(comp, code)] = uu
    return m, u, threshold


def explain_pair(engine: Engine, a: tuple[str, str], b: tuple[str, str]) -> dict:
    """Levels, values and weights of one pair of source records, and what the last run did."""
    engine = as_engine(engine)
    m, u, threshold = _model(engine)
    _records(engine)
    rids = {}
    for ref in (a, b):
        rid = engine.scalar(SqlStep("identity.explain.rid",
                                    "SELECT rid FROM _rec WHERE source = $source AND source_record_id = $id",
                                    {"source": ref[0], "id": ref[1]}))
        if rid is None:
            raise ExplainError(f"record {ref[0]}:{ref[1]} is not in staging.contacts")
        rids[ref] = rid
    ra, rb = sorted(rids.values())
    load_variants(engine)
    stored_tf = model_store.TF_TABLE if engine.table_exists("ops", "identity_model_tf") else None
    engine.run(*prepare_sql(stored_tf),
               SqlStep("identity.explain.pair", "CREATE OR REPLACE TEMP TABLE _cand AS "
                       "SELECT CAST($a AS BIGINT) AS a, CAST($b AS BIGINT) AS b, CAST(0 AS BIGINT) AS mask",
                       {"a": ra, "b": rb}),
               SqlStep("identity.explain.levels", f"CREATE OR REPLACE TEMP TABLE _open AS {levels_table_sql()}"))
    cols = engine.columns(SqlStep("identity.explain.score", scored_pairs_sql(m, u, detail=True)))
    row = {k: v[0] for k, v in cols.items()}
    values = engine.columns(SqlStep("identity.explain.values", "SELECT rid, " + ", ".join(
        f"CAST({v} AS VARCHAR) AS {c}" for c, v in VALUES.items()) + " FROM _mrec WHERE rid IN ($a, $b) ORDER BY rid",
        {"a": ra, "b": rb}))
    comparisons = []
    for c in COMPARISONS:
        names = {k: n for n, k in codes(c).items()} | {0: "not compared", 8: "initial agrees"}
        comparisons.append({"comparison": LABELS[c], "level": names.get(row[f"g_{c}"], str(row[f"g_{c}"])),
                            "left": values[c][0], "right": values[c][1],
                            "weight": None if row[f"w_{c}"] is None else round(row[f"w_{c}"], 2)})
    link = engine.rows(SqlStep("identity.explain.link", """
        SELECT rule, score FROM core.identity_links
        WHERE (source_a, source_record_id_a, source_b, source_record_id_b) IN
              (($sa, $ia, $sb, $ib), ($sb, $ib, $sa, $ia))""",
        {"sa": a[0], "ia": a[1], "sb": b[0], "ib": b[1]})) if engine.table_exists("core", "identity_links") else []
    owners = dict(engine.rows(SqlStep("identity.explain.owners", """
        SELECT source || ':' || source_record_id, customer_id FROM core.customer_sources
        WHERE (source, source_record_id) IN (($sa, $ia), ($sb, $ib))""",
        {"sa": a[0], "ia": a[1], "sb": b[0], "ib": b[1]}))) if engine.table_exists("core", "customer_sources") else {}
    for t in ("_rec", "_mrec", "_nick", "_cand", "_open"):
        engine.run(SqlStep("identity.explain.drop", f"DROP TABLE IF EXISTS {t}"))
    score = row["score"]
    return {
        "comparisons": comparisons, "swapped_names": bool(row["swapped"]),
        "place_weight": None if row["place"] is None else round(row["place"], 2),
        "score": None if score is None else round(score, 2), "threshold": round(threshold, 2),
        "corroborated": bool(row["corroborated"]),
        "would_match": bool(score is not None and score >= threshold and row["corroborated"]),
        "customers": {f"{s}:{i}": owners.get(f"{s}:{i}") for s, i in (a, b)},
        "direct_link": [{"rule": r, "weight": None if w is None else round(w, 2)} for r, w in link],
    }
