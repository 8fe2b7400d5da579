"""Identity resolution with stable customer ids, all in set-based SQL.

Stages run in a fixed order and each one can only merge clusters, never split them:

1. ``always_merge`` pairs from the configuration (a person's manual decision);
2. the deterministic ``rules``, in order: records equal on every key of a rule set
   (ERP id, normalised e-mail, checked tax code, mobile + surname, ...) are linked;
3. probabilistic matching for what is still apart: candidate pairs come from blocking
   keys (SQL equi-joins, blocks capped in size so the cost stays near-linear) and are
   scored Fellegi-Sunter style (see ``tessera/identity/matching.py``).

A stage's links are lifted to the clusters they join and resolved as connected
components by min-label propagation (a star per key group, so edges grow linearly).
**Merge protection** runs before a merge is applied: a link between two clusters
holding different values of a ``unique_per_cluster`` key (two ERP ids) or the two sides
of a ``never_merge`` pair, or that would pass ``max_cluster_size``, is refused; a
component that would still join two protected values through a chain of links is
split: its links are kept strongest first and the weakest ones that would close the
conflict are refused; one that would pass the size limit through a chain is refused
whole for the stage.
Refusals go to ``core.refused_merges`` and to ``core.merge_log`` (event ``refused``);
accepted links, with rule and score, to ``core.identity_links``.

Stable ids: each new cluster inherits the previous ``customer_id`` with which it
shares the most records (ties: the smaller id); an old id goes to at most one cluster.
Clusters without a predecessor get fresh ids from ``ops.sequences``, never reusing a
retired one. Every merge and split is written to ``core.merge_log`` with the rules that
built the cluster. Nothing personal is logged: ids, rule names, counts and scores.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from tessera.settings import IdentitySettings
from tessera.identity.matching import (
    candidate_pairs_sql,
    estimate_m,
    estimate_u,
    levels_table_sql,
    load_variants,
    model_table,
    open_pairs_sql,
    prepare_sql,
    scored_pairs_sql,
    threshold_weight,
)
from tessera.engine import Engine, SqlStep, as_engine
from tessera.stable_ids import assign_stable_ids
from tessera.identity import incremental as inc
from tessera.identity import model_store

# Words naming the kind of street, not the street: skipped by the ``street`` key, which
# takes the first other word of three letters or more ("via roma 12" -> "12 roma").
STREET_TYPES = sorted({"street", "avenue", "road", "drive", "lane", "court", "boulevard", "place", "terrace",
                       "parkway", "square", "circle", "highway", "mount", "north", "south", "east", "west",
                       "apartment", "suite", "via", "piazza", "corso", "viale", "largo", "localita",
                       "frazione", "vicolo", "strada", "the"})

# Match key -> column of staging.contacts holding its normalised value.
KEY_COLUMNS = {
    "erp_id": "erp_id", "email": "email_key", "tax_code": "tax_code_key",
    "mobile": "mobile_key", "phone": "phone_key", "first_name": "first_key",
    "last_name": "last_key", "birth_date": "birth_date", "postcode": "postcode_key",
    "address": "address_key", "city": "city_key",
    "names": "CASE WHEN first_key IS NOT NULL AND last_key IS NOT NULL "
             "THEN least(first_key, last_key) || ' ' || greatest(first_key, last_key) END",
    "street": f"CASE WHEN regexp_matches(address_key, '[0-9]') THEN nullif(regexp_extract(address_key, '[0-9]+') "
              f"|| ' ' || left(split_part(array_to_string(list_filter(string_split(regexp_replace(address_key, '[0-9]+', ' ', 'g'), ' '), "
              f"lambda w: length(w) >= 3 AND NOT list_contains({STREET_TYPES!r}, w)), ' '), ' ', 1), 4), "
              f"regexp_extract(address_key, '[0-9]+') || ' ') END",
}
MAX_PASSES = 50
_TEMP = ("_rec", "_label", "_guard", "_links", "_refused", "_sedges", "_cedges", "_comp",
         "_cnext", "_cnext2", "_cstat", "_bad", "_cand", "_members", "_ids",
         "_manual", "_mrec", "_open", "_accepted", "_gam", "_nick", "_oversized")


def _q(name: str, sql: str, **params) -> SqlStep:
    return SqlStep(f"identity.{name}", sql, params)


def _in_aff(alias: str, suffix: str) -> str:
    """The row's record (columns ``source<suffix>``, ``source_record_id<suffix>``) is in ``_aff``."""
    return (f"EXISTS (SELECT 1 FROM _aff x WHERE x.source = {alias}.source{suffix} "
            f"AND x.source_record_id = {alias}.source_record_id{suffix})")


