"""Who holds an identifier: the shared lookup from an identifier to the customers whose
records carry it, after the run's merges and splits.

Why here: withdrawals (this layer) and behavioural events (identity, above) both name a
person by whatever identifier their channel carries, an e-mail, a phone, an ERP id or a
contact record id, and both must reach the customer that owns it *now*. One definition
keeps them agreeing. It reads ``staging.contacts`` and ``core.customer_sources`` as
tables (no import of the identity stage).
"""

from __future__ import annotations

from tessera.engine import Engine, step_from_file

# The identifier kinds of a withdrawal or an event, strongest first, with the staging
# column that holds each one's normalised key. ``customer_ref`` is looked up as
# ``record:<the source's customer_source>``.
KEY_COLUMNS = (("customer_ref", "customer_ref_key"), ("erp_id", "erp_key"),
               ("email", "email_key"), ("phone", "mobile_key"))


def identifier_owners(engine: Engine) -> None:
    """(Re)build the temporary table ``_identifier_owners (kind, key, customer_id)``."""
    engine.run(step_from_file(__package__, "identifier_owners.sql"))


def identifiers_sql(table: str, columns: set[str], customer_sources: dict[str, str],
                    step_prefix: str) -> tuple[str, dict]:
    """SQL ``(source, source_record_id, strength, linked_by, kind, key)``: every identifier
    the rows of ``table`` carry, one row each (``strength`` 1 is the strongest).

    ``columns`` are the table's columns (a kind whose key column is missing is skipped);
    ``customer_sources`` maps a source of the table to the contact source its
    ``customer_ref`` names. Source names are bound as parameters.
    """
    parts, params = [], {}
    for strength, (kind, col) in enumerate(KEY_COLUMNS, start=1):
        if col not in columns:
            continue
        if kind == "customer_ref":
            for i, (src, contact_src) in enumerate(sorted(customer_sources.items())):
                params[f"{step_prefix}_src{i}"] = src
                params[f"{step_prefix}_ref{i}"] = "record:" + contact_src
                parts.append(
                    f"SELECT source, source_record_id, {strength} AS strength, '{kind}' AS linked_by, "
                    f"${step_prefix}_ref{i} AS kind, {col} AS key FROM {table} "
                    f"WHERE source = ${step_prefix}_src{i} AND {col} IS NOT NULL")
            continue
        parts.append(f"SELECT source, source_record_id, {strength} AS strength, '{kind}' AS linked_by, "
                     f"'{kind}' AS kind, {col} AS key FROM {table} WHERE {col} IS NOT NULL")
    if not parts:
        parts.append("SELECT CAST(NULL AS VARCHAR) AS source, CAST(NULL AS VARCHAR) AS source_record_id, "
                     "0 AS strength, CAST(NULL AS VARCHAR) AS linked_by, CAST(NULL AS VARCHAR) AS kind, "
                     "CAST(NULL AS VARCHAR) AS key WHERE 1 = 0")
    return "\nUNION ALL\n".join(parts), params


__all__ = ["KEY_COLUMNS", "identifier_owners", "identifiers_sql"]
