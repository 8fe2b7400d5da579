"""Rebuild the warehouse's data from the landing archive, keeping every decision.

A data engineer rebuilds after changing a source's mapping or a contract: every landing
file is read again by the next run as if it were new. What was *loaded* goes (``raw``,
``staging``, the file ledger, the rejects); what was *decided* stays: the identity map
(``core.customer_sources``, so the next run's clusters inherit their ids by overlap
exactly as in a daily run), the id sequence, the merge log, the suppression ledger and
erasures (an erased person stays out: their lines were scrubbed and their hashes still
refuse them), bulk edits, segment history and feed deliveries. The import report keeps
its history. Everything derived from staging is rebuilt by the run itself.

A pending soft delete refuses the rebuild: its held imports are defined by load time,
and re-loading everything would hold (hide) all of that person's records. Restore or
purge first.
"""

from __future__ import annotations

import duckdb

from tessera.privacy.consent import BULK_EDITS_DDL, SOFT_DELETED_SQL
from tessera.engine.warehouse import table_exists


class RebuildRefused(Exception):
    """A rebuild now would change what the warehouse decided (a soft delete is pending)."""


def reset_loaded_data(con: duckdb.DuckDBPyConnection) -> dict:
    """Drop what was loaded, in one transaction; counts of what went."""
    con.execute(BULK_EDITS_DDL)
    pending = con.execute(f"SELECT count(*) FROM ({SOFT_DELETED_SQL})").fetchone()[0]
    if pending:
        raise RebuildRefused(f"{pending} soft-deleted customer(s) pending: restore or purge them first")
    tables = {schema: [r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = ? AND table_type = 'BASE TABLE'",
        [schema]).fetchall()] for schema in ("raw", "staging")}
    out = {"raw_tables": len(tables["raw"]), "staging_tables": len(tables["staging"])}
    con.execute("BEGIN TRANSACTION")
    try:
        for schema, names in tables.items():
            for name in names:
                con.execute(f'DROP TABLE "{schema}"."{name}" CASCADE')
        out["files_forgotten"] = con.execute("DELETE FROM ops.file_ledger").fetchone()[0]
        con.execute("DELETE FROM ops.file_stats")
        out["rejects_cleared"] = con.execute("DELETE FROM ops.rejects").fetchone()[0]
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    if table_exists(con, "core", "customer_sources"):
        out["identity_map_rows"] = con.execute("SELECT count(*) FROM core.customer_sources").fetchone()[0]
    return out