def rule_name(keys: list[str]) -> str:
    return "+".join(keys)


def _records(engine: Engine, subset: str | None = None) -> None:
    """``_rec``: the records to resolve (all, or those of ``subset``), numbered by key.

    Over a subset the numbers keep the order they have over the whole table, which is all
    the resolver reads of them (smallest id of a cluster, the split's walk order)."""
    cols = ", ".join(f"{c} AS k_{k}" for k, c in KEY_COLUMNS.items())
    where = (f"WHERE EXISTS (SELECT 1 FROM {subset} x WHERE x.source = s.source "
             f"AND x.source_record_id = s.source_record_id)" if subset else "")
    engine.run(_q("records", f"""
        CREATE OR REPLACE TEMP TABLE _rec AS
        SELECT row_number() OVER (ORDER BY source, source_record_id) AS rid,
               source, source_record_id, {cols}
        FROM staging.contacts s {where}"""))


def _components(engine: Engine) -> int:
    """Connected components of ``_cedges(a, b)`` (both directions) into ``_comp(id, comp)``.

    Min-label propagation with pointer jumping: a few set-based passes, no Python loop
    over rows. ``comp`` is the smallest node id of the component.
    """
    engine.run(_q("components.start", """
        CREATE OR REPLACE TEMP TABLE _comp AS
        SELECT DISTINCT a AS id, a AS comp FROM _cedges"""))
    passes = 0
    while passes < MAX_PASSES:
        passes += 1
        engine.run(_q("components.hop", """
            CREATE OR REPLACE TEMP TABLE _cnext AS
            WITH hop AS (
                SELECT e.a AS id, min(l.comp) AS ncomp
                FROM _cedges e JOIN _comp l ON l.id = e.b GROUP BY e.a
            )
            SELECT l.id, least(l.comp, coalesce(h.ncomp, l.comp)) AS comp
            FROM _comp l LEFT JOIN hop h USING (id)"""),
            # Pointer jumping: follow the label's own label, which halves long chains.
            _q("components.jump", """
            CREATE OR REPLACE TEMP TABLE _cnext2 AS
            SELECT n.id, least(n.comp, m.comp) AS comp FROM _cnext n JOIN _cnext m ON m.id = n.comp"""))
        changed = engine.scalar(_q("components.changed", """
            SELECT count(*) FROM _cnext2 n JOIN _comp l USING (id) WHERE n.comp <> l.comp"""))
        engine.run(_q("components.next", "CREATE OR REPLACE TEMP TABLE _comp AS SELECT * FROM _cnext2"))
        if changed == 0:
            break
    else:  # pragma: no cover - would need a chain of 2**50 records
        raise RuntimeError("identity clustering did not converge")
    return passes


_CLUSTER_EDGES = _q("cluster_edges", """
    CREATE OR REPLACE TEMP TABLE _cedges AS
    SELECT DISTINCT ca AS a, cb AS b FROM _sedges
    UNION SELECT DISTINCT cb AS a, ca AS b FROM _sedges""")

_DROP_REFUSED_EDGES = """
    DELETE FROM _sedges e WHERE EXISTS (
        SELECT 1 FROM _refused r WHERE r.a = e.a AND r.b = e.b AND r.rule = $rule)"""


