"""A deployment's configuration: one folder of YAML files, validated when loaded.

The folder holds ``tessera.yaml`` (nodes, tree of priorities, extended properties,
identity settings), ``sources.yaml``, ``segments.yaml`` and ``feeds.yaml``. It is chosen
by ``TESSERA_CONFIG`` or the CLI's ``--config``; ``examples/demo`` is the demo's.

Every model forbids unknown keys: a typo such as ``delimter`` must fail at load time,
naming the file, the line and the key, instead of silently falling back to a default
and loading a file with the wrong dialect.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from tessera.contracts import SQL_TYPES, FieldType, entity_contracts
from tessera.yamlfile import ConfigError, LoadedYaml, load_yaml

_IDENT = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def _identifier(value: str) -> str:
    # Names become table, column and asset names: keep them to safe SQL identifiers so
    # they can be interpolated (quoted) without any risk of injection.
    if not _IDENT.match(value):
        raise ValueError(f"'{value}' is not a valid name (lower-case letters, digits, _)")
    return value


Identifier = Annotated[str, AfterValidator(_identifier)]

Entity = Literal[
    "contact", "order", "order_line", "product", "product_line", "event", "bounce",
    "unsubscribe", "consent", "note", "task", "service", "service_line", "offer",
    "company", "company_user", "potential_company",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Node(_Strict):
    name: Identifier
    description: str = ""


class Tree(_Strict):
    """Which node wins each golden field: ``priority`` lists nodes, strongest first."""

    priority: list[Identifier]
    field_rules: dict[str, Literal["priority", "most_recent"]] = {}


class ExtendedProperty(_Strict):
    name: Identifier
    type: FieldType = "string"
    description: str = ""

    @property
    def sql_type(self) -> str:
        return SQL_TYPES[self.type]


class SalesChannel(_Strict):
    """A named sales channel: a macro (1 e-commerce, 2 store, 3 phone, 4 mail) and
    optionally one micro under it (a store, a marketplace): what orders carry as
    channel_macro / channel_micro."""

    macro: int
    micro: int | None = None
    description: str = ""

# Normalised match keys of staging.contacts that rules, blocking and guards may name.
# ``names``: first and last name as a pair in either order (blocks swapped names together).
MatchKey = Literal[
    "erp_id", "email", "tax_code", "mobile", "phone", "first_name", "last_name",
    "birth_date", "postcode", "address", "city", "names",
]


class RecordRef(_Strict):
    """One source record, as (source, source_record_id)."""

    source: Identifier
    id: str = Field(min_length=1)


class Probabilistic(_Strict):
    """Fellegi-Sunter scoring of records that share no deterministic key.

    ``threshold`` is a match probability; the prior odds come from
    ``duplicate_share`` and the number of records, so the same setting means the same
    thing at 1,000 and at 10 million records. ``blocking`` lists key sets whose equal
    values make two records a candidate pair; blocks larger than ``max_block_size``
    records are skipped so that the cost stays near-linear.
    """

    enabled: bool = True
    threshold: float = Field(0.9, gt=0, lt=1)
    duplicate_share: float = Field(0.1, gt=0, lt=1)
    blocking: list[list[MatchKey]] = Field(
        default_factory=lambda: [
            ["names"], ["last_name", "birth_date"], ["first_name", "birth_date"],
            ["birth_date", "postcode"], ["last_name", "postcode"], ["mobile"], ["phone"], ["address"],
        ],
        min_length=1)
    max_block_size: int = Field(300, ge=2)


class IdentitySettings(_Strict):
    """How records become persons: ordered rules, scoring, protection, manual pairs."""

    # Ordered deterministic rules: records equal on every key of a set are linked.
    rules: list[list[MatchKey]] = Field(
        default_factory=lambda: [["erp_id"], ["email"], ["tax_code"], ["mobile", "last_name"]],
        min_length=1)
    probabilistic: Probabilistic = Probabilistic()
    # Merge protection: a cluster never holds two different values of these keys,
    # and never grows past max_cluster_size records. Refused merges are recorded.
    unique_per_cluster: list[MatchKey] = ["erp_id"]
    max_cluster_size: int = Field(50, ge=2)
    never_merge: list[tuple[RecordRef, RecordRef]] = []
    always_merge: list[tuple[RecordRef, RecordRef]] = []
    # Shared or placeholder values must never link two people (compared normalised:
    # lower-case, accents folded; phones by their digits).
    junk_emails: list[str] = []
    junk_email_locals: list[str] = ["test", "info", "noreply", "no-reply", "admin", "example"]
    junk_names: list[str] = [
        "gentile", "gentile cliente", "cliente", "nome", "cognome", "test", "prova", "xxx",
        "x", "na", "n a", "nd", "n d", "unknown", "sconosciuto", "anonimo", "null", "none",
        "mr", "mrs", "sig", "sigra", "dear customer", "customer",
    ]
    junk_phones: list[str] = ["0000000", "1234567", "123456789", "0123456789"]
    junk_tax_codes: list[str] = []


class NullRate(_Strict):
    """At most ``max_share`` of a staging table's rows may have this column empty."""

    max_share: float = Field(ge=0, le=1)
    # Blocking: a failure stops identity resolution; otherwise it is reported only.
    blocking: bool = False


