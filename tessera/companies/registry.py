"""B2B registries: companies, their users and potential companies, in SQL only.

Why this module exists apart from identity: a company is not a person. Companies match
by VAT number first (a partita IVA that passed its check digit at ingestion), then by
normalised legal name, the way people write it ("Rossi Costruzioni S.r.l.", "ROSSI
COSTRUZIONI SRL", "Rossi Costruzioni s.r.l" are one company); a generic name ("Bar
Centrale") only matches within the same city. Company users are people: they also feed
``staging.contacts`` (see ``tessera.ingest.staging.build_contacts``) so that the same e-mail in
the B2C and the B2B registry is one customer; here they are linked to their company.

Tables built here:

- ``staging.company_users`` (+ ``ops.unlinked_company_users``): each user linked to one
  company *record* by the company VAT, else by normalised legal name. A user whose
  company is not found, or whose name matches companies with different VATs, is
  reported with a reason and kept (it is still a person), never silently dropped.
- ``core.company_sources``, ``core.companies``, ``core.company_field_lineage``: golden
  companies with ids that stay stable across runs (each new cluster keeps the old id of
  which it holds most records, as customers do), survivorship by the deployment's tree.
- ``core.company_contacts``: (customer_id, company_id, role, source) of every linked user.
- ``core.potential_companies``: purchased lists, apart from companies and contacts until
  a registered company with the same VAT (or normalised legal name) appears.
"""

from __future__ import annotations

import datetime as dt

from tessera.engine import Engine, SqlStep, as_engine
from tessera.engine.steps import ddl_statements
from tessera.settings import Deployment
from tessera.stable_ids import assign_stable_ids
from tessera.vocabulary import (CARD_COMPANY_FIELDS, card_company_fields, company_golden_fields,
                                switched_off)