def _apply_stage(engine: Engine, rule: str, edges_sql: str,
                 max_size: int, guarded: bool = True) -> dict:
    """Merge the clusters that ``edges_sql`` (a, b, score) links, under merge protection."""
    engine.run(_q("stage_edges", f"""
        CREATE OR REPLACE TEMP TABLE _sedges AS
        SELECT e.a, e.b, e.score, la.cid AS ca, lb.cid AS cb
        FROM ({edges_sql}) e JOIN _label la ON la.rid = e.a JOIN _label lb ON lb.rid = e.b
        WHERE la.cid <> lb.cid"""))
    n_edges = engine.scalar(_q("stage_edge_count", "SELECT count(*) FROM _sedges"))
    if n_edges == 0:
        return {"links": 0, "refused": 0}
    engine.run(_q("cluster_sizes", """
        CREATE OR REPLACE TEMP TABLE _cstat AS
        SELECT cid, count(*) AS size FROM _label
        WHERE cid IN (SELECT ca FROM _sedges UNION SELECT cb FROM _sedges) GROUP BY cid"""))
    refused = 0
    if guarded:
        # 1. links that join two clusters in direct conflict, or that are too big at once
        refused += engine.append("_refused", _q("refuse_direct", """
            SELECT e.a, e.b, $rule, e.score,
                   CASE WHEN sa.size + sb.size > $max_size THEN 'cluster_too_large'
                        ELSE 'conflicting_' || min(ga.gkey) END
            FROM _sedges e JOIN _cstat sa ON sa.cid = e.ca JOIN _cstat sb ON sb.cid = e.cb
            LEFT JOIN _guard ga ON ga.cid = e.ca
            LEFT JOIN _guard gb ON gb.cid = e.cb AND gb.gkey = ga.gkey
            GROUP BY e.a, e.b, e.score, sa.size, sb.size
            HAVING sa.size + sb.size > $max_size OR count(*) FILTER (WHERE gb.gval <> ga.gval) > 0""",
            rule=rule, max_size=max_size))
        engine.run(_q("drop_refused_edges", _DROP_REFUSED_EDGES, rule=rule))
    engine.run(_CLUSTER_EDGES)
    _components(engine)
    if guarded:
        # 2. components that would still conflict through a chain of links
        engine.run(_q("bad_components", """
            CREATE OR REPLACE TEMP TABLE _bad AS
            WITH sizes AS (
                SELECT c.comp, sum(s.size) AS size FROM _comp c JOIN _cstat s ON s.cid = c.id GROUP BY c.comp
            ), conflicts AS (
                SELECT c.comp, min(g.gkey) AS gkey FROM _comp c JOIN _guard g ON g.cid = c.id
                GROUP BY c.comp, g.gkey HAVING count(DISTINCT g.gval) > 1
            )
            SELECT comp, CASE WHEN size > $max_size THEN 'cluster_too_large' END AS reason
            FROM sizes WHERE size > $max_size
            UNION ALL SELECT comp, 'conflicting_' || gkey FROM conflicts""", max_size=max_size))
        # 2a. too large: refused whole. Its links carry no order worth keeping (a shared
        # office phone, a chain of look-alikes): cutting it to size would merge
        # arbitrary records.
        refused += engine.append("_refused", _q("refuse_too_large", """
            SELECT e.a, e.b, $rule, e.score, 'transitive_cluster_too_large'
            FROM _sedges e JOIN _comp c ON c.id = e.ca
            WHERE c.comp IN (SELECT comp FROM _bad WHERE reason = 'cluster_too_large')""", rule=rule))
        engine.run(
            _q("drop_too_large", """
                DELETE FROM _comp WHERE comp IN (SELECT comp FROM _bad WHERE reason = 'cluster_too_large')"""),
            _q("drop_too_large_edges", "DELETE FROM _sedges WHERE ca NOT IN (SELECT id FROM _comp)"),
            _q("drop_too_large_bad", "DELETE FROM _bad WHERE comp NOT IN (SELECT comp FROM _comp)"))
        # 2b. two protected values (two ERP ids, a never-merge pair): split
        if engine.scalar(_q("bad_count", "SELECT count(*) FROM _bad")):
            refused += _split_bad_components(engine, rule, max_size)
    links = engine.append("_links", _q("links", "SELECT a, b, $rule, score FROM _sedges", rule=rule))
    engine.run(
        _q("relabel", "UPDATE _label SET cid = c.comp FROM _comp c WHERE _label.cid = c.id AND c.comp <> c.id"),
        _q("guards_follow", """
            INSERT INTO _guard SELECT DISTINCT c.comp, g.gkey, g.gval
            FROM _guard g JOIN _comp c ON c.id = g.cid WHERE c.comp <> c.id"""),
        _q("guards_drop_old", "DELETE FROM _guard WHERE cid IN (SELECT id FROM _comp WHERE comp <> id)"))
    return {"links": int(links), "refused": int(refused)}