# Null rates watched when a deployment says nothing about an entity: the fields that
# make a record useful downstream but that the contract cannot require.
DEFAULT_NULL_RATES: dict[str, dict[str, NullRate]] = {
    "contact": {"email": NullRate(max_share=0.5), "last_name": NullRate(max_share=0.5)},
    "order_line": {"product_id": NullRate(max_share=0.5)},
    "product": {"description": NullRate(max_share=0.5)},
    "product_line": {"description": NullRate(max_share=0.5)},
}


class EntityExpectations(_Strict):
    """Batch expectations of one staging table, run by great-expectations in an asset check.

    The row count must not fall below ``row_count_min_ratio`` of the previous load's;
    keys (``source``, ``source_record_id``) are never null and never duplicated (always
    blocking); ``null_rates`` bound the share of empty values per column (``None``: the
    entity's defaults, ``{}``: none).
    """

    row_count_min_ratio: float = Field(0.5, ge=0, le=1)
    row_count_blocking: bool = True
    null_rates: dict[Identifier, NullRate] | None = None

    def null_rates_of(self, entity: str) -> dict[str, NullRate]:
        return dict(DEFAULT_NULL_RATES.get(entity, {}) if self.null_rates is None else self.null_rates)


class CsvDialect(_Strict):
    delimiter: str = Field(",", min_length=1, max_length=1)
    quote: str = Field('"', min_length=1, max_length=1)
    escape: str | None = Field(None, min_length=1, max_length=1)
    encoding: Literal["utf-8", "utf-8-sig", "cp1250", "cp1252", "latin-1"] = "utf-8"
    header: bool = True


class XmlLayout(_Strict):
    record_tag: str
    # The <commons><table> value the file must declare (Sendero layout), if any.
    table: str | None = None


class XlsxLayout(_Strict):
    """Where the records are in a workbook, and the limits checked before opening it.

    RELIABILITY.md rule 8: a 5 kB workbook declaring the full sheet dimension became
    32.7 M cells, and zip ratios near 300x were measured. The archive's total
    uncompressed size and its compression ratio are checked from the zip directory
    before openpyxl sees the file, and no more than ``max_columns`` columns are read.
    """

    sheet: str = Field(min_length=1, max_length=31)
    header_row: int = Field(1, ge=1, le=1000)
    max_columns: int = Field(256, ge=1, le=16384)
    max_uncompressed_mb: int = Field(200, ge=1, le=4096)
    max_ratio: int = Field(100, ge=2, le=1000)


class ApiPull(_Strict):
    """A REST endpoint pulled on each run; every page is fetched before anything loads.

    The token never appears in configuration: ``token_env`` names the environment
    variable that holds it, and the Dagster resource reads it through ``dg.EnvVar`` so
    that only the variable's name is stored in run records (RELIABILITY.md rule 10).
    """

    url: str = Field(pattern=r"^https?://")
    pagination: Literal["page", "cursor", "link", "none"] = "page"
    page_size: int = Field(100, ge=1, le=10_000)
    page_param: str = "page"
    size_param: str = "page_size"
    first_page: int = Field(1, ge=0)
    cursor_param: str = "cursor"
    next_cursor_path: str = "next_cursor"
    # JSON path of the next page's URL; without it, the HTTP Link header (rel="next").
    next_link_path: str | None = None
    records_path: str = Field("data", description="dotted path of the list of records; '' = the body")
    auth_header: str = "Authorization"
    auth_scheme: str = "Bearer"
    token_env: str | None = Field(None, pattern=r"^[A-Z_][A-Z0-9_]{0,99}$")
    timeout_s: float = Field(30.0, gt=0, le=600)
    max_attempts: int = Field(5, ge=1, le=20)
    backoff_s: float = Field(1.0, ge=0, le=60)
    max_backoff_s: float = Field(60.0, ge=0, le=3600)
    max_pages: int = Field(100_000, ge=1)


