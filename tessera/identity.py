"""Deterministic identity resolution with stable customer ids, all in SQL.

Records are linked when they share a match key (the ERP id; the normalised e-mail
unless it is a junk address). Linking is done as connected components by iterative
min-label propagation over a star graph (each record points at the smallest record of
its key group), so edges grow linearly with records and the loop converges in a few
passes. Nothing is done row by row in Python.

Stable ids: each new cluster inherits the previous ``customer_id`` with which it
shares the most records (ties: the smaller id); an old id goes to at most one cluster.
Clusters without a predecessor get fresh ids from ``ops.sequences``, never reusing a
retired one. Every merge (two old ids now one person) and split (one old id now
several) is written to ``core.merge_log`` so downstream tools can follow.
"""

from __future__ import annotations

import datetime as dt

import duckdb

from tessera.warehouse import table_exists, transaction

MATCH_RULES = ("erp_id", "email")
MAX_PASSES = 50


def _components(con: duckdb.DuckDBPyConnection) -> int:
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _rec AS
        SELECT row_number() OVER (ORDER BY source, source_record_id) AS rid,
               source, source_record_id, erp_id, email_key
        FROM staging.contacts""")
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _edges AS
        WITH star AS (
            SELECT rid, min(rid) OVER (PARTITION BY erp_id) AS hub, 'erp_id' AS rule
            FROM _rec WHERE erp_id IS NOT NULL
            UNION ALL
            SELECT rid, min(rid) OVER (PARTITION BY email_key) AS hub, 'email' AS rule
            FROM _rec WHERE email_key IS NOT NULL
        )
        SELECT rid AS a, hub AS b, rule FROM star WHERE rid <> hub
        UNION ALL
        SELECT hub AS a, rid AS b, rule FROM star WHERE rid <> hub""")
    con.execute("CREATE OR REPLACE TEMP TABLE _label AS SELECT rid, rid AS cid FROM _rec")
    passes = 0
    while passes < MAX_PASSES:
        passes += 1
        con.execute("""
            CREATE OR REPLACE TEMP TABLE _next AS
            WITH hop AS (
                SELECT e.a AS rid, min(l.cid) AS ncid
                FROM _edges e JOIN _label l ON l.rid = e.b GROUP BY e.a
            )
            SELECT l.rid, least(l.cid, coalesce(h.ncid, l.cid)) AS cid
            FROM _label l LEFT JOIN hop h USING (rid)""")
        # Pointer jumping: follow the label's own label, which halves long chains.
        con.execute("""
            CREATE OR REPLACE TEMP TABLE _next2 AS
            SELECT n.rid, least(n.cid, m.cid) AS cid FROM _next n JOIN _next m ON m.rid = n.cid""")
        changed = con.execute("""
            SELECT count(*) FROM _next2 n JOIN _label l USING (rid) WHERE n.cid <> l.cid""").fetchone()[0]
        con.execute("CREATE OR REPLACE TEMP TABLE _label AS SELECT * FROM _next2")
        if changed == 0:
            break
    else:  # pragma: no cover - would need a chain of 2**50 records
        raise RuntimeError("identity clustering did not converge")
    return passes