def _split_bad_components(engine: Engine, rule: str, max_size: int) -> int:
    """Split the conflicting components of ``_bad``: keep their strongest links, drop the weakest.

    The links of each component are taken strongest first (match weight; ties and rule
    links, which have none, by record ids) and a link is refused when it would put two
    values of a protected key (two ERP ids, the two sides of a never-merge pair) into
    one cluster: the component ends up as the clusters its strongest evidence supports,
    and only the links that made the conflict are refused ("split_conflicting_<key>";
    the size limit is checked again, "split_cluster_too_large"). The walk is a union-find
    over those links only, which are few (a conflict is rare); every other link stays
    set-based. ``_comp`` is then recomputed from the links kept.
    """
    edges = engine.rows(_q("split.edges", """
        SELECT e.a, e.b, e.ca, e.cb, e.score FROM _sedges e JOIN _comp c ON c.id = e.ca
        WHERE c.comp IN (SELECT comp FROM _bad)
        ORDER BY e.score DESC NULLS LAST, e.a, e.b"""))
    size = dict(engine.rows(_q("split.sizes", """
        SELECT s.cid, s.size FROM _cstat s JOIN _comp c ON c.id = s.cid
        WHERE c.comp IN (SELECT comp FROM _bad)""")))
    guards: dict = {}
    for cid, gkey, gval in engine.rows(_q("split.guards", """
            SELECT g.cid, g.gkey, g.gval FROM _guard g JOIN _comp c ON c.id = g.cid
            WHERE c.comp IN (SELECT comp FROM _bad)""")):
        guards.setdefault(cid, {})[gkey] = gval
    parent: dict = {}

    def root(x):
        while parent.get(x, x) != x:
            parent[x] = parent.get(parent[x], parent[x])
            x = parent[x]
        return x

    refused = []
    for a, b, ca, cb, score in edges:
        ra, rb = root(ca), root(cb)
        if ra == rb:
            continue
        ga, gb = guards.get(ra, {}), guards.get(rb, {})
        clash = sorted(k for k in ga.keys() & gb.keys() if ga[k] != gb[k])
        if clash:
            refused.append((a, b, rule, score, f"split_conflicting_{clash[0]}"))
        elif size.get(ra, 1) + size.get(rb, 1) > max_size:
            refused.append((a, b, rule, score, "split_cluster_too_large"))
        else:
            parent[rb] = ra
            size[ra] = size.get(ra, 1) + size.get(rb, 1)
            guards[ra] = {**gb, **ga}
    if refused:
        a, b, rules, scores, reasons = zip(*refused)
        engine.register_arrow("_split_refused", pa.table({
            "a": pa.array(a, pa.int64()), "b": pa.array(b, pa.int64()),
            "rule": pa.array(rules, pa.string()), "score": pa.array(scores, pa.float64()),
            "reason": pa.array(reasons, pa.string())}))
        try:
            engine.append("_refused", _q("split.refuse", "SELECT a, b, rule, score, reason FROM _split_refused"))
        finally:
            engine.unregister("_split_refused")
        engine.run(_q("split.drop_refused_edges", _DROP_REFUSED_EDGES, rule=rule))
    engine.run(_CLUSTER_EDGES)
    _components(engine)
    return len(refused)


def _pair_refs(pairs, kind: str) -> list[tuple]:
    return [(kind, i, ref.source, ref.id) for i, pair in enumerate(pairs) for ref in pair]


def _manual_pairs(engine: Engine, settings: IdentitySettings) -> None:
    """``_manual(kind, pair, source, id)``: the configured never- and always-merge pairs."""
    refs = _pair_refs(settings.never_merge, "never") + _pair_refs(settings.always_merge, "always")
    kind, pair, source, rid = zip(*refs) if refs else ((), (), (), ())
    engine.register_arrow("_manual_refs", pa.table({
        "kind": pa.array(kind, pa.string()), "pair": pa.array(pair, pa.int32()),
        "source": pa.array(source, pa.string()), "id": pa.array(rid, pa.string())}))
    try:
        engine.run(_q("manual_pairs", """
            CREATE OR REPLACE TEMP TABLE _manual AS SELECT kind, pair, source, id FROM _manual_refs"""))
    finally:
        engine.unregister("_manual_refs")