class PushEndpoint(_Strict):
    """Records POSTed to ``tessera serve-push`` for this source land for the next batch.

    The token is scoped to one source, hence to that source's node: a sender holding it
    can write records of this source only. Like an api source's token it lives in an
    environment variable that configuration only names. Limits bound what one request
    can make the server hold in memory.
    """

    token_env: str = Field(pattern=r"^[A-Z_][A-Z0-9_]{0,99}$")
    max_body_kb: int = Field(1024, ge=1, le=65536)
    max_records: int = Field(10_000, ge=1, le=1_000_000)


class Source(_Strict):
    name: Identifier
    entity: Entity
    node: Identifier
    format: Literal["csv", "xml", "jsonl", "xlsx", "api", "push"]
    path: str = Field("", description="glob, relative to the landing folder (not for api/push)")
    csv: CsvDialect | None = None
    xml: XmlLayout | None = None
    xlsx: XlsxLayout | None = None
    api: ApiPull | None = None
    push: PushEndpoint | None = None

    @model_validator(mode="before")
    @classmethod
    def _push_lands_in_its_folder(cls, data):
        # Pushed records are files like any other: ingestion, the sensor and erasure
        # find them by this glob.
        if isinstance(data, dict) and data.get("format") == "push" and not data.get("path"):
            data = {**data, "path": f"_push/{data.get('name')}/*.jsonl"}
        return data
    columns: dict[str, str] = Field(description="canonical field -> source column / tag / JSON path")
    date_format: str = "%d/%m/%Y"
    timestamp_format: str = "%Y-%m-%dT%H:%M:%S"
    formats: dict[str, str] = {}
    decimal_separator: Literal[".", ","] = "."
    # What a bad value in an OPTIONAL field does: refuse the record (default), or empty
    # the value, keep the record and report the value in ops.rejects.
    invalid_values: Literal["reject_record", "drop_value"] = "reject_record"
    default_country: str = Field("IT", pattern=r"^[A-Z]{2}$")
    # Explicit label mapping per field, applied before lookups: {field: {their label: ours}}
    # (purchased lists' sector labels onto the deployment's sector table).
    value_map: dict[str, dict[str, str | int]] = {}
    customer_source: Identifier | None = None

    def format_of(self, field: str, ftype: str) -> str | None:
        if field in self.formats:
            return self.formats[field]
        if ftype == "date":
            return self.date_format
        if ftype == "timestamp":
            return self.timestamp_format
        return None


class SegmentDef(_Strict):
    name: Identifier
    description: str = ""
    # dynamic: recomputed every run; static: frozen at its first build, then changed only
    # by explicit additions / removals (``tessera segment add|remove``).
    kind: Literal["dynamic", "static"] = "dynamic"
    rule: dict[str, Any]


class ThresholdAction(_Strict):
    """One action fired once when a contact's score crosses a threshold upwards."""

    tag: Identifier | None = None
    notify: str | None = Field(None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$",
                               description="an internal address to notify (never the contact's)")
    feed: Identifier | None = None

    def kind_target(self) -> tuple[str, str]:
        set_ = [(k, v) for k, v in (("tag", self.tag), ("notify", self.notify), ("feed", self.feed))
                if v is not None]
        if len(set_) != 1:
            raise ValueError("an action has exactly one of tag, notify, feed")
        return set_[0]


class Threshold(_Strict):
    at: float
    actions: list[ThresholdAction] = Field(min_length=1)


class ScoreRule(_Strict):
    """Points per matching event (``event``), or once when no such event happened in the
    last ``within_days`` days (``no_event``: e.g. no e-mail opened in 30 days: -10)."""

    event: str | list[str] | None = None
    no_event: str | list[str] | None = None
    where: list[dict[str, Any]] = []
    within_days: int | None = Field(None, ge=1)
    points: float
    max_points: float | None = None