def resolve(con: duckdb.DuckDBPyConnection, run_at: dt.datetime, run_key: str) -> dict:
    """Rebuild ``core.customer_sources`` and append to ``core.merge_log``. Returns stats."""
    passes = _components(con)
    con.execute("""
        CREATE TABLE IF NOT EXISTS core.merge_log (
            logged_at TIMESTAMP, run_key VARCHAR, event VARCHAR, customer_id BIGINT,
            other_customer_id BIGINT, records BIGINT, rule VARCHAR, evidence VARCHAR)""")
    has_prev = table_exists(con, "core", "customer_sources")
    prev = ("SELECT source, source_record_id, customer_id FROM core.customer_sources"
            if has_prev else
            "SELECT NULL::VARCHAR source, NULL::VARCHAR source_record_id, NULL::BIGINT customer_id WHERE false")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _members AS
        SELECT r.rid, r.source, r.source_record_id, l.cid, p.customer_id AS old_id
        FROM _rec r JOIN _label l USING (rid)
        LEFT JOIN ({prev}) p USING (source, source_record_id)""")
    # Each old id goes to the cluster holding most of its records; each cluster keeps
    # the old id of which it holds the most.
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _overlap AS
        SELECT cid, old_id, count(*) AS n FROM _members WHERE old_id IS NOT NULL GROUP BY ALL""")
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _kept AS
        WITH best_cluster AS (
            SELECT old_id, cid, n FROM _overlap
            QUALIFY row_number() OVER (PARTITION BY old_id ORDER BY n DESC, cid) = 1
        )
        SELECT cid, old_id AS customer_id FROM best_cluster
        QUALIFY row_number() OVER (PARTITION BY cid ORDER BY n DESC, old_id) = 1""")
    con.execute("INSERT INTO ops.sequences SELECT 'customer_id', 0 WHERE NOT EXISTS "
                "(SELECT 1 FROM ops.sequences WHERE name = 'customer_id')")
    with transaction(con):
        base = con.execute("""
            SELECT greatest(
                (SELECT value FROM ops.sequences WHERE name = 'customer_id'),
                coalesce((SELECT max(customer_id) FROM _kept), 0))""").fetchone()[0]
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE _ids AS
            SELECT c.cid, coalesce(k.customer_id,
                   {int(base)} + row_number() OVER (PARTITION BY k.customer_id IS NULL ORDER BY c.cid)) AS customer_id,
                   k.customer_id IS NULL AS is_new
            FROM (SELECT DISTINCT cid FROM _members) c LEFT JOIN _kept k USING (cid)""")
        new_ids = con.execute("SELECT count(*) FROM _ids WHERE is_new").fetchone()[0]
        con.execute("UPDATE ops.sequences SET value = ? WHERE name = 'customer_id'",
                    [int(base) + int(new_ids)])
        # Which rule tied each record to its cluster: the key it shares with another member.
        con.execute("""
            CREATE OR REPLACE TABLE core.customer_sources AS
            SELECT m.source, m.source_record_id, i.customer_id, s.node,
                   CASE WHEN count(*) OVER (PARTITION BY m.cid) = 1 THEN 'singleton'
                        WHEN s.erp_id IS NOT NULL AND count(*) OVER (PARTITION BY m.cid, s.erp_id) > 1 THEN 'erp_id'
                        WHEN s.email_key IS NOT NULL AND count(*) OVER (PARTITION BY m.cid, s.email_key) > 1 THEN 'email'
                        ELSE 'transitive' END AS matched_by,
                   ?::TIMESTAMP AS resolved_at
            FROM _members m JOIN _ids i USING (cid)
            JOIN staging.contacts s USING (source, source_record_id)
            ORDER BY i.customer_id, m.source, m.source_record_id""", [run_at])
        merges = con.execute("""
            INSERT INTO core.merge_log
            SELECT ?, ?, 'merged', i.customer_id, m.old_id, count(*), 'erp_id|email',
                   'records of customer ' || m.old_id || ' now share a match key with customer ' || i.customer_id
            FROM _members m JOIN _ids i USING (cid)
            WHERE m.old_id IS NOT NULL AND m.old_id <> i.customer_id
              AND m.old_id NOT IN (SELECT customer_id FROM _ids)
            GROUP BY ALL""", [run_at, run_key]).fetchone()
        splits = con.execute("""
            INSERT INTO core.merge_log
            SELECT ?, ?, 'split', m.old_id, i.customer_id, count(*), 'erp_id|email',
                   'records of customer ' || m.old_id || ' no longer share a match key with it'
            FROM _members m JOIN _ids i USING (cid)
            WHERE m.old_id IS NOT NULL AND m.old_id <> i.customer_id
              AND m.old_id IN (SELECT customer_id FROM _ids)
            GROUP BY ALL""", [run_at, run_key]).fetchone()
    stats = con.execute("""
        SELECT count(*) AS records, count(DISTINCT customer_id) AS customers,
               count(*) FILTER (WHERE matched_by <> 'singleton') AS linked_records
        FROM core.customer_sources""").fetchone()
    for t in ("_rec", "_edges", "_label", "_next", "_next2", "_members", "_overlap", "_kept", "_ids"):
        con.execute(f"DROP TABLE IF EXISTS {t}")
    return {
        "records": int(stats[0]), "customers": int(stats[1]), "linked_records": int(stats[2]),
        "new_ids": int(new_ids), "merges": int(merges[0]) if merges else 0,
        "splits": int(splits[0]) if splits else 0, "passes": passes,
    }