def link_company_users(engine: Engine, run_at: dt.datetime) -> dict:
    """Link each staged company user to one company record; report those left unlinked.

    Order of evidence: the user's company VAT (when given and valid), then the normalised
    legal name. A name shared by companies with different VATs is ambiguous: the user is
    reported, not guessed. A VAT given on the user that contradicts the named company is
    reported too. ``ops.unlinked_company_users`` holds ids and reasons only.
    """
    engine = as_engine(engine)
    have_companies = engine.table_exists("staging", "companies") and bool(engine.scalar(SqlStep(
        "companies.have_name_keys",
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'staging' "
        "AND table_name = 'companies' AND column_name = 'name_key'")))
    companies = ("SELECT source, source_record_id, vat_key, name_key FROM staging.companies"
                 if have_companies else
                 "SELECT NULL::VARCHAR source, NULL::VARCHAR source_record_id, NULL::VARCHAR vat_key, "
                 "NULL::VARCHAR name_key WHERE false")
    engine.run(*ddl_statements(__package__, "tables.sql"))
    with engine.together():
        engine.run(SqlStep("companies.user_links", f"""
            CREATE OR REPLACE TEMP TABLE _user_links AS
            WITH c AS ({companies}),
            by_vat AS (
                SELECT u.source, u.source_record_id,
                       arg_min(c.source, [c.source, c.source_record_id]) AS company_source,
                       arg_min(c.source_record_id, [c.source, c.source_record_id]) AS company_record_id
                FROM staging.company_users u JOIN c ON c.vat_key = u.company_vat_key
                GROUP BY ALL
            ),
            by_name AS (
                SELECT u.source, u.source_record_id,
                       count(DISTINCT c.vat_key) AS vats,
                       bool_or(u.company_vat_key IS NOT NULL AND c.vat_key IS NOT NULL
                               AND c.vat_key <> u.company_vat_key) AS vat_conflict,
                       -- a record with a VAT represents the company best
                       arg_min(c.source, [CASE WHEN c.vat_key IS NULL THEN 1 ELSE 0 END::VARCHAR,
                                          c.source, c.source_record_id]) AS company_source,
                       arg_min(c.source_record_id, [CASE WHEN c.vat_key IS NULL THEN 1 ELSE 0 END::VARCHAR,
                                                    c.source, c.source_record_id]) AS company_record_id
                FROM staging.company_users u JOIN c ON c.name_key = u.company_name_key
                GROUP BY ALL
            )
            SELECT u.source, u.source_record_id,
                   CASE WHEN v.company_record_id IS NOT NULL THEN v.company_source
                        WHEN n.vats <= 1 AND NOT n.vat_conflict THEN n.company_source END AS company_source,
                   CASE WHEN v.company_record_id IS NOT NULL THEN v.company_record_id
                        WHEN n.vats <= 1 AND NOT n.vat_conflict THEN n.company_record_id END AS company_record_id,
                   CASE WHEN v.company_record_id IS NOT NULL THEN 'vat'
                        WHEN n.vats <= 1 AND NOT n.vat_conflict THEN 'legal_name' END AS linked_by,
                   CASE WHEN v.company_record_id IS NOT NULL THEN NULL
                        WHEN n.company_record_id IS NULL AND u.company_name_key IS NULL
                             THEN 'company name has no letters or digits'
                        WHEN n.company_record_id IS NULL THEN 'company not found (legal name or VAT)'
                        WHEN n.vat_conflict THEN 'company VAT differs from the named company''s VAT'
                        WHEN n.vats > 1 THEN 'legal name matches companies with different VAT numbers'
                   END AS unlinked_reason
            FROM staging.company_users u
            LEFT JOIN by_vat v USING (source, source_record_id)
            LEFT JOIN by_name n USING (source, source_record_id)"""))
        engine.replace_table("staging.company_users", SqlStep("companies.users_linked", """
            SELECT u.*, l.company_source, l.company_record_id, l.linked_by
            FROM staging.company_users u  -- ON, not USING: Spark's u.* after USING puts the keys first
            JOIN _user_links l ON l.source = u.source AND l.source_record_id = u.source_record_id
            ORDER BY u.source, u.source_record_id"""))
        engine.overwrite("ops.unlinked_company_users", SqlStep("companies.unlinked_users", """
            SELECT source, source_record_id, unlinked_reason, CAST($run_at AS TIMESTAMP)
            FROM _user_links WHERE unlinked_reason IS NOT NULL
            ORDER BY source, source_record_id""", {"run_at": run_at}))
    engine.run(SqlStep("companies.drop_user_links", "DROP TABLE IF EXISTS _user_links"))
    rows = engine.rows(SqlStep("companies.user_link_counts", """
        SELECT count(*), count(*) FILTER (WHERE linked_by = 'vat'),
               count(*) FILTER (WHERE linked_by = 'legal_name') FROM staging.company_users"""))[0]
    reasons = dict(engine.rows(SqlStep(
        "companies.unlinked_reasons",
        "SELECT reason, count(*) FROM ops.unlinked_company_users GROUP BY reason ORDER BY 1")))
    return {"company_users": int(rows[0]), "linked_by_vat": int(rows[1]),
            "linked_by_legal_name": int(rows[2]),
            "unlinked": int(sum(reasons.values())),
            "unlinked_by_reason": {k: int(v) for k, v in reasons.items()}}


