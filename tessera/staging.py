"""Staging: the latest version of every source record, typed and normalised, per entity.

``raw.<source>`` keeps every version a source ever sent; staging keeps one row per
(source, source_record_id), the newest (by file order, then line). Identifiers are
normalised here once, in SQL, so that identity resolution compares like with like:
e-mails trimmed and lower-cased (junk addresses keep their value but get no match
key), phones to E.164 with the record's or the source's default country, names with
collapsed spaces plus an accent-folded key used for matching only.
"""

from __future__ import annotations

import duckdb

from tessera.config import Deployment
from tessera.ingest.load import source_fields
from tessera.warehouse import table_exists, transaction

# Calling code and whether the national trunk prefix 0 is dropped in E.164.
# Italy keeps its leading 0 on landlines; Poland has no trunk prefix.
CALLING_CODES = {
    "IT": ("39", False), "PL": ("48", False), "SM": ("378", False), "VA": ("39", False),
    "CH": ("41", True), "DE": ("49", True), "AT": ("43", True), "FR": ("33", True),
    "ES": ("34", False), "GB": ("44", True), "IE": ("353", True), "NL": ("31", True),
    "BE": ("32", True), "PT": ("351", False), "RO": ("40", True), "US": ("1", False),
}

ENTITY_TABLES = {
    "contact": "contacts", "order": "orders", "order_line": "order_lines",
    "product": "products", "product_line": "product_lines", "event": "events",
    "bounce": "bounces", "unsubscribe": "unsubscribes", "consent": "consents",
}


def _latest_union(con, deployment: Deployment, entity: str) -> str | None:
    parts = []
    for source in deployment.sources_of(entity):
        if not table_exists(con, "raw", source.name):
            continue
        cols = ", ".join(f'"{c}"' for c in source_fields(deployment, source))
        parts.append(
            f"SELECT '{source.name}' AS source, '{source.node}' AS node, "
            f"'{source.default_country}' AS default_country, {cols}, _file, _line, _file_seq, "
            f"_loaded_at FROM raw.{source.name} "
            "QUALIFY row_number() OVER (PARTITION BY source_record_id "
            "ORDER BY _file_seq DESC, _line DESC) = 1"
        )
    if not parts:
        return None
    return "\nUNION ALL BY NAME\n".join(parts)


def build_contacts(con: duckdb.DuckDBPyConnection, deployment: Deployment) -> int:
    union = _latest_union(con, deployment, "contact")
    ext = [p.name for p in deployment.properties_of("contact")]
    codes = ", ".join(f"('{c}', '{cc}', {str(drop).lower()})" for c, (cc, drop) in CALLING_CODES.items())
    junk_emails = [e.strip().lower() for e in deployment.identity.junk_emails]
    junk_locals = [e.strip().lower() for e in deployment.identity.junk_email_locals]

    def e164(col: str) -> str:
        d = f"regexp_replace(trim({col}), '[^0-9+]', '', 'g')"
        national = (f"CASE WHEN cc.drop_zero AND starts_with({d}, '0') THEN substr({d}, 2) "
                    f"ELSE {d} END")
        raw = (f"CASE WHEN {col} IS NULL OR {d} = '' THEN NULL "
               f"WHEN starts_with({d}, '+') THEN '+' || replace(substr({d}, 2), '+', '') "
               f"WHEN starts_with({d}, '00') THEN '+' || substr({d}, 3) "
               f"WHEN cc.code IS NOT NULL THEN '+' || cc.code || {national} END")
        return (f"CASE WHEN regexp_full_match({raw}, '\\+[1-9][0-9]{{6,14}}') THEN {raw} END")

    ext_cols = "".join(f', "{p}"' for p in ext)
    sql = f"""
    CREATE OR REPLACE TABLE staging.contacts AS
    WITH latest AS ({union}),
    codes(country, code, drop_zero) AS (VALUES {codes}),
    base AS (
      SELECT l.*, upper(coalesce(nullif(trim(l.country), ''), l.default_country)) AS _cc
      FROM latest l
    ),
    norm AS (
      SELECT
        b.source, b.source_record_id, b.node,
        nullif(upper(trim(b.erp_id)), '') AS erp_id,
        nullif(lower(trim(b.email)), '') AS email,
        nullif(regexp_replace(trim(b.first_name), '\\s+', ' ', 'g'), '') AS first_name,
        nullif(regexp_replace(trim(b.last_name), '\\s+', ' ', 'g'), '') AS last_name,
        {e164('b.mobile')} AS mobile,
        {e164('b.phone')} AS phone,
        nullif(regexp_replace(trim(b.address), '\\s+', ' ', 'g'), '') AS address,
        nullif(upper(trim(b.postcode)), '') AS postcode,
        nullif(trim(b.city), '') AS city,
        nullif(upper(trim(b.province)), '') AS province,
        b._cc AS country,
        b.birth_date, b.gender,
        nullif(upper(replace(trim(b.tax_code), ' ', '')), '') AS tax_code,
        b.consent_email, b.consent_sms, b.updated_at{ext_cols},
        b._file, b._line, b._loaded_at
      FROM base b LEFT JOIN codes cc ON cc.country = b._cc
    )
    SELECT n.*,
      CASE WHEN n.email IS NULL OR list_contains(?, n.email)
                OR list_contains(?, split_part(n.email, '@', 1)) THEN NULL
           ELSE n.email END AS email_key,
      lower(strip_accents(concat_ws(' ', n.first_name, n.last_name))) AS name_key,
      (CASE WHEN n.email IS NULL THEN 0 ELSE 1 END + CASE WHEN n.first_name IS NULL THEN 0 ELSE 1 END
       + CASE WHEN n.last_name IS NULL THEN 0 ELSE 1 END + CASE WHEN n.mobile IS NULL THEN 0 ELSE 1 END
       + CASE WHEN n.address IS NULL THEN 0 ELSE 1 END + CASE WHEN n.birth_date IS NULL THEN 0 ELSE 1 END
       + CASE WHEN n.city IS NULL THEN 0 ELSE 1 END + CASE WHEN n.postcode IS NULL THEN 0 ELSE 1 END
      ) AS completeness
    FROM norm n
    """
    with transaction(con):
        if union is None:
            raise RuntimeError("no contact source has been loaded yet")
        con.execute(sql, [junk_emails, junk_locals])
    return int(con.execute("SELECT count(*) FROM staging.contacts").fetchone()[0])


def build_entity(con: duckdb.DuckDBPyConnection, deployment: Deployment, entity: str) -> int:
    """Staging for non-contact entities: the latest version of each record, e-mails normalised."""
    table = ENTITY_TABLES[entity]
    union = _latest_union(con, deployment, entity)
    with transaction(con):
        if union is None:
            con.execute(f"CREATE OR REPLACE TABLE staging.{table} AS SELECT NULL::VARCHAR AS source WHERE false")
            return 0
        extra = ""
        if entity in ("event", "bounce", "unsubscribe", "consent"):
            extra = ", lower(trim(email)) AS email_key"
        if entity == "product_line":
            extra = ", CASE WHEN macro_id IS NULL THEN 'macro' ELSE 'micro' END AS level"
        con.execute(f"CREATE OR REPLACE TABLE staging.{table} AS SELECT * EXCLUDE (default_country, _file_seq){extra} FROM ({union})")
    return int(con.execute(f"SELECT count(*) FROM staging.{table}").fetchone()[0])
