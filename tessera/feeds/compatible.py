"""The "compatible" export of a registry ([Sendero] "modalità compatibile"): the golden
records of B2C users, B2B companies, B2B company users or potential companies, written
in the layout of that registry's import (the headers of ``tessera template``), so that
the import of the same registry reads the file back unchanged: a backup that restores.

The file is CSV (``;``, ``"``, UTF-8, a header row); dates are ``dd/mm/YYYY`` and times
``dd/mm/YYYY HH:MM:SS``, as :func:`compatible_source` declares them to the import.
``source_record_id`` (``codice``) is the golden id, so a re-import matches the same
records. Consent is written as ``true`` / ``false`` (granted / withdrawn or denied) and
left empty when unknown. The "free" export (chosen fields) is an ordinary feed
(``feeds.yaml``).

What the golden records do not keep is written empty: a company user's own sector and
education (Tessera keeps the company's), a B2C user's record ids in other sources.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from tessera.engine import Engine, SqlStep, as_engine
from tessera.feeds.files import published, sha256_file
from tessera.feeds.formats import FileStats, schema_of
from tessera.ingest.templates import REGISTRY_ENTITY, registry_columns
from tessera.settings import CsvDialect, Source

DATE_FORMAT = "%d/%m/%Y"
TIMESTAMP_FORMAT = "%d/%m/%Y %H:%M:%S"
_CSV = {"delimiter": ";", "quote": '"', "header": True}
_CONSENT = ("CASE {0} WHEN 'granted' THEN TRUE WHEN 'withdrawn' THEN FALSE "
            "WHEN 'denied' THEN FALSE END")

# registry -> (relation, the expression of each field that is not a column of the same name)
_FROM = {
    "b2c_users": (
        "core.customers g WHERE g.customer_id NOT IN (SELECT customer_id FROM core.company_contacts)",
        {"source_record_id": "CAST(g.customer_id AS VARCHAR)",
         "consent_email": _CONSENT.format("g.email_consent"),
         "consent_sms": _CONSENT.format("g.sms_consent")}),
    "b2b_companies": (
        "core.companies g",
        {"source_record_id": "CAST(g.company_id AS VARCHAR)"}),
    "b2b_company_users": (
        "core.customers g JOIN core.company_contacts cc ON cc.customer_id = g.customer_id "
        "JOIN core.companies co ON co.company_id = cc.company_id",
        {"source_record_id": "CAST(g.customer_id AS VARCHAR)", "company_name": "co.legal_name",
         "company_vat": "co.vat_number", "role": "cc.role",
         "consent_email": _CONSENT.format("g.email_consent"),
         "consent_sms": _CONSENT.format("g.sms_consent")}),
    "potential_companies": ("core.potential_companies g", {}),
}
_ORDER = {"b2c_users": "g.customer_id", "b2b_companies": "g.company_id",
          "b2b_company_users": "g.customer_id, co.company_id",
          "potential_companies": "g.source, g.source_record_id"}


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _table_columns(engine: Engine, table: str) -> set[str]:
    schema, name = table.split(".")
    return {r[0] for r in engine.rows(SqlStep(
        "compatible.columns", "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = ? AND table_name = ?", [schema, name]))}


def compatible_step(engine: Engine, deployment, registry: str) -> SqlStep:
    """The registry's golden records, one column per import header, typed."""
    relation, special = _FROM[registry]
    table = relation.split()[0]
    have = _table_columns(engine, table)
    cols = []
    for col in registry_columns(deployment, registry):
        if col.field in special:
            expr = special[col.field]
        elif col.field in have:
            expr = f"g.{_q(col.field)}"
        else:
            expr = "NULL"
        cols.append(f"{expr} AS {_q(col.header)}")
    return SqlStep(f"compatible.{registry}",
                   f"SELECT {', '.join(cols)} FROM {relation} ORDER BY {_ORDER[registry]}")


def _text(name: str, t: pa.DataType) -> str:
    q = _q(name)
    if pa.types.is_date(t):
        return f"strftime({q}, '{DATE_FORMAT}')"
    if pa.types.is_timestamp(t):
        return f"strftime(CAST({q} AS TIMESTAMP), '{TIMESTAMP_FORMAT}')"
    if pa.types.is_boolean(t):
        return f"CASE WHEN {q} THEN 'true' WHEN NOT {q} THEN 'false' END"
    return f"CAST({q} AS VARCHAR)"


def compatible_export(engine: Engine, deployment, registry: str, path: Path) -> FileStats:
    """Write the registry's compatible export to ``path`` (atomically)."""
    if registry not in _FROM:
        raise ValueError(f"unknown registry '{registry}' (one of {', '.join(_FROM)})")
    engine = as_engine(engine)
    step = compatible_step(engine, deployment, registry)
    schema = schema_of(engine, step)
    text = SqlStep(step.name + ".text", f"SELECT {', '.join(f'{_text(f.name, f.type)} AS {_q(f.name)}' for f in schema)} "
                                        f"FROM ({step.sql})", step.params)
    with published(path) as tmp:
        rows = engine.copy_to(text, tmp, "csv", csv=_CSV)
    return FileStats(path.name, int(rows), sha256_file(path))


def compatible_source(deployment, registry: str, name: str, node: str, path: str) -> Source:
    """The csv source that imports a registry's compatible export."""
    cols = registry_columns(deployment, registry)
    return Source(name=name, entity=REGISTRY_ENTITY[registry], node=node, format="csv", path=path,
                  csv=CsvDialect(delimiter=_CSV["delimiter"], quote=_CSV["quote"], encoding="utf-8"),
                  date_format=DATE_FORMAT, timestamp_format=TIMESTAMP_FORMAT,
                  columns={c.field: c.header for c in cols if c.field})


def compatible_source_yaml(source: Source) -> str:
    """The sources.yaml entry of :func:`compatible_source`, to paste into a configuration."""
    lines = [f"  - name: {source.name}", f"    entity: {source.entity}", f"    node: {source.node}",
             "    format: csv", f'    path: "{source.path}"',
             f"    csv: {{delimiter: \"{_CSV['delimiter']}\", encoding: utf-8}}",
             f'    date_format: "{source.date_format}"',
             f'    timestamp_format: "{source.timestamp_format}"', "    columns:"]
    lines += [f"      {k}: {v}" for k, v in source.columns.items()]
    return "\n".join(lines) + "\n"
