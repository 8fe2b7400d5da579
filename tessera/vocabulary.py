"""The shared vocabulary of the product: names every stage agrees on.

Why a module of its own: these catalogues (the contact card's fields and their types, the
staging table of each entity, which fields carry which identifier, a source's fields) are
read by configuration loading, ingestion, identity, privacy, marketing and feeds alike.
When each lived inside the first module that needed it, the others had to import that
module, and the imports ran in circles. This module imports nothing of ours but the
contracts, so any layer may import it.
"""

from __future__ import annotations

from tessera.contracts import FieldSpec, entity_contracts

# ---------------------------------------------------------------- the contact card's fields

# Golden profile fields: the contact contract minus per-source bookkeeping.
GOLDEN_FIELDS: dict[str, str] = {
    "erp_id": "string", "email": "string", "first_name": "string", "last_name": "string",
    "mobile": "string", "phone": "string", "address": "string", "postcode": "string",
    "city": "string", "province": "string", "country": "string", "birth_date": "date",
    "gender": "string", "tax_code": "string", "owner": "string",
}


# Bookkeeping fields of the contact contract: per source record, never golden.
_CONTACT_BOOKKEEPING = ("source_record_id", "consent_email", "consent_sms", "updated_at")


def sendero_contact_fields() -> dict[str, str]:
    """The contact contract's fields beyond the base profile ([Sendero]'s B2C list:
    profession, marital status, education, user type, interest and source macro/micro
    pairs, permanent-form source type, registration detail): field -> type."""
    fields = entity_contracts()["contact"].fields
    return {f: spec.type for f, spec in fields.items()
            if f not in GOLDEN_FIELDS and f not in _CONTACT_BOOKKEEPING}


def profile_fields(deployment) -> dict[str, str]:
    """The Sendero profile fields some contact (or company user) source of the deployment
    maps: they become golden fields, card fields and rule fields. A deployment that maps
    none keeps the base tables, column for column."""
    mapped = {f for s in getattr(deployment, "sources", []) or []
              if getattr(s, "entity", None) in CONTACT_ENTITIES for f in s.columns}
    return {f: t for f, t in sendero_contact_fields().items() if f in mapped}


CARD_EXTRA_FIELDS: dict[str, str] = {
    "customer_id": "integer",
    "email_consent": "string",
    "sms_consent": "string",
    "email_hard_bounced": "boolean",
    "source_count": "integer",
    "order_number": "integer",
    "order_summary": "decimal",
    "order_avg": "decimal",
    "first_order_date": "date",
    "last_order_date": "date",
    "event_count": "integer",
    "last_event_at": "timestamp",
    "page_views": "integer",
    "email_opens": "integer",
    "updated_at": "timestamp",
    # CRM annotations: counts and dates only, never a note's text
    "note_count": "integer",
    "last_note_at": "timestamp",
    "open_tasks": "integer",
    "next_task_due_at": "timestamp",
}


RFM_FIELDS: dict[str, str] = {
    "recency_days": "integer", "frequency": "integer", "monetary": "decimal",
    "r_score": "integer", "f_score": "integer", "m_score": "integer", "rfm_group": "string",
}


# Marketing fields of the day: stage (from stages.yaml) and tags (set by score thresholds).
MARKETING_FIELDS: dict[str, str] = {"stage": "string", "stage_rank": "integer", "tags": "list"}


STAGE_FIELDS = ("stage", "stage_rank")

# Fields only feeds carry (tessera.feeds.selection): the score-threshold action that
# pushed a contact to the feed, and the day's recommendation list.
ACTION_FIELDS: dict[str, str] = {"action_score_type": "string", "action_threshold": "decimal",
                                 "action_score": "decimal", "action_previous_score": "decimal"}
FEED_FIELDS: dict[str, str] = {**ACTION_FIELDS, "recommended_products": "list"}


# The day's predictions (predictions.customer_predictions), for rules and feeds of a
# deployment with order sources: field -> type; PREDICTION_COLUMNS: field -> stored column.
PREDICTION_FIELDS: dict[str, str] = {
    "prediction_status": "string", "p_alive": "decimal", "expected_purchases_30d": "decimal",
    "expected_purchases_90d": "decimal", "expected_purchases_365d": "decimal",
    "expected_purchases": "decimal", "expected_order_value": "decimal", "clv": "decimal",
    "purchase_propensity": "decimal", "churn_risk": "decimal", "churn_band": "string",
}
PREDICTION_COLUMNS: dict[str, str] = {f: ("status" if f == "prediction_status" else f)
                                      for f in PREDICTION_FIELDS}


