"""Golden records by the tree of nodes, with the lineage of every field.

For each customer and field, the candidates are the non-empty values of its source
records (an empty value never wins). The tree decides: the node with the best
priority wins, then the most recently updated record, then the most complete one,
then a fixed order so the result is deterministic. A field can override the rule
(``most_recent``: most recently updated first, then the tree). Every choice is kept in
``core.customer_field_lineage``.

Consent is never chosen by survivorship: it comes from the consent ledger
(``core.consents``, see ``tessera.privacy.consent``), where only an explicit, newer event can
lift a withdrawal.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json

from tessera.contracts import SQL_TYPES
from tessera.engine import Engine, SqlStep, as_engine
from tessera.settings import Deployment
from tessera.vocabulary import contact_golden_fields


def golden_fields(deployment: Deployment) -> dict[str, str]:
    return contact_golden_fields(deployment)


VIEWS_SCHEMA = "views"


def view_tables(view: str) -> tuple[str, str]:
    """The golden records and field lineage of a declared view node."""
    return f"{VIEWS_SCHEMA}.{view}_customers", f"{VIEWS_SCHEMA}.{view}_field_lineage"


GOLDEN_STATE_DDL = """
CREATE TABLE IF NOT EXISTS ops.golden_state (
    built_at           TIMESTAMP NOT NULL,
    identity_run_key   VARCHAR,             -- the identity build these records follow
    digest             VARCHAR   NOT NULL,  -- sha-256 of the survivorship's configuration
    mode               VARCHAR   NOT NULL,  -- incremental | full
    reason             VARCHAR,
    rebuilt_customers  BIGINT
)"""


def _golden_full_reason(engine: Engine, run_key: str | None, digest: str) -> str | None:
    """Why ``core.customers`` must be rebuilt in full (None: only the touched customers).

    Incremental when identity's build of this run was incremental and the stored records
    follow identity's previous build under the same survivorship configuration: then a
    customer's record can only differ from the stored one if its records or cluster
    changed (identity's touched customers) or its consent or hard-bounce state moved
    (compared with the stored row)."""
    for schema, table in (("core", "customers"), ("core", "customer_field_lineage"),
                          ("ops", "identity_state"), ("ops", "touched_customers")):
        if not engine.table_exists(schema, table):
            return f"no {schema}.{table} yet"
    builds = engine.rows(SqlStep("golden.incremental.identity_builds", """
        SELECT run_key, mode FROM ops.identity_state ORDER BY built_at DESC LIMIT 2"""))
    if not builds or builds[0][0] != run_key or builds[0][1] != "incremental":
        return "identity was built in full"
    state = engine.rows(SqlStep("golden.incremental.state", """
        SELECT identity_run_key, digest FROM ops.golden_state ORDER BY built_at DESC LIMIT 1"""))
    if not state:
        return "no recorded state"
    if state[0][1] != digest:
        return "the survivorship configuration changed"
    if len(builds) < 2 or state[0][0] != builds[1][0]:
        return "the stored records do not follow identity's previous build"
    return None


def build_customers(engine: Engine, deployment: Deployment, run_at: dt.datetime,
                    view: str | None = None, incremental: bool = False, run_key: str | None = None) -> dict:
    """Golden records of the main view (the tree's ``priority``: ``core.customers``), or of
    a declared view node (``views.<view>_customers``): the same survivorship over the
    nodes under the view, ranked per level (:meth:`View.node_rank`). A customer with no
    record under a view has no golden record in it.

    With ``incremental`` (main view only), only the customers identity touched in this
    run (``run_key``) or whose consent or hard bounce moved are rewritten, in one
    transaction, where :func:`_golden_full_reason` allows it."""
    engine = as_engine(engine)
    fields = golden_fields(deployment)
    if view is None:
        ranks, rules = deployment.node_rank(), deployment.tree.field_rules
        customers_table, lineage_table = "core.customers", "core.customer_field_lineage"
    else:
        v = next(v for v in deployment.tree.views if v.name == view)
        ranks, rules = v.node_rank(), v.field_rules
        customers_table, lineage_table = view_tables(view)
        engine.run(SqlStep("golden.views_schema", f"CREATE SCHEMA IF NOT EXISTS {VIEWS_SCHEMA}"))
    rank_values = ", ".join(f"('{n}', {r})" for n, r in ranks.items())
    recent_fields = [f for f, r in rules.items() if r == "most_recent"]
    cast_cols = ", ".join(f'CAST(s."{f}" AS VARCHAR) AS "{f}"' for f in fields)
    unpivot_cols = ", ".join(f'"{f}"' for f in fields)
    recent_list = "[" + ", ".join(f"'{f}'" for f in recent_fields) + "]::VARCHAR[]"
    consent_sql = """
        SELECT customer_id,
               max(state) FILTER (WHERE channel = 'email') AS email_consent,
               max(state) FILTER (WHERE channel = 'sms') AS sms_consent
        FROM core.consents GROUP BY customer_id"""
    bounced_sql = "SELECT DISTINCT email_key FROM staging.bounces WHERE bounce_type = 'hard'"
    mode, reason, only = "full", None, ""
    if view is None:
        if incremental:
            engine.run(SqlStep("golden.incremental.state_ddl", GOLDEN_STATE_DDL))
        digest = hashlib.sha256(json.dumps([rank_values, recent_list, fields], sort_keys=True).encode()).hexdigest()
        reason = _golden_full_reason(engine, run_key, digest) if incremental else "incremental is off"
        if reason is None:
            mode, only = "incremental", "WHERE cs.customer_id IN (SELECT customer_id FROM _touched)"
            engine.run(SqlStep("golden.incremental.touched", f"""
                CREATE OR REPLACE TEMP TABLE _touched AS
                SELECT customer_id FROM ops.touched_customers WHERE run_key = $k
                UNION
                SELECT c.customer_id FROM core.customers c
                LEFT JOIN ({consent_sql}) n USING (customer_id)
                LEFT JOIN ({bounced_sql}) b ON b.email_key = c.email
                WHERE coalesce(n.email_consent, 'unknown') IS DISTINCT FROM c.email_consent
                   OR coalesce(n.sms_consent, 'unknown') IS DISTINCT FROM c.sms_consent
                   OR (b.email_key IS NOT NULL) IS DISTINCT FROM c.email_hard_bounced""", {"k": run_key}))
    engine.run(SqlStep("golden.candidates", f"""
        CREATE OR REPLACE TEMP TABLE _candidates AS
        WITH ranks(node, node_rank) AS (VALUES {rank_values})
        SELECT * FROM (
            SELECT cs.customer_id, s.source, s.source_record_id, s.node, r.node_rank,
                   s.updated_at, s.completeness, {cast_cols}
            FROM staging.contacts s
            JOIN core.customer_sources cs USING (source, source_record_id)
            JOIN ranks r ON r.node = s.node
            {only}
        ) UNPIVOT (value FOR field IN ({unpivot_cols}))  -- the standard form: Spark reads it too
        WHERE trim(value) <> ''"""))
    # The rule recorded in the lineage is the step of the order that decided, found by
    # comparing the winner with the runner-up: the tree (a better node), recency (same
    # node, newer record), completeness, or the final deterministic tie-break; a field
    # override says 'most_recent'; a value no other record had is 'only_value'.
    engine.run(SqlStep("golden.winners", f"""
        CREATE OR REPLACE TEMP TABLE _winners AS
        WITH ranked AS (
            SELECT *, list_contains({recent_list}, field) AS overridden,
                   row_number() OVER w AS pos,
                   lead(node_rank) OVER w AS next_rank,
                   lead(updated_at) OVER w AS next_updated,
                   lead(completeness) OVER w AS next_completeness
            FROM _candidates
            WINDOW w AS (
                PARTITION BY customer_id, field
                ORDER BY
                  CASE WHEN list_contains({recent_list}, field) THEN epoch(updated_at) END DESC NULLS LAST,
                  node_rank, updated_at DESC NULLS LAST, completeness DESC, source, source_record_id)
        )
        SELECT customer_id, field, value, node, source, source_record_id, updated_at AS source_updated_at,
               CASE WHEN overridden THEN 'most_recent'
                    WHEN next_rank IS NULL THEN 'only_value'
                    WHEN node_rank < next_rank THEN 'tree_priority'
                    WHEN updated_at IS NOT NULL AND (next_updated IS NULL OR updated_at > next_updated)
                         THEN 'recency'
                    WHEN completeness > next_completeness THEN 'completeness'
                    ELSE 'tie_break' END AS rule
        FROM ranked WHERE pos = 1"""))
    pivot_cols = ",\n".join(
        f"CAST(max(value) FILTER (WHERE field = '{f}') AS {SQL_TYPES[t]}) AS \"{f}\""
        for f, t in fields.items())
    lineage_sql = """
            SELECT customer_id, field, node, source, source_record_id, source_updated_at, rule,
                   CAST($run_at AS TIMESTAMP) AS decided_at
            FROM _winners ORDER BY customer_id, field"""
    customers_sql = f"""
            WITH ranks(node, node_rank) AS (VALUES {rank_values}),
            g AS (
                SELECT customer_id, {pivot_cols} FROM _winners GROUP BY customer_id
            ),
            members AS (
                SELECT cs.customer_id, count(*) AS source_count,
                       list(DISTINCT cs.node ORDER BY cs.node) AS nodes,
                       max(s.updated_at) AS updated_at
                FROM core.customer_sources cs JOIN staging.contacts s USING (source, source_record_id)
                WHERE cs.node IN (SELECT node FROM ranks) {only.replace("WHERE", "AND")}
                GROUP BY cs.customer_id
            ),
            consent AS ({consent_sql}),
            bounced AS ({bounced_sql})
            SELECT m.customer_id, g.* EXCLUDE (customer_id),
                   coalesce(c.email_consent, 'unknown') AS email_consent,
                   coalesce(c.sms_consent, 'unknown') AS sms_consent,
                   (b.email_key IS NOT NULL) AS email_hard_bounced,
                   m.source_count, m.nodes, m.updated_at,
                   CAST($run_at AS TIMESTAMP) AS golden_built_at
            FROM members m
            LEFT JOIN g USING (customer_id)
            LEFT JOIN consent c USING (customer_id)
            LEFT JOIN bounced b ON b.email_key = g.email
            ORDER BY m.customer_id"""
    with engine.together():
        if mode == "incremental":
            # the touched customers' rows go, theirs come back (a customer whose records
            # all left has none)
            for t in (lineage_table, customers_table):
                engine.run(SqlStep("golden.incremental.delete",
                                   f"DELETE FROM {t} WHERE customer_id IN (SELECT customer_id FROM _touched)"))
            engine.append(lineage_table, SqlStep("golden.incremental.lineage", lineage_sql, {"run_at": run_at}))
            engine.append(customers_table, SqlStep("golden.incremental.customers", customers_sql, {"run_at": run_at}))
        else:
            engine.replace_table(lineage_table, SqlStep("golden.lineage", lineage_sql, {"run_at": run_at}))
            # the view's nodes only (the main view ranks every node)
            engine.replace_table(customers_table, SqlStep("golden.customers", customers_sql, {"run_at": run_at}))
        rebuilt = None
        if view is None:
            rebuilt = (int(engine.scalar(SqlStep("golden.incremental.rebuilt", "SELECT count(*) FROM _touched")))
                       if mode == "incremental" else None)
            if incremental:
                engine.run(SqlStep("golden.incremental.state_write", """
                    INSERT INTO ops.golden_state VALUES (CAST($at AS TIMESTAMP), $k, $d, $mode, $reason, $n)""",
                                   {"at": run_at, "k": run_key, "d": digest, "mode": mode, "reason": reason,
                                     "n": rebuilt}),
                           SqlStep("golden.incremental.state_prune", """
                    DELETE FROM ops.golden_state WHERE built_at < CAST($at AS TIMESTAMP) - INTERVAL 60 DAY""",
                                   {"at": run_at}))
            else:
                engine.run(SqlStep("golden.incremental.state_drop", "DROP TABLE IF EXISTS ops.golden_state"))
    engine.run(SqlStep("golden.drop_touched", "DROP TABLE IF EXISTS _touched"),
               SqlStep("golden.drop_candidates", "DROP TABLE IF EXISTS _candidates"),
               SqlStep("golden.drop_winners", "DROP TABLE IF EXISTS _winners"))
    row = engine.rows(SqlStep("golden.counts", f"""
        SELECT count(*), count(*) FILTER (WHERE source_count > 1),
               count(*) FILTER (WHERE email_consent = 'granted') FROM {customers_table}"""))[0]
    out = {"customers": int(row[0]), "multi_source": int(row[1]), "email_granted": int(row[2])}
    if view is None and incremental:
        out.update(golden_mode=mode, golden_full_reason=reason or "", rebuilt_customers=int(rebuilt or 0))
    return out


def build_orders(engine: Engine, deployment: Deployment) -> dict:
    """Orders linked to golden customers through the contact source they reference."""
    engine = as_engine(engine)
    parts = []
    for s in deployment.sources_of("order"):
        parts.append(f"SELECT o.*, cs.customer_id FROM staging.orders o "
                     f"LEFT JOIN core.customer_sources cs ON cs.source = '{s.customer_source}' "
                     f"AND cs.source_record_id = o.customer_ref WHERE o.source = '{s.name}'")
    with engine.together():
        if not parts:
            engine.run(SqlStep("golden.orders_empty",
                               "CREATE OR REPLACE TABLE core.orders (order_id VARCHAR, "
                               "customer_id BIGINT, order_date DATE, amount DECIMAL(18,2))"))
        else:
            engine.replace_table("core.orders", SqlStep(
                "golden.orders", "SELECT source_record_id AS order_id, customer_id, source, "
                "customer_ref, order_date, amount, channel_macro, channel_micro, offer_id FROM ("
                + " UNION ALL ".join(parts) + ") ORDER BY order_date, order_id"))
    row = engine.rows(SqlStep("golden.order_counts",
                              "SELECT count(*), count(*) FILTER (WHERE customer_id IS NULL), "
                              "coalesce(sum(amount), 0) FROM core.orders"))[0]
    return {"orders": int(row[0]), "orders_without_customer": int(row[1]), "revenue": float(row[2])}


# Events are linked through the identity graph: tessera.identity.linkage.build_events.
