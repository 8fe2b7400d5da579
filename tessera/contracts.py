"""Data contracts: the canonical shape of each entity and of each published table.

Entity contracts (``data_contracts/entities/*.yaml``) say what a source must deliver
after its column mapping: types, required fields, formats, allowed values. They are
enforced at ingestion, per field but in set-based SQL (see ``tessera.ingest.load``).
Published-table contracts (``data_contracts/published/*.yaml``) list the columns that
downstream tools rely on; asset checks compare the warehouse against them so that a
rename shows up as a failed check, not as a broken export at a customer.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from tessera.yamlfile import ConfigError, load_yaml

CONTRACTS_DIR = Path(__file__).resolve().parents[1] / "data_contracts"

FieldType = Literal["string", "integer", "decimal", "date", "timestamp", "boolean"]
FieldFormat = Literal["email", "phone", "country", "vat"]

# DuckDB type for each contract type; decimals are fixed point so that sums of
# money are exact.
SQL_TYPES: dict[str, str] = {
    "string": "VARCHAR",
    "integer": "BIGINT",
    "decimal": "DECIMAL(18,2)",
    "date": "DATE",
    "timestamp": "TIMESTAMP",
    "boolean": "BOOLEAN",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldSpec(_Strict):
    type: FieldType = "string"
    required: bool = False
    format: FieldFormat | None = None
    allowed: list[str] | None = None
    # Labels accepted and replaced by their code before validation (tessera.ingest.lookups).
    # country / province: ISO 3166 (tessera.ingest.lookups); "<table>.macro" / "<table>.micro":
    # a settings table of the deployment (lookups.yaml), with ``parent`` naming the
    # field that holds the micro's macro.
    lookup: str | None = None
    parent: str | None = None
    description: str = ""


class EntityContract(_Strict):
    entity: str
    description: str = ""
    key: str = "source_record_id"
    fields: dict[str, FieldSpec]


class PublishedColumn(_Strict):
    name: str
    type: str
    description: str = ""


class PublishedContract(_Strict):
    table: str
    description: str = ""
    key: list[str] = []
    columns: list[PublishedColumn]


def _parse(model, path: Path):
    loaded = load_yaml(path)
    try:
        return model.model_validate(loaded.data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"{loaded.where(err['loc'])}: {err['msg']}") from None


@lru_cache(maxsize=None)
def entity_contracts(contracts_dir: str | None = None) -> dict[str, EntityContract]:
    base = Path(contracts_dir) if contracts_dir else CONTRACTS_DIR
    out: dict[str, EntityContract] = {}
    for path in sorted((base / "entities").glob("*.yaml")):
        contract = _parse(EntityContract, path)
        out[contract.entity] = contract
    return out


@lru_cache(maxsize=None)
def published_contracts(contracts_dir: str | None = None) -> dict[str, PublishedContract]:
    base = Path(contracts_dir) if contracts_dir else CONTRACTS_DIR
    out: dict[str, PublishedContract] = {}
    for path in sorted((base / "published").glob("*.yaml")):
        contract = _parse(PublishedContract, path)
        out[contract.table] = contract
    return out


# Columns every layer shares, described once (the contracts describe the entity fields).
COMMON_COLUMNS: dict[str, str] = {
    "_record_hash": "fingerprint of the record's content; a new version is stored only when it changes",
    "_file": "landing file the record came from, relative to the landing folder",
    "_line": "physical line (or record position) where the record starts in its file",
    "_file_seq": "order of the file among the source's deliveries",
    "_batch_id": "run (Dagster run id) that loaded the record",
    "_loaded_at": "when the record was loaded",
    "source": "name of the source (sources.yaml)",
    "node": "node (data partition) of the source; the tree's priority ranks nodes",
    "customer_id": "stable id of the golden customer (person)",
    "company_id": "stable id of the golden company",
    "as_of_date": "business day the row describes (the run's partition)",
    "segment": "segment name (segments.yaml)",
    "feed": "feed name (feeds.yaml)",
    "email_key": "match key: e-mail trimmed and lower-cased; empty for junk addresses",
    "mobile_key": "match key: mobile in E.164",
    "phone_key": "match key: phone in E.164",
    "first_key": "match key: first name folded (accents, case, spaces)",
    "last_key": "match key: last name folded (accents, case, spaces)",
    "name_key": "match key: the name folded (accents, case, spaces)",
    "tax_code_key": "match key: tax code upper-case without spaces",
    "postcode_key": "match key: postcode upper-case without spaces",
    "address_key": "match key: address folded",
    "city_key": "match key: city folded",
    "customer_ref_key": "match key: the referenced contact record id",
    "erp_key": "match key: ERP id upper-case, trimmed",
    "vat_key": "match key: VAT number (IT + 11 digits, or a foreign VAT id)",
    "completeness": "share of the profile fields the record fills (a golden-record tie-break)",
    "matched_by": "rule that put the record in its cluster",
    "resolved_at": "when identity resolution assigned the record",
    "golden_built_at": "when the golden table was built",
    "updated_at": "latest update time of the record (or of the person's records)",
    "source_record_id": "the record's id in its source",
    "source_count": "source records merged into this row",
    "nodes": "nodes the row's records come from",
    "rows": "rows written",
    "level": "product line level (macro / micro)",
}

# Tables built from an entity's records whose name is not the entity's plural.
_TABLE_ENTITY = {
    "core.customers": "contact", "marts.contact_cards": "contact", "core.orders": "order",
    "core.events": "event", "core.notes": "note", "core.tasks": "task",
    "core.companies": "company", "core.potential_companies": "potential_company",
}


def _field_text(name: str, spec: FieldSpec) -> str:
    """The contract's description, or what the contract says of the field when it has none."""
    if spec.description:
        return spec.description
    facts = [spec.type]
    if spec.format:
        facts.append(f"format {spec.format}")
    if spec.allowed:
        facts.append("one of " + ", ".join(spec.allowed))
    if spec.lookup:
        facts.append(f"codes from lookup {spec.lookup}")
    if spec.required:
        facts.append("required")
    return f"{name.replace('_', ' ')} ({'; '.join(facts)})"


def table_entity(table: str) -> str | None:
    """The entity a warehouse table holds records of (``staging.order_lines`` -> ``order_line``)."""
    if table in _TABLE_ENTITY:
        return _TABLE_ENTITY[table]
    schema, _, name = table.partition(".")
    plural = {(e[:-1] + "ies") if e.endswith("y") else e + "s": e for e in entity_contracts()}
    return plural.get(name) if schema in ("staging", "core") else None


def column_descriptions(table: str, entity: str | None = None,
                        extra: dict[str, str] | None = None) -> dict[str, str]:
    """Column -> description for a warehouse table, for the Dagster UI's column schema.

    First the published contract of the table, then ``extra`` (a deployment's extended
    properties), then the entity contract of the records it holds (``entity``, or guessed
    from the table's name), then the columns every layer shares. A column none of them
    knows gets no entry.
    """
    out: dict[str, str] = dict(COMMON_COLUMNS)
    entity = entity or table_entity(table)
    contract = entity_contracts().get(entity) if entity else None
    if contract:
        out.update({n: _field_text(n, spec) for n, spec in contract.fields.items()})
    out.update({k: v for k, v in (extra or {}).items() if v})
    published = published_contracts().get(table)
    if published:
        out.update({c.name: c.description for c in published.columns if c.description})
    return out