# --------------------------------------------------------------------------- #
# Golden companies
# --------------------------------------------------------------------------- #
def _cluster(engine: Engine) -> int:
    """Connected components of the company records (``_crec``) over VAT and name edges.

    Edges are stars (every record of a key group to the group's smallest record), so
    they grow linearly. A name group holding two different VATs links nothing by name:
    those are different companies that happen to share a name. "At most one VAT in the
    group" is ``min = max`` over the window (or no VAT at all), not ``count(DISTINCT) OVER``,
    which Spark refuses (DISTINCT_WINDOW_FUNCTION_UNSUPPORTED): the same test on both engines.
    """
    engine.run(SqlStep("companies.edges", """
        CREATE OR REPLACE TEMP TABLE _cedges AS
        SELECT min(rid) OVER (PARTITION BY vat_key) AS a, rid AS b FROM _crec WHERE vat_key IS NOT NULL
        UNION ALL
        SELECT a, b FROM (
            SELECT min(rid) OVER w AS a, rid AS b,
                   coalesce(min(vat_key) OVER w = max(vat_key) OVER w, TRUE) AS one_vat
            FROM _crec WHERE name_key IS NOT NULL AND (NOT generic_name OR city_key IS NOT NULL)
            WINDOW w AS (PARTITION BY name_key, CASE WHEN generic_name THEN city_key END)
        ) WHERE one_vat"""),
               SqlStep("companies.labels", "CREATE OR REPLACE TEMP TABLE _clabel AS "
                                           "SELECT rid, rid AS cid FROM _crec"))
    rounds = 0
    while True:
        rounds += 1
        engine.run(SqlStep("companies.propagate", """
            CREATE OR REPLACE TEMP TABLE _cnext AS
            WITH e AS (SELECT a, b FROM _cedges UNION ALL SELECT b, a FROM _cedges)
            SELECT l.rid, least(l.cid, coalesce(min(n.cid), l.cid)) AS cid
            FROM _clabel l LEFT JOIN e ON e.a = l.rid LEFT JOIN _clabel n ON n.rid = e.b
            GROUP BY l.rid, l.cid"""))
        changed = engine.scalar(SqlStep("companies.changed_labels",
                                        "SELECT count(*) FROM _cnext n JOIN _clabel l USING (rid) "
                                        "WHERE n.cid <> l.cid"))
        engine.run(SqlStep("companies.next_labels",
                           "CREATE OR REPLACE TEMP TABLE _clabel AS SELECT * FROM _cnext"))
        if not changed or rounds > 100:
            return rounds