class Decay(_Strict):
    half_life_days: float = Field(gt=0)


class Cap(_Strict):
    min: float | None = None
    max: float | None = None


class ScoreDef(_Strict):
    name: Identifier
    description: str = ""
    window_days: int | None = Field(None, ge=1, description="only events of the last N days count")
    decay: Decay | None = None
    cap: Cap | None = None
    rules: list[ScoreRule] = Field(min_length=1)
    thresholds: list[Threshold] = []


class StageDef(_Strict):
    name: Identifier
    description: str = ""
    rule: dict[str, Any]


class FeedDef(_Strict):
    name: Identifier
    description: str = ""
    segment: Identifier | None = None
    channel: Literal["email", "sms", "none"] = "email"
    format: Literal["csv"] = "csv"
    fields: list[Identifier]
    # Feeds opened by people in spreadsheets get formula-looking cells neutralised.
    for_spreadsheet: bool = False
    # The contacts a score threshold pushed to this feed on the day (e.g. to the CRM).
    score_actions: bool = False


class LookupValue(_Strict):
    id: int = Field(ge=1)
    label: str = Field(min_length=1)
    # For a micro value: its macro, as id or label.
    macro: int | str | None = None


class LookupTable(_Strict):
    """A settings table of the [Sendero] kind: macro values, and micro values under them."""

    macro: list[LookupValue] = []
    micro: list[LookupValue] = []


# Sendero's predefined sales-channel macros; deployments add micros under them.
SALES_CHANNEL_MACROS = [
    LookupValue(id=1, label="e-commerce"), LookupValue(id=2, label="store"),
    LookupValue(id=3, label="phone"), LookupValue(id=4, label="mail"),
]


class _LookupsFile(_Strict):
    lookups: dict[Identifier, LookupTable] = {}


class _MainFile(_Strict):
    deployment: str
    description: str = ""
    nodes: list[Node]
    tree: Tree
    properties: dict[Literal["contact"], list[ExtendedProperty]] = {}
    identity: IdentitySettings = IdentitySettings()
    sales_channels: dict[Identifier, SalesChannel] = {}
    expectations: dict[Entity, EntityExpectations] = {}


class _SourcesFile(_Strict):
    sources: list[Source]


class _SegmentsFile(_Strict):
    segments: list[SegmentDef] = []


class _FeedsFile(_Strict):
    feeds: list[FeedDef] = []


class _ScoringFile(_Strict):
    scores: list[ScoreDef] = []


class _StagesFile(_Strict):
    stages: list[StageDef] = []


class Deployment(_Strict):
    """The whole validated configuration of one deployment."""

    config_dir: Path
    deployment: str
    description: str = ""
    nodes: list[Node]
    tree: Tree
    properties: dict[str, list[ExtendedProperty]] = {}
    identity: IdentitySettings = IdentitySettings()
    sales_channels: dict[str, SalesChannel] = {}
    sources: list[Source]
    segments: list[SegmentDef] = []
    feeds: list[FeedDef] = []
    lookups: dict[str, LookupTable] = {}
    scores: list[ScoreDef] = []
    stages: list[StageDef] = []
    expectations: dict[str, EntityExpectations] = {}

    def expectations_of(self, entity: str) -> EntityExpectations:
        """The entity's configured batch expectations, or the defaults."""
        return self.expectations.get(entity, EntityExpectations())

    def lookup_table(self, name: str) -> LookupTable:
        """A lookup table with predefined values merged in (sales-channel macros)."""
        table = self.lookups.get(name, LookupTable())
        if name == "sales_channel":
            table = LookupTable(macro=SALES_CHANNEL_MACROS, micro=table.micro)
        return table

    def properties_of(self, entity: str) -> list[ExtendedProperty]:
        return list(self.properties.get(entity, []))

    def sources_of(self, entity: str) -> list[Source]:
        return [s for s in self.sources if s.entity == entity]

    def source(self, name: str) -> Source:
        for s in self.sources:
            if s.name == name:
                return s
        raise KeyError(name)

    def node_rank(self) -> dict[str, int]:
        return {name: i + 1 for i, name in enumerate(self.tree.priority)}


def _validate(model, loaded: LoadedYaml):
    try:
        return model.model_validate(loaded.data)
    except ValidationError as exc:
        msgs = []
        for err in exc.errors()[:5]:
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            msgs.append(f"{loaded.where(err['loc'])}: {msg}")
        raise ConfigError("invalid configuration\n  " + "\n  ".join(msgs)) from None


