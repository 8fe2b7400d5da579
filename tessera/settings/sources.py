"""Source settings: nodes, the tree of priorities, properties, file layouts, API and push, lookups, expectations."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tessera.contracts import SQL_TYPES, FieldType
from tessera.settings.base import _Strict, Entity, Identifier


class Node(_Strict):
    name: Identifier
    description: str = ""


class ViewGroup(_Strict):
    """One level of a view's tree ([Contacthub] trees of nodes): its children (node names
    or nested groups) in priority order, strongest first; ``equal``: the children share
    one priority, and recency, then completeness, decide between them."""

    children: list["ViewChild"]
    equal: bool = False
    description: str = ""

    @model_validator(mode="after")
    def _equal_levels_hold_nodes(self):
        _check_equal(self.children, self.equal)
        return self


def _check_equal(children, equal: bool) -> None:
    # Children of one priority are compared by recency; a ranked group among them would
    # make the order ambiguous (a = c and b = c, yet a before b), so it is refused.
    if equal and any(not isinstance(c, str) for c in children):
        raise ValueError("the children of an equal level are nodes, not groups")


ViewChild = Identifier | ViewGroup


class View(_Strict):
    """A view node: merges the data of the nodes under it into golden records of its own
    (``views.<name>_customers``), by per-level priority, then recency, then completeness,
    with per-field overrides. Nodes not under it do not contribute to it."""

    name: Identifier
    description: str = ""
    children: list[ViewChild]
    equal: bool = False
    field_rules: dict[str, Literal["priority", "most_recent"]] = {}

    @model_validator(mode="after")
    def _equal_levels_hold_nodes(self):
        _check_equal(self.children, self.equal)
        return self

    def node_rank(self) -> dict[str, int]:
        """Node -> rank (1 strongest): per level, the child's position, read top-down, so
        that a whole branch outranks the next one; equal groups give one rank to all."""
        paths: dict[str, tuple[int, ...]] = {}

        def walk(children, equal: bool, path: tuple[int, ...]) -> None:
            for i, child in enumerate(children):
                here = path + ((0 if equal else i),)
                if isinstance(child, ViewGroup):
                    walk(child.children, child.equal, here)
                else:
                    paths[child] = here

        walk(self.children, self.equal, ())
        longest = max((len(p) for p in paths.values()), default=0)
        padded = {n: p + (-1,) * (longest - len(p)) for n, p in paths.items()}
        order = sorted(set(padded.values()))
        return {n: order.index(p) + 1 for n, p in padded.items()}

    def nodes(self) -> list[str]:
        out: list[str] = []

        def walk(children) -> None:
            for child in children:
                if isinstance(child, ViewGroup):
                    walk(child.children)
                else:
                    out.append(child)

        walk(self.children)
        return out


ViewGroup.model_rebuild()


class Tree(_Strict):
    """Which node wins each golden field: ``priority`` lists nodes, strongest first (the
    main view: ``core.customers``). ``views`` declares further view nodes, each with its
    own tree over (some of) the nodes and its own golden records."""

    priority: list[Identifier]
    field_rules: dict[str, Literal["priority", "most_recent"]] = {}
    views: list[View] = []


class ExtendedProperty(_Strict):
    """A typed field a deployment adds to a registry ([Contacthub] extended properties),
    with the contract rules of a base field. ``lookup``: an id or label of a settings
    table of lookups.yaml (its macro level), stored as the id."""

    name: Identifier
    type: Literal["string", "integer", "decimal", "date", "timestamp", "boolean", "lookup"] = "string"
    required: bool = False
    allowed: list[str] | None = None
    table: Identifier | None = None  # the settings table of a ``lookup`` property
    description: str = ""

    @model_validator(mode="after")
    def _lookup_needs_table(self):
        if (self.type == "lookup") != (self.table is not None):
            raise ValueError("a lookup property names its settings table (table: ...), "
                             "and only a lookup property does")
        return self

    @property
    def field_type(self) -> FieldType:
        """The stored type: a lookup stores its value's id."""
        return "integer" if self.type == "lookup" else self.type

    @property
    def sql_type(self) -> str:
        return SQL_TYPES[self.field_type]

    def field_spec(self):
        """The property as a contract field (type, required, allowed values, lookup)."""
        from tessera.contracts import FieldSpec

        return FieldSpec(type=self.field_type, required=self.required, allowed=self.allowed,
                         lookup=f"{self.table}.macro" if self.table else None,
                         description=self.description)


