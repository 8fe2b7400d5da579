"""Export feed settings (``feeds.yaml``): what a feed selects, how its file looks, where
it goes."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from tessera.settings.base import _Strict, Identifier

FeedFormat = Literal["csv", "jsonl", "parquet", "xlsx", "xml"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# How an identifier is normalised before SHA-256, after the ad platforms' documented rules:
#   email         trim, lower case (Meta, TikTok, LinkedIn)
#   email_google  as email, and dots of the local part removed for gmail.com/googlemail.com
#   phone         digits only, no leading zeros, country code included (Meta)
#   phone_e164    '+' and the digits, E.164 (Google Customer Match, TikTok)
_XML_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
HashKind = Literal["email", "email_google", "phone", "phone_e164"]


class FeedField(_Strict):
    """One output column: a card field, optionally renamed and/or hashed."""

    field: Identifier
    name: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_.\- ]{0,62}$")
    hash: HashKind | None = None

    @property
    def out(self) -> str:
        return self.name or self.field


class FeedCsv(_Strict):
    delimiter: Literal[",", ";", "\t", "|"] = ","
    quote: Literal['"', "'"] = '"'
    header: bool = True


class FeedXml(_Strict):
    """Element names of an XML feed (the ERP's layout)."""

    root: str = Field(default="records", pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,62}$")
    record: str = Field(default="record", pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,62}$")


class HttpDestinationDef(_Strict):
    """A feed's batches POSTed to an endpoint, signed (Standard Webhooks) with the secret
    held in the environment variable ``secret_env`` (never in the file)."""

    url: str = Field(pattern=r"^https?://")
    secret_env: str = Field(pattern=r"^[A-Z_][A-Z0-9_]*$")
    batch_rows: int = Field(default=500, ge=1, le=100_000)
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    max_attempts: int = Field(default=5, ge=1, le=20)
    backoff_s: float = Field(default=1.0, ge=0, le=60)
    max_backoff_s: float = Field(default=60.0, ge=0, le=3600)
    # batches in flight at once: 1 keeps the queue's order (a feed's diffs need it); a
    # receiver of independent messages (webhooks, an SMS gateway, an e-mail platform)
    # takes more, so the sending rate is the receiver's, not one round trip at a time
    concurrency: int = Field(default=1, ge=1, le=64)
    # the batches' bodies: JSON, or XML (<batch ...><item><op/><record>...</record></item>)
    body: Literal["json", "xml"] = "json"


class FeedRecommendations(_Strict):
    """What the ``recommended_products`` field holds: the day's top ``k`` products of one
    recommendation kind (tessera.recommendations), best first."""

    kind: Identifier = "combined"
    k: int = Field(default=5, ge=1, le=100)


# Where a feed's rows come from (each row a contact, joined to the card for consent):
#   contacts         every contact (or a segment's members, with ``segment``)
#   score_actions    the contacts a score threshold pushed to this feed on the day
#   predictions      the contacts with a prediction on the day
#   recommendations  the contacts with a recommendation list (of ``recommendations.kind``)
#   mart             the rows of ``marts.<mart>`` (one per contact), its columns as fields
FeedSource = Literal["contacts", "score_actions", "predictions", "recommendations", "mart"]


class FeedRetention(_Strict):
    """How long a feed keeps what it delivered (days; unset: for ever). Applied by the
    daily run after the day's delivery."""

    # the files and manifests of older delivered days, and their stored rows (the diff
    # state); the last delivered day is always kept, being the next diff's base
    days: int | None = Field(default=None, ge=1, le=36_500)
    # the delivery log: attempts, and batches no longer pending (with the body of a
    # refused one); a pending batch is never dropped
    delivery_log_days: int | None = Field(default=None, ge=1, le=36_500)


class FeedDef(_Strict):
    name: Identifier
    description: str = ""
    segment: Identifier | None = None
    # a view node of tree.views: its golden profile in place of the main one (default)
    view: Identifier | None = None
    channel: Literal["email", "sms", "none"] = "email"
    format: FeedFormat = "csv"
    csv: FeedCsv = FeedCsv()
    xml: FeedXml = FeedXml()
    # full: every row each delivery; diff: added / changed / removed since the last one.
    mode: Literal["full", "diff"] = "full"
    # the days the feed is delivered; every day when unset
    weekdays: list[Weekday] | None = None
    # a card field name, or {field, name, hash}
    fields: list[Identifier | FeedField]
    # Feeds opened by people in spreadsheets get formula-looking cells neutralised
    # (CSV and XLSX only: machine formats always keep values exactly).
    for_spreadsheet: bool = False
    # The contacts a score threshold pushed to this feed on the day (e.g. to the CRM);
    # the same as ``source: score_actions``.
    score_actions: bool = False
    source: FeedSource = "contacts"
    # the list of ``recommended_products`` (a field any feed may carry)
    recommendations: FeedRecommendations = FeedRecommendations()
    # the mart a ``source: mart`` feed reads (a table of the ``marts`` schema)
    mart: Identifier | None = None
    destination: HttpDestinationDef | None = None
    # the row-count check warns when a delivery has lost more than this share of the
    # previous delivery's rows
    max_row_drop: float = Field(default=0.5, ge=0, le=1)
    retention: FeedRetention = FeedRetention()

    @field_validator("fields")
    @classmethod
    def _as_columns(cls, value):
        return [v if isinstance(v, FeedField) else FeedField(field=v) for v in value]

    @model_validator(mode="after")
    def _one_source(self):
        if self.score_actions and self.source not in ("contacts", "score_actions"):
            raise ValueError(f"feed '{self.name}': score_actions and source: {self.source}")
        if (self.source == "mart") != (self.mart is not None):
            raise ValueError(f"feed '{self.name}': 'mart' names the table of a source: mart feed "
                             "(and only of one)")
        return self

    @model_validator(mode="after")
    def _distinct_names(self):
        outs = [f.out for f in self.columns]
        dup = sorted({o for o in outs if outs.count(o) > 1})
        if dup:
            raise ValueError(f"feed '{self.name}': output column names repeat: {dup}")
        if self.format == "xml" or (self.destination and self.destination.body == "xml"):
            bad = [o for o in outs if not _XML_NAME.match(o)]
            if bad:
                raise ValueError(f"feed '{self.name}': not XML element names: {bad}")
        return self

    @property
    def row_source(self) -> str:
        """Where the rows come from (``score_actions: true`` is ``source: score_actions``)."""
        return "score_actions" if self.score_actions else self.source

    @property
    def columns(self) -> list[FeedField]:
        return list(self.fields)  # type: ignore[arg-type]

    @property
    def source_fields(self) -> list[str]:
        """The card fields the feed reads, in order, without repeats."""
        seen: list[str] = []
        for f in self.columns:
            if f.field not in seen:
                seen.append(f.field)
        return seen

    def delivered_on(self, weekday: int) -> bool:
        """Whether the feed is delivered on a day (``date.weekday()``: Monday is 0)."""
        return self.weekdays is None or WEEKDAYS[weekday] in self.weekdays