def resolve_companies(engine: Engine, deployment: Deployment, run_at: dt.datetime) -> dict:
    """Rebuild ``core.company_sources``, ``core.companies`` and their field lineage."""
    engine = as_engine(engine)
    engine.run(SqlStep("companies.records", """
        CREATE OR REPLACE TEMP TABLE _crec AS
        SELECT row_number() OVER (ORDER BY source, source_record_id) AS rid,
               source, source_record_id, vat_key, name_key, city_key, generic_name
        FROM staging.companies"""))
    rounds = _cluster(engine)
    prev = ("SELECT source, source_record_id, company_id FROM core.company_sources"
            if engine.table_exists("core", "company_sources") else
            "SELECT NULL::VARCHAR source, NULL::VARCHAR source_record_id, NULL::BIGINT company_id WHERE false")
    engine.run(SqlStep("companies.members", f"""
        CREATE OR REPLACE TEMP TABLE _cmembers AS
        SELECT r.rid, r.source, r.source_record_id, l.cid, p.company_id AS old_id
        FROM _crec r JOIN _clabel l USING (rid) LEFT JOIN ({prev}) p USING (source, source_record_id)"""))
    rank_values = ", ".join(f"('{n}', {r})" for n, r in deployment.node_rank().items())
    golden = company_golden_fields(deployment)
    fields = list(golden)
    cast_cols = ", ".join(
        f"CAST({'s.vat_key' if f == 'vat_number' else 's.' + f} AS VARCHAR) AS \"{f}\"" for f in fields)
    with engine.together():
        # Stable ids exactly as for customers (largest overlap keeps its id).
        new_ids = assign_stable_ids(engine, "_cmembers", "_cids", "company_id")
        engine.replace_table("core.company_sources", SqlStep("companies.sources", """
            SELECT m.source, m.source_record_id, i.company_id, s.node,
                   CASE WHEN count(*) OVER (PARTITION BY m.cid) = 1 THEN 'singleton'
                        WHEN s.vat_key IS NOT NULL AND count(*) OVER (PARTITION BY m.cid, s.vat_key) > 1 THEN 'vat'
                        ELSE 'legal_name' END AS matched_by,
                   CAST(? AS TIMESTAMP) AS resolved_at
            FROM _cmembers m JOIN _cids i USING (cid)
            JOIN staging.companies s USING (source, source_record_id)
            ORDER BY i.company_id, m.source, m.source_record_id""", [run_at]))
        # Survivorship by the tree: best node, then most recent, then a fixed order.
        engine.run(SqlStep("companies.survivors", f"""
            CREATE OR REPLACE TEMP TABLE _cwinners AS
            WITH ranks(node, node_rank) AS (VALUES {rank_values}),
            cand AS (
                SELECT * FROM (
                    SELECT cs.company_id, s.source, s.source_record_id, s.node, r.node_rank,
                           s.updated_at, {cast_cols}
                    FROM staging.companies s JOIN core.company_sources cs USING (source, source_record_id)
                    JOIN ranks r ON r.node = s.node
                ) UNPIVOT (value FOR field IN ({", ".join(f'"{f}"' for f in fields)}))  -- standard form: Spark too
                WHERE trim(value) <> ''
            )
            SELECT company_id, field, value, node, source, source_record_id,
                   updated_at AS source_updated_at
            FROM cand
            QUALIFY row_number() OVER (PARTITION BY company_id, field
                                       ORDER BY node_rank, updated_at DESC NULLS LAST,
                                                source, source_record_id) = 1"""))
        engine.replace_table("core.company_field_lineage", SqlStep("companies.lineage", """
            SELECT company_id, field, node, source, source_record_id, source_updated_at,
                   'tree_priority' AS rule, CAST(? AS TIMESTAMP) AS decided_at
            FROM _cwinners ORDER BY company_id, field""", [run_at]))
        pivot = ",\n".join(f"CAST(max(value) FILTER (WHERE field = '{f}') AS {t}) AS \"{f}\""
                           for f, t in golden.items())
        engine.replace_table("core.companies", SqlStep("companies.golden", f"""
            WITH g AS (SELECT company_id, {pivot} FROM _cwinners GROUP BY company_id),
            members AS (
                SELECT cs.company_id, count(*) AS source_count,
                       list(DISTINCT cs.node ORDER BY cs.node) AS nodes, max(s.updated_at) AS updated_at
                FROM core.company_sources cs JOIN staging.companies s USING (source, source_record_id)
                GROUP BY cs.company_id
            )
            SELECT m.company_id, g.* EXCLUDE (company_id), m.source_count, m.nodes, m.updated_at,
                   CAST(? AS TIMESTAMP) AS golden_built_at
            FROM members m LEFT JOIN g USING (company_id) ORDER BY m.company_id""", [run_at]))
    engine.run(*(SqlStep("companies.drop_temp", f"DROP TABLE IF EXISTS {t}")
                 for t in ("_crec", "_cedges", "_clabel", "_cnext", "_cmembers", "_cids", "_cwinners")))
    row = engine.rows(SqlStep("companies.counts", """
        SELECT count(*), count(*) FILTER (WHERE source_count > 1), count(vat_number)
        FROM core.companies"""))[0]
    records = engine.scalar(SqlStep("companies.records_count",
                                    "SELECT count(*) FROM core.company_sources"))
    return {"companies": int(row[0]), "company_records": int(records),
            "merged_companies": int(row[1]), "with_vat": int(row[2]), "rounds": rounds,
            "new_company_ids": int(new_ids)}