def load_deployment(config_dir: str | Path) -> Deployment:
    """Load and cross-validate a configuration folder; raise ConfigError naming file and key."""
    config_dir = Path(config_dir).resolve()
    if not config_dir.is_dir():
        raise ConfigError(f"{config_dir}: configuration folder not found")
    main_y = load_yaml(config_dir / "tessera.yaml")
    sources_y = load_yaml(config_dir / "sources.yaml")
    main = _validate(_MainFile, main_y)
    sources = _validate(_SourcesFile, sources_y)
    seg_path = config_dir / "segments.yaml"
    feed_path = config_dir / "feeds.yaml"
    segments_y = load_yaml(seg_path) if seg_path.exists() else None
    feeds_y = load_yaml(feed_path) if feed_path.exists() else None
    segments = _validate(_SegmentsFile, segments_y) if segments_y else _SegmentsFile()
    feeds = _validate(_FeedsFile, feeds_y) if feeds_y else _FeedsFile()
    scoring_path = config_dir / "scoring.yaml"
    stages_path = config_dir / "stages.yaml"
    scoring_y = load_yaml(scoring_path) if scoring_path.exists() else None
    stages_y = load_yaml(stages_path) if stages_path.exists() else None
    scoring = _validate(_ScoringFile, scoring_y) if scoring_y else _ScoringFile()
    stages = _validate(_StagesFile, stages_y) if stages_y else _StagesFile()

    node_names = {n.name for n in main.nodes}
    for i, name in enumerate(main.tree.priority):
        if name not in node_names:
            raise ConfigError(f"{main_y.where(('tree', 'priority', i))}: unknown node '{name}'")
    missing = node_names - set(main.tree.priority)
    if missing:
        raise ConfigError(
            f"{main_y.where(('tree', 'priority'))}: nodes missing from the priority: "
            f"{sorted(missing)}"
        )

    contracts = entity_contracts()
    ext_by_entity = {e: {p.name for p in props} for e, props in main.properties.items()}
    for e, props in main.properties.items():
        builtin = set(contracts[e].fields)
        for j, p in enumerate(props):
            if p.name in builtin:
                raise ConfigError(
                    f"{main_y.where(('properties', e, j, 'name'))}: '{p.name}' is a base "
                    "property already"
                )
    from tessera.segments import GOLDEN_FIELDS

    for field in main.tree.field_rules:
        if field not in GOLDEN_FIELDS and field not in ext_by_entity.get("contact", ()):
            raise ConfigError(
                f"{main_y.where(('tree', 'field_rules', field))}: '{field}' is not a golden field "
                "(consent never comes from survivorship)")

    seen: set[str] = set()
    for i, s in enumerate(sources.sources):
        where = lambda *k: sources_y.where(("sources", i) + k)  # noqa: E731
        if s.name in seen:
            raise ConfigError(f"{where('name')}: duplicate source name '{s.name}'")
        seen.add(s.name)
        if s.node not in node_names:
            raise ConfigError(f"{where('node')}: unknown node '{s.node}'")
        if s.format == "csv" and s.csv is None:
            raise ConfigError(f"{where()}: a csv source needs a 'csv' dialect block")
        if s.format == "xml" and s.xml is None:
            raise ConfigError(f"{where()}: an xml source needs an 'xml' block")
        if s.format == "api" and s.api is None:
            raise ConfigError(f"{where()}: an api source needs an 'api' block (url, pagination, ...)")
        if s.format == "push":
            if s.push is None:
                raise ConfigError(f"{where()}: a push source needs a 'push' block (token_env, ...)")
            if s.path != f"_push/{s.name}/*.jsonl":
                raise ConfigError(f"{where('path')}: a push source lands under _push/{s.name}/; "
                                  "it takes no 'path'")
        if s.format not in ("api", "push") and not s.path:
            raise ConfigError(f"{where()}: a {s.format} source needs a 'path' glob")
        if s.format == "xlsx" and s.xlsx is None:
            raise ConfigError(f"{where()}: an xlsx source needs an 'xlsx' block (sheet, header_row)")
        allowed = set(contracts[s.entity].fields) | ext_by_entity.get(s.entity, set())
        for field in s.columns:
            if field not in allowed:
                raise ConfigError(
                    f"{where('columns', field)}: '{field}' is not a field of entity "
                    f"'{s.entity}' (see data_contracts/entities/{s.entity}.yaml)"
                )
        required = [f for f, spec in contracts[s.entity].fields.items()
                    if spec.required and f != "source_record_id"]
        for field in required:
            if field not in s.columns:
                raise ConfigError(f"{where('columns')}: required field '{field}' is not mapped")
        for field in s.value_map:
            if field not in s.columns:
                raise ConfigError(f"{where('value_map', field)}: '{field}' is not a mapped column "
                                  "of this source")
        if s.entity in ("order", "note", "task"):
            if not s.customer_source:
                raise ConfigError(f"{where()}: an {s.entity} source needs 'customer_source'")
    names = {s.name for s in sources.sources}
    for i, s in enumerate(sources.sources):
        if s.customer_source and s.customer_source not in names:
            raise ConfigError(
                f"{sources_y.where(('sources', i, 'customer_source'))}: unknown source "
                f"'{s.customer_source}'"
            )

    lookups_path = config_dir / "lookups.yaml"
    lookups_y = load_yaml(lookups_path) if lookups_path.exists() else None
    lookups = _validate(_LookupsFile, lookups_y) if lookups_y else _LookupsFile()
    for name, table in lookups.lookups.items():
        if name == "sales_channel" and table.macro:
            raise ConfigError(f"{lookups_y.where(('lookups', name, 'macro'))}: sales-channel "
                              "macros are predefined (e-commerce, store, phone, mail); declare micros only")
        macros = SALES_CHANNEL_MACROS if name == "sales_channel" else table.macro
        by_id = {m.id for m in macros}
        by_label = {m.label.strip().lower(): m.id for m in macros}
        for level, values in (("macro", table.macro), ("micro", table.micro)):
            ids = [v.id for v in values]
            if len(ids) != len(set(ids)):
                raise ConfigError(f"{lookups_y.where(('lookups', name, level))}: duplicate id")
        for j, v in enumerate(table.micro):
            where = lookups_y.where(("lookups", name, "micro", j))
            if v.macro is None:
                raise ConfigError(f"{where}: a micro value needs its macro")
            known = v.macro in by_id if isinstance(v.macro, int) else (
                str(v.macro).strip().lower() in by_label)
            if not known:
                raise ConfigError(f"{where}: unknown macro '{v.macro}' (a micro belongs to a "
                                  "macro of the same table)")

    if any(s.entity == "company_user" for s in sources.sources):
        from tessera.companies import CARD_COMPANY_FIELDS

        for j, p in enumerate(main.properties.get("contact", [])):
            if p.name in CARD_COMPANY_FIELDS:
                raise ConfigError(
                    f"{main_y.where(('properties', 'contact', j, 'name'))}: '{p.name}' is a company "
                    "field of the contact card (from the company registries); rename the property")

    ident = main.identity
    for kind in ("never_merge", "always_merge"):
        for i, pair in enumerate(getattr(ident, kind)):
            for j, ref in enumerate(pair):
                if ref.source not in {s.name for s in sources.sources if s.entity == "contact"}:
                    raise ConfigError(
                        f"{main_y.where(('identity', kind, i, j, 'source'))}: unknown contact "
                        f"source '{ref.source}'")

    for entity, exp in main.expectations.items():
        known = set(contracts[entity].fields) | ext_by_entity.get(entity, set())
        for col in (exp.null_rates or {}):
            if col not in known:
                raise ConfigError(
                    f"{main_y.where(('expectations', entity, 'null_rates', col))}: '{col}' is "
                    f"not a field of {entity} (contract or extended property)")

    deployment = Deployment(
        lookups=lookups.lookups,
        config_dir=config_dir,
        deployment=main.deployment,
        description=main.description,
        nodes=main.nodes,
        tree=main.tree,
        properties=main.properties,
        identity=main.identity,
        sales_channels=main.sales_channels,
        sources=sources.sources,
        segments=segments.segments,
        feeds=feeds.feeds,
        scores=scoring.scores,
        stages=stages.stages,
        expectations=main.expectations,
    )

    # Rules and feeds are checked against the field catalogue now, so that a bad rule
    # fails when definitions load rather than in the middle of the nightly run.
    from tessera.segments import STAGE_FIELDS, field_catalogue, segment_order, validate_rule

    catalogue = field_catalogue(deployment)
    entities = {s.entity for s in deployment.sources}
    seg_names = [s.name for s in deployment.segments]
    for i, seg in enumerate(deployment.segments):
        if seg_names.count(seg.name) > 1:
            raise ConfigError(f"{segments_y.where(('segments', i, 'name'))}: duplicate segment")
        validate_rule(seg.rule, catalogue, segments_y, ("segments", i, "rule"),
                      segments=set(seg_names), entities=entities,
                      channels=set(deployment.sales_channels))
    try:
        segment_order(deployment.segments)
    except ValueError as exc:
        first = str(exc).split(" -> ")[0]
        i = seg_names.index(first)
        raise ConfigError(f"{segments_y.where(('segments', i, 'rule'))}: segments reference each "
                          f"other in a cycle: {exc}") from None
    _validate_scoring(deployment, scoring_y, stages_y, catalogue, entities, STAGE_FIELDS,
                      validate_rule)
    for i, feed in enumerate(deployment.feeds):
        if feed.segment and feed.segment not in seg_names:
            raise ConfigError(
                f"{feeds_y.where(('feeds', i, 'segment'))}: unknown segment '{feed.segment}'"
            )
        if feed.score_actions and feed.segment:
            raise ConfigError(f"{feeds_y.where(('feeds', i, 'score_actions'))}: a feed takes either "
                              "'segment' or 'score_actions'")
        if "customer_id" not in feed.fields:
            raise ConfigError(f"{feeds_y.where(('feeds', i, 'fields'))}: a feed must include 'customer_id'")
        for j, f in enumerate(feed.fields):
            if f not in catalogue:
                raise ConfigError(f"{feeds_y.where(('feeds', i, 'fields', j))}: unknown field '{f}'")
        if feed.channel != "none":
            need = "email" if feed.channel == "email" else "mobile"
            if need not in feed.fields:
                raise ConfigError(
                    f"{feeds_y.where(('feeds', i, 'fields'))}: a {feed.channel} feed must "
                    f"include '{need}'"
                )
    return deployment


