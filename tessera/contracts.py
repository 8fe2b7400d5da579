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
    # ops
    "file": "landing file, relative to the landing folder",
    "batch_id": "run (Dagster run id) that loaded the file",
    "status": "outcome (import report: loaded / empty / failed / duplicate_file; predictions: "
              "scored / not_enough_history / no_purchases; potential companies: potential / registered)",
    "records": "records found (import report) or source records involved",
    "new": "records seen for the first time", "updated": "records whose content changed",
    "unchanged": "records sent again with the same content", "rejected": "records refused (see ops.rejects)",
    "suppressed": "records dropped because they carry an erased identifier",
    "sha256": "fingerprint of the file's content", "message": "why a file failed or was a duplicate",
    "loaded_at": "when the file was loaded", "reason": "why it was refused or decided (never the value)",
    "rejected_at": "when it was refused",
    # golden record, consent, card
    "email_consent": "e-mail consent: granted / withdrawn / unknown",
    "sms_consent": "SMS consent: granted / withdrawn / unknown",
    "email_hard_bounced": "the golden e-mail has a hard bounce",
    "order_number": "orders of the customer", "order_summary": "total spent over all orders",
    "order_avg": "average order amount", "first_order_date": "date of the first order",
    "last_order_date": "date of the latest order", "event_count": "behavioural events linked to the customer",
    "last_event_at": "time of the latest event", "page_views": "page view events",
    "email_opens": "e-mail open events", "note_count": "CRM notes on the customer",
    "last_note_at": "time of the latest CRM note", "open_tasks": "CRM tasks still open",
    "next_task_due_at": "due time of the next open CRM task",
    "company_name": "golden company the person works for", "company_vat": "VAT number of that company",
    "company_city": "city of that company", "company_province": "province of that company",
    "company_sector_macro": "sector (macro) of that company", "company_sector_micro": "sector (micro) of that company",
    "company_type": "type of that company", "company_revenue": "revenue of that company",
    "company_employees": "employees of that company", "company_role": "the person's role at that company",
    "coworker_count": "other people of the same company", "coworker_id": "customer id of a co-worker",
    "role": "the person's role at the company", "linked_by": "identifier that linked the row to its customer or company",
    "channel": "channel (email / sms)", "state": "state on the channel", "kind": "kind of the row",
    "explicit": "an explicit statement of the person (not inferred)", "occurred_at": "when it happened",
    "since": "when the current state began", "events": "consent events behind the state",
    "hard_bounces": "hard bounces of the e-mail", "soft_bounces": "soft bounces of the e-mail",
    "campaigns_bounced": "campaigns that bounced", "bounced_in_last_3": "bounced in the last three campaigns",
    "last_bounced_at": "time of the latest bounce",
    "field": "field concerned (canonical name; * for a whole record or file)",
    "source_updated_at": "update time of the winning record",
    "rule": "rule that decided (identity rule, survivorship step, score rule)",
    "decided_at": "when it was decided",
    "order_id": "order id in its source", "event_id": "event id in its source",
    "note_id": "note id in its source", "task_id": "task id in its source",
    # identity
    "logged_at": "when the event was logged", "run_key": "run that logged it",
    "event": "what happened (merged / split / refused)", "other_customer_id": "the other customer concerned",
    "evidence": "why (rule and counts; no personal values)", "score": "score (points, match weight in bits, "
    "or a recommendation's score)", "linked_at": "when the link was made", "refused_at": "when the merge was refused",
    # marketing
    "recency_days": "days since the latest order", "frequency": "orders in the RFM window",
    "monetary": "amount spent in the RFM window", "r_score": "recency quintile (5 = most recent)",
    "f_score": "frequency quintile (5 = most frequent)", "m_score": "monetary quintile (5 = highest)",
    "rfm_score": "R, F and M scores together", "rfm_group": "RFM group name",
    "score_type": "score type (scoring.yaml)", "threshold": "threshold crossed", "action": "action fired",
    "target": "action's target (tag, feed, notification)", "previous_score": "score before the crossing",
    "stage": "funnel stage (stages.yaml)", "stage_rank": "stage's position in the funnel",
    "contacts": "contacts counted", "at_or_beyond": "contacts at this stage or a later one",
    "entered_on": "day the row's state began", "left_on": "day it ended (empty while current)",
    # predictions and recommendations
    "purchases": "purchases so far", "days_since_last_purchase": "days since the latest purchase",
    "p_alive": "probability the customer is still active (BG/NBD)",
    "expected_purchases_30d": "expected purchases in the next 30 days",
    "expected_purchases_90d": "expected purchases in the next 90 days",
    "expected_purchases_365d": "expected purchases in the next 365 days",
    "expected_purchases": "expected purchases in the prediction window",
    "expected_order_value": "expected value of an order (Gamma-Gamma)",
    "clv": "customer lifetime value over the horizon, discounted",
    "purchase_propensity": "probability of buying in the window", "churn_risk": "probability of churning",
    "churn_band": "churn risk band (low / medium / high)", "model_version": "version of the models",
    "model": "model name", "is_baseline": "a baseline the model is compared with", "metric": "metric name",
    "value": "metric or parameter value", "cutoff_date": "back-test cut-off day",
    "window_days": "prediction window in days", "customers": "customers counted", "positives": "positive cases",
    "parameter": "model parameter name", "rank": "position in the list (1 = best)",
    "product_id": "product id", "mode": "evaluation mode", "k": "list length evaluated",
    "hit_rate": "share of contacts with a hit", "precision_at_k": "precision at k", "recall_at_k": "recall at k",
    "map_at_k": "mean average precision at k", "ndcg_at_k": "NDCG at k", "coverage": "share of the catalogue recommended",
    "origin": "where it came from", "occurrences": "times seen",
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