class SalesChannel(_Strict):
    """A named sales channel: a macro (1 e-commerce, 2 store, 3 phone, 4 mail) and
    optionally one micro under it (a store, a marketplace): what orders carry as
    channel_macro / channel_micro."""

    macro: int
    micro: int | None = None
    description: str = ""


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


class DateRange(_Strict):
    """Inclusive bounds of a date field: ISO dates, ``today`` (the run's date) or none."""

    min: str | None = Field("1900-01-01", pattern=r"^(\d{4}-\d{2}-\d{2}|today)$")
    max: str | None = Field(None, pattern=r"^(\d{4}-\d{2}-\d{2}|today)$")


DEFAULT_DATE_RANGES: dict[str, DateRange] = {
    "birth_date": DateRange(min="1900-01-01", max="today"),
}

class RecordOrder(_Strict):
    """What orders a source's versions of one record: the newest by this wins in staging.

    ``record_timestamp``: a timestamp or date field of the record (``column``, default
    ``updated_at``); ``file_date``: the business date in the file's name (``pattern``, a
    regular expression whose first group is the date, in ``format``); ``delivery``: the
    order files were received (name order within a run, then run after run; pushes by the
    sequence assigned on receipt), the last resort. Whatever the key, a version without
    one falls back to its delivery time, and ties go to the later delivery.
    """

    by: Literal["record_timestamp", "file_date", "delivery"]
    column: str | None = None
    pattern: str | None = None
    format: str = "%Y%m%d"


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
    # Columns of a file that the mapping does not name: a header with an unknown column
    # is refused (a renamed or shifted export), unless the source says to ignore them.
    extra_columns: Literal["reject", "ignore"] = "reject"
    # The longest value a field may hold, in KiB of UTF-8 (a bigger one refuses the record).
    max_field_kb: int = Field(64, ge=1, le=1 << 20)
    # Plausible ranges of date and timestamp fields: {field: {min: date, max: date|today}}.
    # Fields not named keep DEFAULT_DATE_RANGES (no date before 1900; no birth in the future).
    date_ranges: dict[str, DateRange] = {}

    def date_range_of(self, field: str) -> DateRange:
        return self.date_ranges.get(field) or DEFAULT_DATE_RANGES.get(field) or DateRange()

    # What one file holds: the changes since the last delivery (delta), or every record the
    # sender has (full_snapshot). An empty or header-only full snapshot is far more often a
    # failed export than a sender with no customers left: it is refused (reported as
    # failed, nothing loaded, nothing deleted) unless allow_empty_snapshot says it can be
    # genuine. An empty delta is loaded and reported as empty.
    delivery: Literal["delta", "full_snapshot"] = "delta"
    allow_empty_snapshot: bool = False

    # What orders the source's versions of a record (see RecordOrder). Unset: the record's
    # updated_at when the source maps it, else delivery.
    record_order: RecordOrder | None = None

    def effective_record_order(self) -> RecordOrder:
        if self.record_order is not None:
            if self.record_order.by == "record_timestamp" and not self.record_order.column:
                return RecordOrder(by="record_timestamp", column="updated_at")
            return self.record_order
        if "updated_at" in self.columns:
            return RecordOrder(by="record_timestamp", column="updated_at")
        return RecordOrder(by="delivery")

    def format_of(self, field: str, ftype: str) -> str | None:
        if field in self.formats:
            return self.formats[field]
        if ftype == "date":
            return self.date_format
        if ftype == "timestamp":
            return self.timestamp_format
        return None


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

# Sendero's source ("fonte") macros are predefined too, and a deployment's source micros
# hang under them ("Fonte Micro, da assegnare partendo da una delle Fonti Macro
# predefinite"). The seed does not list them: these are the ways it names for a record to
# enter the database (manual entry, file import, ERP sync, web service, permanent form,
# purchased list), plus events for records first seen through behaviour.
SOURCE_MACROS = [
    LookupValue(id=1, label="manual entry"), LookupValue(id=2, label="file import"),
    LookupValue(id=3, label="ERP sync"), LookupValue(id=4, label="web service"),
    LookupValue(id=5, label="permanent form"), LookupValue(id=6, label="purchased list"),
    LookupValue(id=7, label="events"),
]

# Settings tables whose macro level is predefined: deployments declare micros only.
PREDEFINED_MACROS = {"sales_channel": SALES_CHANNEL_MACROS, "source": SOURCE_MACROS}