def prediction_select(alias: str) -> str:
    """The prediction fields as select items of the table aliased ``alias``."""
    return ", ".join(f"{alias}.{col} AS {f}" for f, col in PREDICTION_COLUMNS.items())


def score_fields(deployment) -> dict[str, str]:
    scores = list(getattr(deployment, "scores", []) or [])
    out = {f"score_{s.name}": "decimal" for s in scores}
    if scores:
        out["score"] = "decimal"  # the first score type, the one analysts mean by "score"
    return out


def contact_golden_fields(deployment) -> dict[str, str]:
    """The golden record's profile fields: the base ones not switched off, the Sendero
    fields the sources map, the extended properties (field -> contract type)."""
    off = switched_off(deployment, "contact")
    fields = {f: t for f, t in GOLDEN_FIELDS.items() if f not in off}
    fields.update(profile_fields(deployment))
    for prop in deployment.properties_of("contact"):
        fields[prop.name] = prop.field_type
    return fields


def card_company_fields(deployment) -> dict[str, str]:
    """The company fields of the contact card: the base ones whose company property is
    on, plus ``company_<property>`` for each extended company property."""
    off = switched_off(deployment, "company")
    fields = {f: t for f, t in CARD_COMPANY_FIELDS.items()
              if CARD_COMPANY_SOURCE.get(f) not in off}
    for prop in deployment.properties_of("company"):
        fields[f"company_{prop.name}"] = prop.field_type
    return fields


def field_catalogue(deployment) -> dict[str, str]:
    cat = contact_golden_fields(deployment)
    cat.update(CARD_EXTRA_FIELDS)
    if any(getattr(s, "entity", None) == "company_user" for s in getattr(deployment, "sources", []) or []):
        cat.update(card_company_fields(deployment))
    cat.update(RFM_FIELDS)
    cat.update(score_fields(deployment))
    cat.update(MARKETING_FIELDS)
    if any(getattr(s, "entity", None) == "order" for s in getattr(deployment, "sources", []) or []):
        cat.update(PREDICTION_FIELDS)
    return cat


# ---------------------------------------------------------------- companies on the card

COMPANY_FIELDS = {
    "legal_name": "VARCHAR", "vat_number": "VARCHAR", "erp_id": "VARCHAR", "email": "VARCHAR",
    "phone": "VARCHAR", "address": "VARCHAR", "postcode": "VARCHAR", "city": "VARCHAR",
    "region": "VARCHAR", "province": "VARCHAR", "country": "VARCHAR",
    "sector_macro": "BIGINT", "sector_micro": "BIGINT", "source_macro": "BIGINT",
    "source_micro": "BIGINT", "company_type": "VARCHAR", "revenue": "DECIMAL(18,2)",
    "employees": "BIGINT",
}


# Company fields on the contact card (and so in segment rules and feeds), with their
# segment-language type. Present when the deployment has company user sources.
CARD_COMPANY_FIELDS: dict[str, str] = {
    "company_id": "integer", "company_name": "string", "company_vat": "string",
    "company_city": "string", "company_province": "string", "company_sector_macro": "integer",
    "company_sector_micro": "integer", "company_type": "string", "company_revenue": "decimal",
    "company_employees": "integer", "company_role": "string", "coworker_count": "integer",
}


# The company property each card company field shows (a switched-off one leaves the card).
CARD_COMPANY_SOURCE: dict[str, str] = {
    "company_name": "legal_name", "company_vat": "vat_number", "company_city": "city",
    "company_province": "province", "company_sector_macro": "sector_macro",
    "company_sector_micro": "sector_micro", "company_type": "company_type",
    "company_revenue": "revenue", "company_employees": "employees",
}


def company_golden_fields(deployment) -> dict[str, str]:
    """The golden company's fields (field -> SQL type): the base ones not switched off,
    then the extended company properties."""
    off = switched_off(deployment, "company")
    fields = {f: t for f, t in COMPANY_FIELDS.items() if f not in off}
    for prop in deployment.properties_of("company"):
        fields[prop.name] = prop.sql_type
    return fields


# ---------------------------------------------------------------- entities and their tables

ENTITY_TABLES = {
    "contact": "contacts", "order": "orders", "order_line": "order_lines",
    "product": "products", "product_line": "product_lines", "event": "events",
    "bounce": "bounces", "unsubscribe": "unsubscribes", "consent": "consents",
    "note": "notes", "task": "tasks",
    "service": "services", "service_line": "service_lines", "offer": "offers",
    "company": "companies", "company_user": "company_users",
    "potential_company": "potential_companies",
    "campaign_cost": "campaign_costs",
    "message": "messages", "app_event": "app_events", "detail": "contact_details",
}


