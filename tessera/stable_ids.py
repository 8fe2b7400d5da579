"""Stable ids for clusters: customers and companies keep their id across runs.

Shared by identity (customers) and companies; it writes ``ops.sequences`` so an id is
never reused.
"""

from __future__ import annotations

from tessera.engine import Engine, SqlStep, as_engine


def assign_stable_ids(engine: Engine, members: str, out: str, id_col: str) -> int:
    """Give every cluster of ``members`` (``cid``, ``old_id``) a stable id, into ``out``.

    Each old id goes to the cluster holding most of its records; each cluster keeps the
    old id of which it holds the most. Clusters without one get fresh ids from
    ``ops.sequences`` (named ``id_col``), never reusing one. ``out`` has ``cid``,
    ``id_col`` and ``is_new``. Shared by customers and companies; run it inside the
    caller's transaction (``engine.together()``), so the sequence moves with the tables
    it numbers. Returns the number of new ids.
    """
    engine = as_engine(engine)
    seq = {"name": id_col}
    engine.run(SqlStep("stable_ids.kept", f"""
        CREATE OR REPLACE TEMP TABLE {out}_kept AS
        WITH overlap AS (
            SELECT cid, old_id, count(*) AS n FROM {members} WHERE old_id IS NOT NULL
            GROUP BY cid, old_id
        ),
        best_cluster AS (
            SELECT old_id, cid, n FROM overlap
            QUALIFY row_number() OVER (PARTITION BY old_id ORDER BY n DESC, cid) = 1
        )
        SELECT cid, old_id AS kept_id FROM best_cluster
        QUALIFY row_number() OVER (PARTITION BY cid ORDER BY n DESC, old_id) = 1"""),
               SqlStep("stable_ids.sequence", "INSERT INTO ops.sequences SELECT $name, 0 WHERE NOT EXISTS "
                       "(SELECT 1 FROM ops.sequences WHERE name = $name)", seq))
    base = int(engine.scalar(SqlStep("stable_ids.base", f"""
        SELECT greatest((SELECT value FROM ops.sequences WHERE name = $name),
                        coalesce((SELECT max(kept_id) FROM {out}_kept), 0))""", seq)))
    engine.run(SqlStep("stable_ids.assign", f"""
        CREATE OR REPLACE TEMP TABLE {out} AS
        SELECT c.cid, coalesce(k.kept_id,
               {base} + row_number() OVER (PARTITION BY k.kept_id IS NULL ORDER BY c.cid)) AS "{id_col}",
               k.kept_id IS NULL AS is_new
        FROM (SELECT DISTINCT cid FROM {members}) c LEFT JOIN {out}_kept k USING (cid)"""),
               SqlStep("stable_ids.drop_kept", f"DROP TABLE {out}_kept"))
    new_ids = int(engine.scalar(SqlStep("stable_ids.new", f"SELECT count(*) FROM {out} WHERE is_new")))
    engine.run(SqlStep("stable_ids.advance", "UPDATE ops.sequences SET value = $value WHERE name = $name",
                       {**seq, "value": base + new_ids}))
    return new_ids
