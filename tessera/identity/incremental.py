"""Incremental identity: re-resolve only the records a day's changes can reach.

Why this is exact. With the deterministic stages only (always-merge pairs, the ordered
rules, merge protection, the size limit), every decision the resolver takes about a
record is a decision about the connected component of the *qualified* edges holding it
(the rule-group stars and always-merge pairs, before protection refuses any): clusters
are unions of records inside one such component, refusals and splits look only at the
clusters a component joins, and the order the split walks links in (record ids) keeps
its relative order when the records are numbered over a subset. So resolving a set
``R`` that is a union of whole components gives, on ``R``, what a full run gives.

``R`` is found from the changed keys of ``staging.contacts`` (``ops.changed_keys``,
recorded since identity's last build) by closure: the changed records, every record of
the previous customers holding one of them, the records on the other side of a refused
link to them (the old components they sat in: an old link is either inside a customer
or refused), then repeatedly every record sharing a rule's key set with a record of
``R`` and the previous customers of the records added, until nothing is added. Every
record outside ``R`` sits in a component no change reached, which is the component it
sat in before, so its customer, links and refusals are the previous run's. ``R`` is also
a union of previous customers, so the stable-id carry-over (an old id goes to the
cluster holding most of its records) and the fresh ids (numbered by cluster) decide on
``R`` what they decide on the whole table.

Probabilistic matching is local once its model is fixed: refitted every run, a pair's
weight would read the term frequency of its values over every record, ``m`` by EM over
every candidate pair and the threshold by the record count, so one new record would
move every score. The fit is stored (:mod:`tessera.identity.model_store`) and reused
until a refit is due; between refits a pair's weight reads its two records only, and
its candidate pairs are the blocks (by the candidate pairs' key hash) it shares, so the
closure also takes every record a *changed* record now has a qualified pair with (its
candidate pairs over the blocks it shares, scored with the stored fit): one hop, not a
closure. A pair of two unchanged records scores what it scored (same values, same
stored fit), so if it qualified its records already sat in one previous component (a
customer, or two joined by a refusal), which the closure takes whole; if it did not, it
still does not. A changed record's pair that does not qualify now joins nothing, and if
it qualified before the change, the two sat in one previous component too. (Mechanism 3
took every record of the shared blocks: 204 906 records for 9 371 changed ones at the
reference scale.) Blocks too large over every record give no pairs: they are left out
of the closure and out of the candidate pairs over ``R`` (``_oversized``), where a part
of one would otherwise pass the size limit. A block that crossed the limit since the last
build (``ops.identity_oversized`` holds the previous build's) adds or drops pairs of
unchanged records, so all its records join ``R``. Before this (mechanism 2) the blocking
blocks were followed from every record of ``R`` to convergence: at the reference scale
9 330 changed records reached 925 148 of 938 910 through chains of shared postcodes,
streets and birth dates, and an incremental day cost twice a full one. A day a refit is due identity is full (every score may
move), as it is after an erasure, a staging build that recorded no keys (a first build),
a change of identity settings, and when the previous build was not incremental-aware.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json

from tessera.engine import Engine, SqlStep
from tessera.settings import IdentitySettings

# Bump when the mechanism changes: every stored state becomes stale (a full day).
MECHANISM = "4"
MAX_PASSES = 100

STATE_DDL = """
CREATE TABLE IF NOT EXISTS ops.identity_state (
    run_key          VARCHAR   NOT NULL,
    built_at         TIMESTAMP NOT NULL,
    settings_digest  VARCHAR   NOT NULL,
    keys_upto        TIMESTAMP,            -- the newest changed key (recorded_at) read
    mode             VARCHAR   NOT NULL,   -- incremental | full
    reason           VARCHAR,              -- why the build was full
    records          BIGINT,               -- records re-resolved
    customers        BIGINT                -- customers touched (old and new ids)
)"""

# The customers an incremental identity build touched (their old and new ids), for the
# golden records of this run; the latest run's only.
TOUCHED_DDL = """
CREATE TABLE IF NOT EXISTS ops.touched_customers (run_key VARCHAR NOT NULL, customer_id BIGINT NOT NULL)"""


def _q(name: str, sql: str, **params) -> SqlStep:
    return SqlStep(f"identity.incremental.{name}", sql, params)


def settings_digest(settings: IdentitySettings) -> str:
    text = json.dumps([MECHANISM, settings.model_dump(mode="json")], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def drop_state(engine: Engine) -> None:
    """Forget the recorded state: the next incremental build is full."""
    engine.run(_q("drop_state", "DROP TABLE IF EXISTS ops.identity_state"),
               _q("drop_touched", "DROP TABLE IF EXISTS ops.touched_customers"),
               _q("drop_oversized", "DROP TABLE IF EXISTS ops.identity_oversized"))


# the changed keys are kept 30 days: a build older than that cannot know what changed since
RETENTION_DAYS = 29


def erased_or_stale(engine: Engine, built_at, run_at: dt.datetime) -> str | None:
    """Why a build after ``built_at`` must be full whatever changed (None: it need not): an
    erasure since (its rows must go everywhere), or changed keys no longer kept."""
    if engine.table_exists("ops", "erasures") and engine.scalar(_q(
            "erasures", "SELECT count(*) FROM ops.erasures WHERE erased_at >= $b", b=built_at)):
        return "an erasure since the last build"
    if built_at < run_at - dt.timedelta(days=RETENTION_DAYS):
        return "the last build is older than the changed keys' retention"
    return None


def staging_reason(engine: Engine, staging_table: str, built_at) -> str | None:
    """Why a build over ``staging_table``'s changed keys cannot be incremental (None: it can):
    the table has no recorded state, or it was first built after ``built_at`` (a first build
    records no changed keys, so nothing says what it brought)."""
    staged = engine.rows(_q("staging_state", """
        SELECT max(built_at), bool_or(mode = 'full' AND reason IN ('no staging table yet', 'no recorded state'))
        FROM ops.staging_state WHERE staging_table = $t""", t=staging_table))[0]
    if staged[0] is None:
        return f"{staging_table} has no recorded state"
    if staged[1] and staged[0] >= built_at:
        return f"{staging_table} was first built since (no changed keys)"
    return None


def full_reason(engine: Engine, settings: IdentitySettings, run_at: dt.datetime) -> tuple[str | None, dict]:
    """Why this identity build must be full (None: it may be incremental), and the state."""
    engine.run(_q("state_ddl", STATE_DDL), _q("touched_ddl", TOUCHED_DDL))
    for schema, table in (("core", "customer_sources"), ("core", "merge_log"), ("core", "refused_merges"),
                          ("core", "identity_links"), ("ops", "changed_keys"), ("ops", "staging_state")):
        if not engine.table_exists(schema, table):
            return f"no {schema}.{table} yet", {}
    rows = engine.rows(_q("state", """
        SELECT built_at, settings_digest, keys_upto FROM ops.identity_state ORDER BY built_at DESC LIMIT 1"""))
    if not rows:
        return "no recorded state", {}
    built_at, digest, keys_upto = rows[0]
    state = {"built_at": built_at, "keys_upto": keys_upto}
    if digest != settings_digest(settings):
        return "the identity settings changed", state
    if settings.probabilistic.enabled and not engine.table_exists("ops", "identity_oversized"):
        return "no recorded oversized blocks", state
    reason = staging_reason(engine, "staging.contacts", built_at)
    if reason:
        return reason, state
    return erased_or_stale(engine, built_at, run_at), state


def affected_records(engine: Engine, settings: IdentitySettings, keys_upto, model: dict | None = None) -> dict:
    """``_aff(source, source_record_id)``: the records to re-resolve (the closure above).
    ``model``: the stored probabilistic fit the build scores with.

    It holds the changed keys that left staging too (their rows must go). Returns counts.
    """
    since = "TRUE" if keys_upto is None else "recorded_at > $upto"
    up = {} if keys_upto is None else {"upto": keys_upto}
    engine.run(_q("changed", f"""
        CREATE OR REPLACE TEMP TABLE _aff AS
        SELECT DISTINCT source, source_record_id FROM ops.changed_keys
        WHERE entity = 'contact' AND {since}""", **up))
    changed = int(engine.scalar(_q("changed_count", "SELECT count(*) FROM _aff")))
    prob = settings.probabilistic
    if changed == 0:
        if prob.enabled:
            # nothing changed: the blocks are the last build's (kept as they are)
            engine.run(_q("same_oversized", "CREATE OR REPLACE TEMP TABLE _oversized AS "
                                             "SELECT rule, h FROM ops.identity_oversized"))
        return {"changed_records": 0, "affected_records": 0, "closure_passes": 0}
    # the old components of the changed records: refused links out of them
    engine.run(_q("refused_neighbours", """
        INSERT INTO _aff
        SELECT r.source_b, r.source_record_id_b FROM core.refused_merges r
        JOIN _aff a ON a.source = r.source_a AND a.source_record_id = r.source_record_id_a
        UNION SELECT r.source_a, r.source_record_id_a FROM core.refused_merges r
        JOIN _aff a ON a.source = r.source_b AND a.source_record_id = r.source_record_id_b"""))
    # the rule keys of every staged record (a projection; the closure joins on it)
    from tessera.identity.resolve import rule_name  # noqa: PLC0415 - resolve imports this module
    blocking = prob.blocking if prob.enabled else []
    engine.run(_keys_step([*settings.rules, *blocking]))
    if blocking:
        engine.run(*_block_steps(settings))
        # the changed records (one hop through the blocks, below) and the records of every
        # block that crossed the size limit since the last build (its pairs came or went)
        engine.run(
            _q("changed_only", "CREATE OR REPLACE TEMP TABLE _chg AS SELECT * FROM _aff"),
            _q("crossed", """
                INSERT INTO _aff
                SELECT b.source, b.source_record_id FROM _ablk_all b
                JOIN ((SELECT rule, h FROM _oversized EXCEPT SELECT rule, h FROM ops.identity_oversized)
                      UNION ALL
                      (SELECT rule, h FROM ops.identity_oversized EXCEPT SELECT rule, h FROM _oversized)) x
                USING (rule, h)"""),
            _q("blocking_groups", """
                CREATE OR REPLACE TEMP TABLE _hop AS
                SELECT DISTINCT b.source, b.source_record_id FROM _ablk b
                JOIN (SELECT DISTINCT rule, h FROM _ablk JOIN _chg USING (source, source_record_id)) g
                USING (rule, h)"""),
            _q("drop_blocks_all", "DROP TABLE IF EXISTS _ablk_all"))
        if model is not None:
            _qualified_partners(engine, settings, model)
        else:  # pragma: no cover - an incremental build always has its stored fit
            engine.run(_q("block_partners", "INSERT INTO _aff SELECT source, source_record_id FROM _hop"))
        engine.run(_q("drop_changed_only", "DROP TABLE IF EXISTS _chg"), _q("drop_hop", "DROP TABLE IF EXISTS _hop"))
    manual = [(a.source, a.id, b.source, b.id) for a, b in settings.always_merge]
    pair_sql = " UNION ALL ".join(
        f"SELECT '{sa}' AS sa, '{ia}' AS ia, '{sb}' AS sb, '{ib}' AS ib"
        for sa, ia, sb, ib in ((x.replace("'", "''") for x in p) for p in manual))
    # the previous components of every record of R: its customer, and the customers a
    # refusal (a qualified link refused: a conflict, the size limit) joined to it
    steps = [_q("old_customers", """
        INSERT INTO _aff SELECT cs.source, cs.source_record_id FROM core.customer_sources cs
        WHERE cs.customer_id IN (SELECT o.customer_id FROM core.customer_sources o
                                 JOIN _aff a USING (source, source_record_id))"""),
             _q("refused_closure", """
        INSERT INTO _aff
        SELECT r.source_b, r.source_record_id_b FROM core.refused_merges r
        JOIN _aff a ON a.source = r.source_a AND a.source_record_id = r.source_record_id_a
        UNION SELECT r.source_a, r.source_record_id_a FROM core.refused_merges r
        JOIN _aff a ON a.source = r.source_b AND a.source_record_id = r.source_record_id_b""")]
    for keys in settings.rules:
        on = " AND ".join(f"k.k_{k} = g.k_{k}" for k in keys)
        present = " AND ".join(f"k_{k} IS NOT NULL" for k in keys)
        steps.append(_q(f"rule_groups[{rule_name(keys)}]", f"""
            INSERT INTO _aff SELECT k.source, k.source_record_id FROM _akeys k
            JOIN (SELECT DISTINCT {", ".join(f"k_{k}" for k in keys)} FROM _akeys
                  JOIN _aff a USING (source, source_record_id) WHERE {present}) g ON {on}"""))
    if pair_sql:
        steps.append(_q("always_merge", f"""
            INSERT INTO _aff
            SELECT p.sb, p.ib FROM ({pair_sql}) p
            JOIN _aff a ON a.source = p.sa AND a.source_record_id = p.ia
            UNION ALL SELECT p.sa, p.ia FROM ({pair_sql}) p
            JOIN _aff a ON a.source = p.sb AND a.source_record_id = p.ib"""))
    steps.append(_q("dedupe", "CREATE OR REPLACE TEMP TABLE _aff AS "
                              "SELECT DISTINCT source, source_record_id FROM _aff"))
    size, passes = -1, 0
    while passes < MAX_PASSES:
        passes += 1
        engine.run(*steps)
        now = int(engine.scalar(_q("affected_count", "SELECT count(*) FROM _aff")))
        if now == size:
            break
        size = now
    else:  # pragma: no cover - a chain of 100 rule groups
        raise RuntimeError("incremental identity: the affected records did not converge")
    engine.run(_q("drop_keys", "DROP TABLE IF EXISTS _akeys"), _q("drop_blocks", "DROP TABLE IF EXISTS _ablk"))
    return {"changed_records": changed, "affected_records": size, "closure_passes": passes}


def _qualified_partners(engine: Engine, settings: IdentitySettings, model: dict) -> None:
    """Add to ``_aff`` the records a *changed* record (``_chg``) now has a qualified
    probabilistic pair with: its candidate pairs over the blocks it shares (``_hop``, the
    blocks' records), scored with the stored fit, kept at its threshold and corroborated.

    Why not every record of those blocks: a pair that does not qualify now joins nothing,
    and if it qualified before the change its records sat in one previous component,
    which the closure takes whole. At the reference scale the blocks of 9 371 changed
    records held 204 906 records, which were all re-resolved (and their customers' golden
    records, cards and events rebuilt); their qualified partners are a few per record."""
    from tessera.identity import model_store  # noqa: PLC0415 - resolve imports this module
    from tessera.identity.matching import (candidate_pairs_sql, levels_table_sql, load_variants,  # noqa: PLC0415
                                           prepare_sql, scored_pairs_sql)
    from tessera.identity.resolve import _records  # noqa: PLC0415

    _records(engine, "_hop")
    load_variants(engine)
    engine.run(*prepare_sql(model_store.TF_TABLE))
    engine.run(
        _q("changed_rids", "CREATE OR REPLACE TEMP TABLE _chg_rid AS "
                           "SELECT r.rid FROM _rec r JOIN _chg USING (source, source_record_id)"),
        # the pairs of a changed record only (the others scored what they scored)
        _q("partner_candidates", f"""
            CREATE OR REPLACE TEMP TABLE _cand AS
            SELECT * FROM ({candidate_pairs_sql(settings.probabilistic, "_oversized")})
            WHERE a IN (SELECT rid FROM _chg_rid) OR b IN (SELECT rid FROM _chg_rid)"""),
        # every pair is "open" here: a pair inside one cluster adds nothing the closure lacks
        _q("partner_levels", f"CREATE OR REPLACE TEMP TABLE _open AS {levels_table_sql()}"),
        _q("qualified_partners", f"""
            INSERT INTO _aff
            WITH q AS (SELECT a, b FROM ({scored_pairs_sql(model["m"], model["u"])})
                       WHERE score >= $min_w AND corroborated)
            SELECT r.source, r.source_record_id FROM q JOIN _rec r ON r.rid = q.a
            UNION SELECT r.source, r.source_record_id FROM q JOIN _rec r ON r.rid = q.b""",
           min_w=round(model["threshold"], 6)),
        *(_q(f"drop_partner_{t}", f"DROP TABLE IF EXISTS {t}")
          for t in ("_chg_rid", "_cand", "_open", "_mrec", "_rec")))


def _keys_step(key_sets) -> SqlStep:
    """``_akeys``: every staged record's keys of these key sets (a projection the closure
    and the blocks join on)."""
    from tessera.identity.resolve import KEY_COLUMNS  # noqa: PLC0415 - resolve imports this module

    used = sorted({k for keys in key_sets for k in keys})
    cols = ", ".join(f"{KEY_COLUMNS[k]} AS k_{k}" for k in used)
    return _q("keys", f"CREATE OR REPLACE TEMP TABLE _akeys AS SELECT source, source_record_id, {cols} "
                      "FROM staging.contacts")


def _block_steps(settings: IdentitySettings) -> list[SqlStep]:
    """From ``_akeys``: ``_ablk_all`` (every record's blocks), ``_oversized`` (blocks too
    large over every record) and ``_ablk`` (the others' records).

    Blocks by the hash the candidate pairs group by (a collision joins two blocks there,
    so here too); a block too large over every record gives no pair: it neither reaches
    further nor counts over a subset."""
    blocking = settings.probabilistic.blocking
    return [
        _q("blocks", "CREATE OR REPLACE TEMP TABLE _ablk_all AS " + " UNION ALL ".join(
            f"SELECT source, source_record_id, {i} AS rule, hash({', '.join(f'k_{k}' for k in keys)}) AS h "
            f"FROM _akeys WHERE {' AND '.join(f'k_{k} IS NOT NULL' for k in keys)}"
            for i, keys in enumerate(blocking))),
        _q("oversized", f"""
            CREATE OR REPLACE TEMP TABLE _oversized AS
            SELECT rule, h FROM _ablk_all GROUP BY rule, h
            HAVING count(*) > {int(settings.probabilistic.max_block_size)}"""),
        _q("blocks_small", """
            CREATE OR REPLACE TEMP TABLE _ablk AS
            SELECT b.* FROM _ablk_all b
            WHERE NOT EXISTS (SELECT 1 FROM _oversized o WHERE o.rule = b.rule AND o.h = b.h)"""),
    ]


def record_oversized(engine: Engine, settings: IdentitySettings, computed: bool) -> None:
    """Keep this build's oversized blocks, ``ops.identity_oversized (rule, h)``, for the
    next incremental build: a block that crossed the limit since changes pairs of unchanged
    records (probabilistic matching only). ``computed``: the
    ``_oversized`` of :func:`affected_records` is there; else it is computed here)."""
    if not settings.probabilistic.enabled:
        engine.run(_q("drop_oversized", "DROP TABLE IF EXISTS ops.identity_oversized"))
        return
    if not computed:
        engine.run(_keys_step(settings.probabilistic.blocking), *_block_steps(settings))
    engine.run(_q("oversized_keep", "CREATE OR REPLACE TABLE ops.identity_oversized AS "
                                    "SELECT rule, h FROM _oversized"))
    if not computed:
        engine.run(*(_q("drop_block_temps", f"DROP TABLE IF EXISTS {t}")
                     for t in ("_akeys", "_ablk_all", "_ablk", "_oversized")))


def record_state(engine: Engine, run_key: str, run_at: dt.datetime, settings: IdentitySettings,
                 mode: str, reason: str | None, records: int | None, customers: int | None) -> None:
    """The build's state (history kept, 60 days) and, on a full build, no touched customers."""
    engine.run(_q("state_ddl", STATE_DDL), _q("touched_ddl", TOUCHED_DDL))
    record_oversized(engine, settings, computed=mode == "incremental")
    upto = "(SELECT max(recorded_at) FROM ops.changed_keys WHERE entity = 'contact')" \
        if engine.table_exists("ops", "changed_keys") else "NULL::TIMESTAMP"
    engine.run(
        _q("state_prune", "DELETE FROM ops.identity_state WHERE run_key = $k "
                          "OR built_at < CAST($at AS TIMESTAMP) - INTERVAL 60 DAY", k=run_key, at=run_at),
        _q("state_write", f"""
            INSERT INTO ops.identity_state
            SELECT $k, CAST($at AS TIMESTAMP), $digest, {upto}, $mode, $reason, $records, $customers""",
           k=run_key, at=run_at, digest=settings_digest(settings), mode=mode, reason=reason,
           records=records, customers=customers))
    if mode == "full":
        engine.run(_q("touched_clear", "DELETE FROM ops.touched_customers"))