# Company users are people too: their records also feed staging.contacts (the fields
# they share with a contact), so one e-mail in the B2C and the B2B registry is one customer.
CONTACT_ENTITIES = ("contact", "company_user")


# Which canonical fields carry which identifier kind, per entity.
IDENTIFIER_FIELDS: dict[str, dict[str, str]] = {
    "contact": {"email": "email", "mobile": "phone", "phone": "phone", "tax_code": "tax_code",
                "erp_id": "erp_id"},
    # company users are people: erased identifiers block them too
    "company_user": {"email": "email", "mobile": "phone", "phone": "phone", "erp_id": "erp_id"},
    "event": {"email": "email", "mobile": "phone"},
    "bounce": {"email": "email"},
    # a withdrawal names the person by whichever identifier its channel carries
    "unsubscribe": {"email": "email", "mobile": "phone", "erp_id": "erp_id"},
    "consent": {"email": "email", "mobile": "phone", "erp_id": "erp_id"},
    "order": {"customer_ref": "erp_id"},
    # the contact card's entities (tessera.card.contact_data): erased people are blocked
    "message": {"email": "email", "mobile": "phone"},
    "app_event": {"email": "email", "mobile": "phone"},
    "detail": {"email": "email", "mobile": "phone"},
}

# The per-contact entities of the contact card that name their person by identifiers
# (e-mail, phone, a contact record id): linked like events, erased like events.
CARD_ENTITIES = ("message", "app_event", "detail")

# SALESmanago's delivery status codes of a message (seed 003, the card's messages tab),
# with their meaning. An empty status is a message sent without an error.
MESSAGE_STATUSES = {
    "FP": "failed permanently: not delivered, not retried",
    "IE": "invalid e-mail address (syntax)",
    "OO": "opted out between queueing and sending",
    "PF": "product failed: no recommended products to fill the template, not sent",
    "TE": "template error (dynamic template), not sent, not retried",
    "TR": "template rejected: the contact did not meet the e-mail's conditions, not sent",
    "SF": "soft bounce: error talking to the server, not retried",
    "LF": "could not connect to the server",
    "HF": "hard bounce",
    "UF": "the e-mail address does not exist",
    "C": "cancelled mailing",
    "WFS": "queued, no attempt to send yet",
}


def source_fields(deployment, source) -> dict[str, FieldSpec]:
    """Contract fields of the source's entity plus the deployment's extended properties."""
    off = switched_off(deployment, source.entity)
    fields = {f: spec for f, spec in entity_contracts()[source.entity].fields.items() if f not in off}
    for prop in deployment.properties_of(source.entity):
        fields[prop.name] = prop.field_spec()
    return fields


def switched_off(deployment, entity: str) -> set[str]:
    """The entity's base properties the deployment switched off."""
    fn = getattr(deployment, "switched_off_of", None)
    return fn(entity) if fn else set()


# ---------------------------------------------------------------- tables keyed by customer

# Stored tables keyed by customer_id that outlive a run (days of marketing output, logs),
# and how each is re-keyed when customers merge (tessera.identity.rekey): the rows of a
# merged-away id move to the id that absorbed it, in the same run as the merge.
#   ("daily", keys): one row per (keys, customer): the survivor's own row wins a clash;
#   ("log", ()): every row moves;
#   ("intervals", keys): entered_on/left_on periods per (keys, customer) are united;
#   ("survivor_history", ()): the survivor's own history if it has one, else the moved one.
# Every ``exports.<feed>`` table with ``as_of_date`` is ("daily", ("as_of_date",)).
# Tables rebuilt from core.customer_sources each run (core.*, marts.*) need nothing.
CUSTOMER_KEYED_TABLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "marketing.rfm_scores": ("daily", ("as_of_date",)),
    "marketing.scores": ("daily", ("as_of_date", "score_type")),
    "marketing.score_actions": ("daily", ("as_of_date", "score_type", "threshold", "action", "target")),
    "marketing.stages": ("daily", ("as_of_date",)),
    "marketing.segment_members": ("daily", ("as_of_date", "segment")),
    "marketing.static_segment_base": ("daily", ("segment",)),
    "marketing.segment_history": ("intervals", ("segment",)),
    "marketing.stage_history": ("survivor_history", ()),
    "marketing.segment_overrides": ("log", ()),
    "ops.bulk_edits": ("log", ()),
    "predictions.customer_predictions": ("daily", ("as_of_date",)),
    # past days' lists: the survivor's own entry at each rank wins (today's are rebuilt)
    "recommendations.contact_products": ("daily", ("as_of_date", "kind", "rank")),
}