def build_company_contacts(engine: Engine, deployment=None) -> dict:
    """``core.company_contacts``: the customer behind each linked company user, with the
    company user's extended properties (they belong to the person *in* the company)."""
    engine = as_engine(engine)
    props = "".join(f', u."{p.name}"' for p in
                    (deployment.properties_of("company_user") if deployment is not None else []))
    with engine.together():
        engine.replace_table("core.company_contacts", SqlStep("companies.contacts", f"""
            SELECT cs.customer_id, ks.company_id, u.role, u.source, u.source_record_id, u.linked_by{props}
            FROM staging.company_users u
            JOIN core.customer_sources cs USING (source, source_record_id)
            JOIN core.company_sources ks
              ON ks.source = u.company_source AND ks.source_record_id = u.company_record_id
            ORDER BY ks.company_id, cs.customer_id, u.source, u.source_record_id"""))
    row = engine.rows(SqlStep("companies.contacts_counts",
                              "SELECT count(*), count(DISTINCT customer_id), count(DISTINCT company_id) "
                              "FROM core.company_contacts"))[0]
    return {"links": int(row[0]), "people": int(row[1]), "companies_with_people": int(row[2])}


COWORKERS_VIEW = """
CREATE OR REPLACE VIEW marts.coworkers AS
WITH cc AS (SELECT DISTINCT customer_id, company_id FROM core.company_contacts)
SELECT a.customer_id, b.customer_id AS coworker_id, a.company_id
FROM cc a JOIN cc b ON a.company_id = b.company_id AND a.customer_id <> b.customer_id
"""


def build_coworkers(engine: Engine) -> dict:
    """``marts.coworkers``: a view, always as current as ``core.company_contacts``."""
    engine = as_engine(engine)
    engine.run(SqlStep("companies.coworkers_view", COWORKERS_VIEW))
    row = engine.rows(SqlStep("companies.coworker_counts", "SELECT count(*), count(DISTINCT customer_id) "
                              "FROM marts.coworkers"))[0]
    return {"coworker_pairs": int(row[0]), "people_with_coworkers": int(row[1])}


# Each company field of the card, as read from the company (c) or the link (cc).
_CARD_COMPANY_EXPR = {
    "company_id": "cc.company_id", "company_name": "c.legal_name", "company_vat": "c.vat_number",
    "company_city": "c.city", "company_province": "c.province",
    "company_sector_macro": "c.sector_macro", "company_sector_micro": "c.sector_micro",
    "company_type": "c.company_type", "company_revenue": "c.revenue",
    "company_employees": "c.employees", "company_role": "cc.role",
}


def _card_company_names(deployment=None) -> list[str]:
    """The card's company fields in card order, co-worker count last."""
    fields = card_company_fields(deployment) if deployment is not None else CARD_COMPANY_FIELDS
    return [f for f in fields if f != "coworker_count"]


def card_company_columns(deployment=None) -> str:
    """The company columns of the card (co-worker count 0 when none)."""
    return ", ".join([f"k.{f}" for f in _card_company_names(deployment)]
                     + ["coalesce(k.coworker_count, 0) AS coworker_count"])


CARD_COMPANY_COLUMNS = card_company_columns()


def card_company_sql(deployment=None) -> str:
    """Per customer, their company (the lowest company id when several) and co-worker count:
    joined onto the contact card. With ``deployment``: switched-off company properties
    left out, each extended company property as ``company_<name>``."""
    names = _card_company_names(deployment)
    inner = ", ".join(f'{_CARD_COMPANY_EXPR.get(f, "c." + chr(34) + f[len("company_"):] + chr(34))} AS {f}'
                      for f in names if f != "company_id")
    outer = ", ".join(names)
    return f"""
        SELECT customer_id, {outer}, coalesce(w.coworker_count, 0) AS coworker_count
        FROM (
            SELECT cc.customer_id, cc.company_id, {inner}
            FROM core.company_contacts cc JOIN core.companies c USING (company_id)
            QUALIFY row_number() OVER (PARTITION BY cc.customer_id
                                       ORDER BY cc.company_id, cc.role NULLS LAST) = 1
        ) p
        LEFT JOIN (SELECT customer_id, count(DISTINCT coworker_id) AS coworker_count
                   FROM marts.coworkers GROUP BY customer_id) w USING (customer_id)"""