def cluster(engine: Engine, settings: IdentitySettings, model: dict | None = None,
            oversized: str | None = None) -> dict:
    """Build ``_label(rid, cid)`` from ``_rec`` through the ordered stages. Returns stats.

    ``model``: a stored probabilistic fit (:mod:`tessera.identity.model_store`) to score
    with; without it the model is fitted on ``_rec`` (``stats["fit"]``). ``oversized``:
    the blocks too large over every record, when ``_rec`` is a subset."""
    engine = as_engine(engine)
    engine.run(
        _q("labels", "CREATE OR REPLACE TEMP TABLE _label AS SELECT rid, rid AS cid FROM _rec"),
        _q("links_table", "CREATE OR REPLACE TEMP TABLE _links (a BIGINT, b BIGINT, rule VARCHAR, score DOUBLE)"),
        _q("refused_table", "CREATE OR REPLACE TEMP TABLE _refused "
           "(a BIGINT, b BIGINT, rule VARCHAR, score DOUBLE, reason VARCHAR)"))
    _manual_pairs(engine, settings)
    # Guards: values a cluster may hold at most one of. A never-merge pair gives its two
    # records two different values of one guard key.
    guard_parts = [f"SELECT rid AS cid, '{k}' AS gkey, CAST(k_{k} AS VARCHAR) AS gval FROM _rec "
                   f"WHERE k_{k} IS NOT NULL" for k in settings.unique_per_cluster]
    guard_parts.append("""
        SELECT r.rid, 'never_merge_' || m.pair, CAST(row_number() OVER (PARTITION BY m.pair ORDER BY r.rid) AS VARCHAR)
        FROM _manual m JOIN _rec r ON r.source = m.source AND r.source_record_id = m.id WHERE m.kind = 'never'""")
    engine.run(_q("guards", "CREATE OR REPLACE TEMP TABLE _guard AS " + " UNION ALL ".join(guard_parts)))
    stats: dict = {}
    max_size = settings.max_cluster_size
    stats["always_merge"] = _apply_stage(engine, "always_merge", """
        SELECT min(r.rid) AS a, max(r.rid) AS b, NULL::DOUBLE AS score
        FROM _manual m JOIN _rec r ON r.source = m.source AND r.source_record_id = m.id
        WHERE m.kind = 'always' GROUP BY m.pair HAVING count(*) = 2""", max_size, guarded=False)
    for keys in settings.rules:
        cols = ", ".join(f"k_{k}" for k in keys)
        present = " AND ".join(f"k_{k} IS NOT NULL" for k in keys)
        name = rule_name(keys)
        stats[name] = _apply_stage(engine, name, f"""
            SELECT a, b, NULL::DOUBLE AS score FROM (
                SELECT rid AS a, min(rid) OVER (PARTITION BY {cols}) AS b FROM _rec WHERE {present}
            ) WHERE a <> b""", max_size)
    prob = settings.probabilistic
    if prob.enabled:
        load_variants(engine)
        engine.run(*prepare_sql(model_store.TF_TABLE if model else None))
        if model:
            u = model["u"]
        else:
            n = engine.scalar(_q("record_count", "SELECT count(*) FROM _rec"))
            u = estimate_u(engine)
        engine.run(_q("candidates", "CREATE OR REPLACE TEMP TABLE _cand AS "
                                    f"{candidate_pairs_sql(prob, oversized)}"))
        stats["candidate_pairs"] = engine.scalar(_q("candidate_count", "SELECT count(*) FROM _cand"))
        engine.run(_q("levels", f"CREATE OR REPLACE TEMP TABLE _gam AS {levels_table_sql()}"),
                   _q("drop_candidates", "DROP TABLE _cand"))
        if model:
            m, min_w = model["m"], model["threshold"]
        else:
            m, em_info = estimate_m(engine, prob, u)
            stats["em"] = em_info
            expected = (em_info["candidate_match_share"] * em_info["candidate_pairs"]
                        if prob.prior == "estimated" and "candidate_match_share" in em_info else None)
            min_w = threshold_weight(prob, n, expected)
            stats["fit"] = {"m": m, "u": u, "threshold": min_w, "records": n}
        engine.run(*open_pairs_sql(), _q("drop_levels", "DROP TABLE _gam"))
        engine.run(_q("accepted", f"""
            CREATE OR REPLACE TEMP TABLE _accepted AS
            SELECT a, b, score FROM ({scored_pairs_sql(m, u)}) WHERE score >= $min_w AND corroborated""",
            min_w=round(min_w, 6)))
        stats["probabilistic"] = _apply_stage(engine, "probabilistic", "SELECT a, b, score FROM _accepted",
                                              max_size)
        stats["threshold_weight"] = round(min_w, 3)
        stats["model"] = model_table(m, u, min_w)
    return stats