def _validate_scoring(deployment: Deployment, scoring_y, stages_y, catalogue, entities, stage_fields,
                      validate_rule) -> None:
    names = [s.name for s in deployment.scores]
    feed_names = {f.name for f in deployment.feeds}
    for i, score in enumerate(deployment.scores):
        where = lambda *k: scoring_y.where(("scores", i) + k)  # noqa: E731
        if names.count(score.name) > 1:
            raise ConfigError(f"{where('name')}: duplicate score type '{score.name}'")
        if deployment.scores and "event" not in entities:
            raise ConfigError(f"{where()}: scoring needs an event source")
        for j, rule in enumerate(score.rules):
            if (rule.event is None) == (rule.no_event is None):
                raise ConfigError(f"{where('rules', j)}: a scoring rule has exactly one of "
                                  "'event' or 'no_event'")
            if rule.no_event is not None and rule.within_days is None:
                raise ConfigError(f"{where('rules', j)}: 'no_event' needs 'within_days'")
            # property filters use the segment language's event leaf
            leaf = {"event": rule.event or rule.no_event, "where": rule.where}
            validate_rule(leaf, catalogue, scoring_y, ("scores", i, "rules", j), entities=entities)
        for j, th in enumerate(score.thresholds):
            for k, action in enumerate(th.actions):
                try:
                    kind, target = action.kind_target()
                except ValueError as exc:
                    raise ConfigError(f"{where('thresholds', j, 'actions', k)}: {exc}") from None
                if kind == "feed" and target not in feed_names:
                    raise ConfigError(f"{where('thresholds', j, 'actions', k, 'feed')}: unknown feed "
                                      f"'{target}'")
    stage_names = [s.name for s in deployment.stages]
    stage_catalogue = {k: v for k, v in catalogue.items() if k not in stage_fields}
    for i, stage in enumerate(deployment.stages):
        if stage_names.count(stage.name) > 1:
            raise ConfigError(f"{stages_y.where(('stages', i, 'name'))}: duplicate stage '{stage.name}'")
        # A stage rule cannot read stages or segments: stages are built before segments.
        validate_rule(stage.rule, stage_catalogue, stages_y, ("stages", i, "rule"),
                      segments=None, entities=entities, channels=set(deployment.sales_channels))