# --------------------------------------------------------------------------- #
# Potential companies
# --------------------------------------------------------------------------- #
_POTENTIAL_FIELDS = ("legal_name", "vat_number", "email", "phone", "city", "region", "province",
                     "country", "sector_macro", "sector_micro", "source_macro", "source_micro",
                     "updated_at")


def _potential_columns(deployment=None) -> str:
    """The registry's fields: switched-off ones left out, extended properties added."""
    off = switched_off(deployment, "potential_company") if deployment is not None else set()
    cols = [("p.vat_key AS vat_number" if f == "vat_number" else f"p.{f}")
            for f in _POTENTIAL_FIELDS if f not in off]
    if deployment is not None:
        cols += [f'p."{prop.name}"' for prop in deployment.properties_of("potential_company")]
    return ", ".join(cols)


def build_potential_companies(engine: Engine, run_at: dt.datetime, deployment=None) -> dict:
    """``core.potential_companies``: purchased lists, marked registered when a company
    with the same VAT (else the same normalised legal name, if it names one company)
    exists in ``core.companies``. The first time of registration is kept across runs."""
    engine = as_engine(engine)
    prev = ("SELECT source, source_record_id, registered_at FROM core.potential_companies"
            if engine.table_exists("core", "potential_companies") else
            "SELECT NULL::VARCHAR source, NULL::VARCHAR source_record_id, NULL::TIMESTAMP registered_at "
            "WHERE false")
    have_companies = engine.table_exists("core", "company_sources")
    keys = ("""SELECT DISTINCT s.vat_key, s.name_key, cs.company_id FROM staging.companies s
               JOIN core.company_sources cs USING (source, source_record_id)"""
            if have_companies else
            "SELECT NULL::VARCHAR vat_key, NULL::VARCHAR name_key, NULL::BIGINT company_id WHERE false")
    with engine.together():
        engine.replace_table("core.potential_companies", SqlStep("companies.potential", f"""
            WITH k AS ({keys}),
            by_vat AS (SELECT vat_key, min(company_id) AS company_id FROM k
                       WHERE vat_key IS NOT NULL GROUP BY ALL),
            by_name AS (SELECT name_key, min(company_id) AS company_id FROM k
                        WHERE name_key IS NOT NULL GROUP BY ALL HAVING count(DISTINCT company_id) = 1),
            p AS (
                SELECT p.*, coalesce(v.company_id, CASE WHEN p.vat_key IS NULL OR NOT EXISTS (
                                SELECT 1 FROM k WHERE k.name_key = p.name_key AND k.vat_key IS NOT NULL
                                AND k.vat_key <> p.vat_key) THEN n.company_id END) AS registered_company_id,
                       CASE WHEN v.company_id IS NOT NULL THEN 'vat'
                            WHEN n.company_id IS NOT NULL THEN 'legal_name' END AS registered_by
                FROM staging.potential_companies p
                LEFT JOIN by_vat v ON v.vat_key = p.vat_key
                LEFT JOIN by_name n ON n.name_key = p.name_key AND NOT p.generic_name
            )
            SELECT p.source, p.source_record_id, p.node, {_potential_columns(deployment)},
                   CASE WHEN p.registered_company_id IS NULL THEN 'potential' ELSE 'registered' END AS status,
                   p.registered_company_id,
                   CASE WHEN p.registered_company_id IS NOT NULL THEN p.registered_by END AS registered_by,
                   CASE WHEN p.registered_company_id IS NOT NULL
                        THEN coalesce(prev.registered_at, CAST(? AS TIMESTAMP)) END AS registered_at
            FROM p LEFT JOIN ({prev}) prev USING (source, source_record_id)
            ORDER BY p.source, p.source_record_id""", [run_at]))
    row = engine.rows(SqlStep("companies.potential_counts",
                              "SELECT count(*), count(*) FILTER (WHERE status = 'registered') "
                              "FROM core.potential_companies"))[0]
    return {"potential_companies": int(row[0]), "registered": int(row[1]),
            "still_potential": int(row[0] - row[1])}