_MERGE_LOG_DDL = _q("merge_log_table", """
    CREATE TABLE IF NOT EXISTS core.merge_log (
        logged_at TIMESTAMP, run_key VARCHAR, event VARCHAR, customer_id BIGINT,
        other_customer_id BIGINT, records BIGINT, rule VARCHAR, evidence VARCHAR)""")
_REFUSED_DDL = _q("refused_merges_table", """
    CREATE TABLE IF NOT EXISTS core.refused_merges (
        refused_at TIMESTAMP, run_key VARCHAR, source_a VARCHAR, source_record_id_a VARCHAR,
        customer_id_a BIGINT, source_b VARCHAR, source_record_id_b VARCHAR, customer_id_b BIGINT,
        rule VARCHAR, reason VARCHAR, score DOUBLE)""")


def resolve(engine: Engine, run_at: dt.datetime, run_key: str,
            settings: IdentitySettings | None = None, incremental: bool = False) -> dict:
    """Rebuild ``core.customer_sources`` (+ links, refusals) and append to ``core.merge_log``.

    With ``incremental``, only the records the changed keys reach where that is exact
    (:mod:`tessera.identity.incremental`), else in full with the reason recorded."""
    engine = as_engine(engine)
    settings = settings or IdentitySettings()
    mode, reason, aff = "full", None, {}
    model, refit = None, None
    if settings.probabilistic.enabled:
        refit = model_store.refit_reason(engine, settings, run_at)
        model = None if refit else model_store.load(engine)
    if incremental:
        reason, state = inc.full_reason(engine, settings, run_at)
        if reason is None and refit:
            reason = f"the probabilistic model is refitted ({refit})"
        if reason is None:
            mode = "incremental"
            aff = inc.affected_records(engine, settings, state["keys_upto"], model)
    else:
        inc.drop_state(engine)
    incremental_build = mode == "incremental"
    _records(engine, "_aff" if incremental_build else None)
    stage_stats = cluster(engine, settings, model,
                          "_oversized" if incremental_build and settings.probabilistic.enabled else None)
    if "fit" in stage_stats:
        model_store.save(engine, run_key, run_at, settings, stage_stats["fit"])
    names = ["always_merge"] + [rule_name(k) for k in settings.rules] + ["probabilistic"]
    stage_order = "CASE rule " + " ".join(f"WHEN '{n}' THEN {i}" for i, n in enumerate(names)) + " END"
    engine.run(_MERGE_LOG_DDL, _REFUSED_DDL)
    prev = ("SELECT source, source_record_id, customer_id FROM core.customer_sources"
            if engine.table_exists("core", "customer_sources") else
            "SELECT NULL::VARCHAR source, NULL::VARCHAR source_record_id, NULL::BIGINT customer_id WHERE false")
    engine.run(_q("members", f"""
        CREATE OR REPLACE TEMP TABLE _members AS
        SELECT r.rid, r.source, r.source_record_id, l.cid, p.customer_id AS old_id
        FROM _rec r JOIN _label l USING (rid)
        LEFT JOIN ({prev}) p USING (source, source_record_id)"""))
    at = {"run_at": run_at, "run_key": run_key}
    with engine.together():
        new_ids = assign_stable_ids(engine, "_members", "_ids", "customer_id")
        engine.run(
            # Which rule tied each record to its cluster: the first stage that linked it.
            _q("first_rule", f"""
                CREATE OR REPLACE TEMP TABLE _first_rule AS
                SELECT rid, arg_min(rule, stage) AS rule FROM (
                    SELECT a AS rid, rule, {stage_order} AS stage FROM _links
                    UNION ALL SELECT b AS rid, rule, {stage_order} AS stage FROM _links) GROUP BY rid"""),
            # The rules that built each cluster, for the merge log's evidence.
            _q("cluster_rules", """
                CREATE OR REPLACE TEMP TABLE _cluster_rules AS
                SELECT l.cid, array_to_string(list_sort(list(DISTINCT k.rule)), '|') AS rules,
                       max(k.score) AS max_score, min(k.score) AS min_score
                FROM _links k JOIN _label l ON l.rid = k.a GROUP BY l.cid"""))
        sources_sql = """
            SELECT m.source, m.source_record_id, i.customer_id, s.node,
                   coalesce(f.rule, 'singleton') AS matched_by,
                   CAST($run_at AS TIMESTAMP) AS resolved_at
            FROM _members m JOIN _ids i USING (cid)
            JOIN staging.contacts s USING (source, source_record_id)
            LEFT JOIN _first_rule f ON f.rid = m.rid
            ORDER BY i.customer_id, m.source, m.source_record_id"""
        if incremental_build:
            # the affected records' rows (and those of keys that left staging) are replaced;
            # links and refusals never leave a component, so theirs are too
            engine.run(_q("incremental.gone", f"""
                CREATE OR REPLACE TEMP TABLE _gone AS
                SELECT DISTINCT customer_id FROM core.customer_sources c WHERE {_in_aff('c', '')}"""))
            engine.run(_q("incremental.delete_sources",
                          f"DELETE FROM core.customer_sources c WHERE {_in_aff('c', '')}"),
                       _q("incremental.delete_links", f"DELETE FROM core.identity_links c WHERE {_in_aff('c', '_a')}"),
                       _q("incremental.delete_refused",
                          f"DELETE FROM core.refused_merges c WHERE {_in_aff('c', '_a')} OR {_in_aff('c', '_b')}"))
            engine.append("core.customer_sources", _q("customer_sources.incremental", sources_sql, run_at=run_at))
        else:
            engine.replace_table("core.customer_sources", _q("customer_sources", sources_sql, run_at=run_at))
        merges = engine.append("core.merge_log", _q("merge_log.merged", """
            SELECT $run_at, $run_key, 'merged', i.customer_id, m.old_id, count(*),
                   coalesce(any_value(cr.rules), 'none'),
                   'records of customer ' || m.old_id || ' now linked to customer ' || i.customer_id
                   || ' by ' || coalesce(any_value(cr.rules), 'none')
                   || coalesce('; match weight ' || round(any_value(cr.min_score), 2) || '..'
                               || round(any_value(cr.max_score), 2), '')
            FROM _members m JOIN _ids i USING (cid) LEFT JOIN _cluster_rules cr USING (cid)
            WHERE m.old_id IS NOT NULL AND m.old_id <> i.customer_id
              AND m.old_id NOT IN (SELECT customer_id FROM _ids)
            GROUP BY i.customer_id, m.old_id""", **at))
        splits = engine.append("core.merge_log", _q("merge_log.split", """
            SELECT $run_at, $run_key, 'split', m.old_id, i.customer_id, count(*),
                   coalesce(any_value(cr.rules), 'none'),
                   'records of customer ' || m.old_id || ' are no longer linked to it; their cluster rules: '
                   || coalesce(any_value(cr.rules), 'none')
            FROM _members m JOIN _ids i USING (cid) LEFT JOIN _cluster_rules cr USING (cid)
            WHERE m.old_id IS NOT NULL AND m.old_id <> i.customer_id
              AND m.old_id IN (SELECT customer_id FROM _ids)
            GROUP BY m.old_id, i.customer_id""", **at))
        refused_sql = """
            SELECT $run_at, $run_key, ra.source, ra.source_record_id, ia.customer_id, rb.source,
                   rb.source_record_id, ib.customer_id, r.rule, r.reason, r.score
            FROM _refused r
            JOIN _rec ra ON ra.rid = r.a JOIN _label la ON la.rid = r.a JOIN _ids ia ON ia.cid = la.cid
            JOIN _rec rb ON rb.rid = r.b JOIN _label lb ON lb.rid = r.b JOIN _ids ib ON ib.cid = lb.cid"""
        if incremental_build:
            # the table holds the latest run's refusals: the untouched ones are this run's too
            engine.append("core.refused_merges", _q("refused_merges.incremental", refused_sql, **at))
            engine.run(_q("incremental.refused_run", "UPDATE core.refused_merges SET refused_at = $run_at, "
                          "run_key = $run_key", **at))
            refused = engine.append("core.merge_log", _q("merge_log.refused.incremental", """
                SELECT $run_at, $run_key, 'refused', customer_id_a, customer_id_b, count(*), rule,
                       'merge refused: ' || reason || coalesce('; match weight ' || round(max(score), 2), '')
                FROM core.refused_merges GROUP BY customer_id_a, customer_id_b, rule, reason""", **at))
        else:
            refused = engine.append("core.merge_log", _q("merge_log.refused", """
                SELECT $run_at, $run_key, 'refused', ia.customer_id, ib.customer_id, count(*), r.rule,
                       'merge refused: ' || r.reason || coalesce('; match weight ' || round(max(r.score), 2), '')
                FROM _refused r
                JOIN _label la ON la.rid = r.a JOIN _ids ia ON ia.cid = la.cid
                JOIN _label lb ON lb.rid = r.b JOIN _ids ib ON ib.cid = lb.cid
                GROUP BY ia.customer_id, ib.customer_id, r.rule, r.reason""", **at))
            # The table holds the latest run's refusals; the merge log keeps the history.
            engine.overwrite("core.refused_merges", _q("refused_merges", refused_sql, **at))
        if "model" in stage_stats:
            # the weights this run used, for `tessera identity explain` and the analyst
            engine.register_arrow("_model", pa.table(stage_stats["model"]))
            try:
                engine.replace_table("core.identity_model", _q("identity_model", """
                    SELECT comparison, level, CAST(code AS INTEGER) AS code, m, u, weight_bits,
                           CAST($run_at AS TIMESTAMP) AS trained_at FROM _model""",
                    run_at=model["fitted_at"] if model else run_at))
            finally:
                engine.unregister("_model")
        links_sql = """
            SELECT ra.source AS source_a, ra.source_record_id AS source_record_id_a,
                   rb.source AS source_b, rb.source_record_id AS source_record_id_b,
                   i.customer_id, k.rule, k.score, CAST($run_at AS TIMESTAMP) AS linked_at
            FROM _links k JOIN _rec ra ON ra.rid = k.a JOIN _rec rb ON rb.rid = k.b
            JOIN _label l ON l.rid = k.a JOIN _ids i ON i.cid = l.cid"""
        if incremental_build:
            engine.append("core.identity_links", _q("identity_links.incremental", links_sql, run_at=run_at))
        else:
            engine.replace_table("core.identity_links", _q("identity_links", links_sql, run_at=run_at))
        touched = None
        if incremental_build:
            engine.run(_q("incremental.touched_clear", "DELETE FROM ops.touched_customers"),
                       _q("incremental.touched", """
                INSERT INTO ops.touched_customers
                SELECT DISTINCT $run_key, customer_id FROM (
                    SELECT customer_id FROM _ids UNION ALL SELECT old_id FROM _members WHERE old_id IS NOT NULL
                    UNION ALL SELECT customer_id FROM _gone)""", run_key=run_key))
            touched = engine.scalar(_q("incremental.touched_count", "SELECT count(*) FROM ops.touched_customers"))
        if incremental:
            inc.record_state(engine, run_key, run_at, settings, mode, reason,
                             aff.get("affected_records") if mode == "incremental" else None, touched)
    stats = engine.rows(_q("summary", """
        SELECT count(*) AS records, count(DISTINCT customer_id) AS customers,
               count(*) FILTER (WHERE matched_by <> 'singleton') AS linked_records
        FROM core.customer_sources"""))[0]
    n_refused = engine.scalar(_q("refused_count", "SELECT count(*) FROM core.refused_merges"))
    engine.run(*(_q("drop_temp", f"DROP TABLE IF EXISTS {t}")
                 for t in _TEMP + ("_first_rule", "_cluster_rules", "_aff", "_gone")))
    return {
        "records": int(stats[0]), "customers": int(stats[1]), "linked_records": int(stats[2]),
        "new_ids": int(new_ids), "merges": int(merges), "splits": int(splits),
        "refused_links": int(n_refused), "refused_log_rows": int(refused),
        "links_by_stage": {k: v for k, v in stage_stats.items()
                           if isinstance(v, dict) and k not in ("em", "model", "fit")},
        # EM training per blocking rule: pairs, iterations, estimated match share (counts only)
        "em_sessions": {x["blocking"]: {k: v for k, v in x.items() if k != "blocking"}
                        for x in stage_stats.get("em", {}).get("sessions", [])},
        "candidate_pairs": int(stage_stats.get("candidate_pairs", 0)),
        "identity_mode": mode, "identity_full_reason": reason or "",
        **({"model_refit": refit or ""} if settings.probabilistic.enabled else {}),
        **({"changed_records": aff["changed_records"], "affected_records": aff["affected_records"],
            "touched_customers": int(touched or 0)} if incremental_build else {}),
    }
