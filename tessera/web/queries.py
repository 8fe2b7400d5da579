"""What the web page reads: search, the card's tabs and the analytics counts, as named steps.

Why here and not in the stages: these are read-only views for a person at a screen, over
tables the stages own; they only select, bind every value as a parameter, and read
tables that a deployment may lack (notes, scores, stages, companies, predictions) only
when they exist, so the page works on every configuration.

Who may be shown: only people with a contact card (``marts.contact_cards`` leaves out
soft-deleted people; ``tessera forget`` deletes erased people from every table), and not
anyone soft-deleted since the card was built (the live ``ops.bulk_edits`` state), so a
deletion hides the person from the page at once, before the next run.
"""

from __future__ import annotations

import datetime as dt
import decimal
import unicodedata
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable
from weakref import WeakKeyDictionary

from tessera.card.search import (SEARCH_TABLE, SEARCHED, TOKENS_TABLE, contact_search_select,
                                  contact_search_tokens_select)
from tessera.engine import Engine, SqlStep
from tessera.history.summary import days_step
from tessera.privacy.consent import SOFT_DELETED_SQL

# A page's results are small (a card's tab, 50 search hits): DuckDB's note that Arrow output
# from a prepared statement copies the rows is about bulk reads, and only litters the output.
warnings.filterwarnings("ignore", message="Arrow output on a DB-API result", category=UserWarning)

SEARCH_LIMIT = 50
LIST_LIMIT = 200

# The card's tabs, in the order the page shows them: (key, label).
TABS = (
    ("profile", "Profile"),
    ("identifiers", "Identifiers"),
    ("consents", "Consents"),
    ("orders", "Orders"),
    ("timeline", "Timeline"),
    ("visits", "Visits"),
    ("messages", "Messages"),
    ("mobile", "Mobile"),
    ("coupons", "Coupons"),
    ("journeys", "Journeys and automations"),
    ("notes", "Notes and tasks"),
    ("companies", "Company"),
    ("segments", "Segments"),
    ("scores", "Scores"),
    ("stages", "Stages"),
    ("rfm", "RFM"),
    ("predictions", "Predictions"),
    ("recommendations", "Recommendations"),
)
TAB_KEYS = frozenset(k for k, _ in TABS)

# The card's e-commerce totals under the names analysts know from the contact card.
TOTAL_LABELS = {
    "order_number": "ORDER_NUMBER", "order_summary": "ORDER_SUMMARY", "order_avg": "ORDER_AVG",
    "first_order_date": "first order", "last_order_date": "last order",
    "event_count": "events", "last_event_at": "last event", "page_views": "page views",
    "email_opens": "e-mail opens", "note_count": "public notes", "last_note_at": "last note",
    "open_tasks": "open tasks", "next_task_due_at": "next task due",
}


@dataclass
class Table:
    """One titled table of a page: the template renders every one the same way."""

    title: str
    columns: list[str]
    rows: list[tuple] = field(default_factory=list)
    empty: str = "Nothing recorded."
    note: str = ""
    link: str = ""  # the first column is an id to link: "card" or "company"
    link_query: str = ""  # appended to the link (``?view=NAME``)


def show(value: Any) -> str:
    """A warehouse value as the page shows it (escaping is the template's job)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, (list, tuple)):
        return ", ".join(show(v) for v in value)
    if isinstance(value, float):
        return f"{value:,.2f}" if value != int(value) else f"{int(value):,}"
    if isinstance(value, decimal.Decimal):
        # a count summed by DuckDB is a HUGEINT, which arrives as a whole decimal
        return str(value) if value.as_tuple().exponent == 0 else f"{value:,.2f}"
    return str(value)


def fold(text: str) -> str:
    """Lower case without accents, as the search compares (``Rossì`` finds ``rossi``)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower()


# The warehouse's tables, read once per read-only session: a page asks for a dozen optional
# tables, and each information_schema look-up costs tens of milliseconds.
_CATALOGUES: WeakKeyDictionary = WeakKeyDictionary()
# A published snapshot folder never changes: its tables and their columns are read once
# per folder (22 ms of CPU a request for the catalogue alone), for the newest few folders.
_PUBLISHED: dict[tuple, Any] = {}


def _per_folder(engine: Engine, key: tuple, compute: Callable[[], Any]) -> Any:
    folder = getattr(engine, "snapshot_folder", None)
    if folder is None:
        return compute()
    full = (folder, *key)
    if full not in _PUBLISHED:
        if len({k[0] for k in _PUBLISHED} | {folder}) > 3:
            _PUBLISHED.clear()
        _PUBLISHED[full] = compute()
    return _PUBLISHED[full]


def _catalogue(engine: Engine) -> frozenset[str]:
    known = _CATALOGUES.get(engine)
    if known is None:
        known = _per_folder(engine, ("catalogue",), lambda: frozenset(
            f"{schema}.{name}" for schema, name in engine.rows(SqlStep(
                "web.catalogue", "SELECT table_schema, table_name FROM information_schema.tables"))))
        _CATALOGUES[engine] = known
    return known


def _has(engine: Engine, table: str) -> bool:
    return table in _catalogue(engine)


def _hidden_sql(engine: Engine) -> str:
    """Customer ids soft-deleted now (a subquery), whatever the last run's cards say."""
    if _has(engine, "ops.soft_deleted"):  # a published snapshot: the outcome, copied
        return "SELECT customer_id FROM ops.soft_deleted"
    if not _has(engine, "ops.bulk_edits"):
        return "SELECT CAST(NULL AS BIGINT) AS customer_id WHERE FALSE"
    return f"SELECT customer_id FROM ({SOFT_DELETED_SQL}) WHERE customer_id IS NOT NULL"


def _table_columns(engine: Engine, schema: str, table: str) -> list[str]:
    return list(_per_folder(engine, ("columns", schema, table), lambda: tuple(r[0] for r in engine.rows(SqlStep(
        "web.table_columns", "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = $schema AND table_name = $table ORDER BY ordinal_position",
        {"schema": schema, "table": table})))))


def _table(engine: Engine, title: str, step: SqlStep, empty: str = "Nothing recorded.",
           note: str = "", link: str = "", link_query: str = "") -> Table:
    data = engine.columns(step)
    names = list(data)
    rows = list(zip(*(data[n] for n in names))) if names else []
    return Table(title, names, rows, empty, note, link, link_query)


# ---------------------------------------------------------------------------------- search

# The registry filters of the Sendero seed on the contacts list: (key, label, card columns).
# A filter matches when any of its columns holds the value (interests 1-10, sources 1-5);
# only the filters whose columns the deployment's cards have are offered.
FILTERS = (
    ("profession", "Profession", ("profession",)),
    ("marital_status", "Marital status", ("marital_status",)),
    ("education", "Education", ("education",)),
    ("user_type", "User type", ("user_type",)),
    ("interest_macro", "Interest (macro)", tuple(f"interest_macro_{i}" for i in range(1, 11))),
    ("interest_micro", "Interest (micro)", tuple(f"interest_micro_{i}" for i in range(1, 11))),
    ("source_macro", "Source (macro)", tuple(f"source_macro_{i}" for i in range(1, 6))),
    ("source_micro", "Source (micro)", tuple(f"source_micro_{i}" for i in range(1, 6))),
    ("permanent_form_source_type", "Permanent form source", ("permanent_form_source_type",)),
    ("registration_detail", "Registration detail", ("registration_detail",)),
    ("gender", "Gender", ("gender",)),
    ("country", "Country", ("country",)),
    ("province", "Province", ("province",)),
    ("city", "City", ("city",)),
    ("email_consent", "E-mail consent", ("email_consent",)),
    ("sms_consent", "SMS consent", ("sms_consent",)),
)
FILTER_KEYS = frozenset(k for k, _, _ in FILTERS)
FILTER_OPTIONS = 200  # values offered per filter, the most frequent first


def views(engine: Engine) -> list[str]:
    """The view nodes (``tree.views``) whose contact cards were published."""
    known = _catalogue(engine)
    return sorted(t[len("views."):-len("_contact_cards")] for t in known
                  if t.startswith("views.") and t.endswith("_contact_cards"))


def cards_table(engine: Engine, view: str | None = None) -> str:
    """The card table of ``view`` (a name :func:`views` lists, else the main view)."""
    if view and view in views(engine):
        return f'views."{view}_contact_cards"'
    return "marts.contact_cards"


def available_filters(engine: Engine, view: str | None = None) -> list[tuple[str, str, tuple]]:
    """The filters whose columns this deployment's cards have (each with those columns)."""
    schema, table = _split(cards_table(engine, view))
    have = set(_table_columns(engine, schema, table))
    out = []
    for key, label, cols in FILTERS:
        present = tuple(c for c in cols if c in have)
        if present:
            out.append((key, label, present))
    return out


def filter_options(engine: Engine, view: str | None = None) -> dict[str, list[tuple[str, int, str]]]:
    """Per available filter, its values on the cards with how many cards hold each (a
    card with the value in two slots counts once) and the value's label (settings tables,
    where the run published them; else empty), the
    most frequent first (one scan per filter; the page caches them per snapshot)."""
    cards = cards_table(engine, view)
    labels: dict[tuple[str, str], str] = {}
    if _has(engine, "web.filter_labels"):  # the settings tables' labels, published with the run
        labels = {(k, v): lab for k, v, lab in engine.rows(SqlStep(
            "web.filter_labels", "SELECT filter, value, label FROM web.filter_labels"))}
    out = {}
    for key, _label, cols in available_filters(engine, view):
        union = " UNION ALL ".join(f"SELECT customer_id, CAST({c} AS VARCHAR) AS v FROM {cards}"
                                   for c in cols)
        count = "count(*)" if len(cols) == 1 else "count(DISTINCT customer_id)"
        out[key] = [(str(v), int(n), labels.get((key, str(v)), "")) for v, n in engine.rows(SqlStep(
            "web.filter_options", f"""
            SELECT v, {count} AS n FROM ({union}) AS x WHERE v IS NOT NULL AND v <> ''
            GROUP BY v ORDER BY n DESC, v LIMIT {FILTER_OPTIONS}"""))]
    return out


def _split(table: str) -> tuple[str, str]:
    schema, name = table.split(".", 1)
    return schema, name.strip('"')


def word_tokens(text: str) -> list[str]:
    """The folded tokens of ``text`` as the token index splits the cards' search text:
    runs of letters and digits (``marts.contact_search_tokens``; RE2's ``\\pL\\pN``)."""
    out, cur = [], []
    for c in fold(text):
        if unicodedata.category(c)[0] in "LN":
            cur.append(c)
        elif cur:
            out.append("".join(cur))
            cur = []
    if cur:
        out.append("".join(cur))
    return out


def _after(prefix: str) -> str:
    """The smallest string above every string starting with ``prefix`` (UTF-8 byte order
    is code point order), so ``token >= prefix AND token < _after(prefix)`` is a prefix
    match that Parquet's row-group statistics can prune."""
    last = ord(prefix[-1]) + 1
    if 0xD800 <= last <= 0xDFFF:
        last = 0xE000
    return prefix[:-1] + chr(min(last, 0x10FFFF))


def _search_sources(engine: Engine, view: str | None) -> tuple[str, str, str]:
    """``(WITH clause, keys, tokens)``: the published index (the main view's, or a view
    node's, which the snapshot computes), else both folded inline from the cards (a
    warehouse read directly, one built before the index): same matches, slower."""
    cards = cards_table(engine, view)
    if (cards == "marts.contact_cards" and _has(engine, TOKENS_TABLE)
            and "search_rank" in _table_columns(engine, *_split(SEARCH_TABLE))):
        return "", SEARCH_TABLE, TOKENS_TABLE
    if cards != "marts.contact_cards":  # a view node's, published with the snapshot
        from tessera.web.snapshot import view_search_tables

        view_keys, view_tokens = view_search_tables(view or "")
        if _has(engine, view_tokens.replace('"', "")):
            return "", view_keys, view_tokens
    schema, table = _split(cards)
    have = set(_table_columns(engine, schema, table))
    missing = [f for f in SEARCHED if f not in have]
    keys = contact_search_select(missing).replace("FROM marts.contact_cards", f"FROM {cards}")
    return (f"WITH search_keys AS ({keys}), search_tokens AS ({contact_search_tokens_select('search_keys')}) ",
            "search_keys", "search_tokens")


def search_step(engine: Engine, query: str, letter: str = "", limit: int = SEARCH_LIMIT,
                filters: dict[str, str] | None = None, view: str | None = None) -> SqlStep:
    """Every word of ``query`` must match: each of its letter-and-digit runs the start of a
    word of the name, surname, e-mail, birth date (``1980``), city, ERP id or tax code; or
    the whole word the customer id or the gender (``M``/``F``); or its digits (at least 4)
    a run of digits of a phone. A word with an ``@`` (after its first character) is the
    start of the e-mail instead. Accent- and case-insensitive (``Rossì``, ``ROSSI``, ``ross``).

    Listed in the registry order of the Sendero seed: surname and name, else e-mail; with
    ``letter``, only people whose surname (else e-mail) starts with it. ``filters`` (a
    :data:`FILTERS` key to a value) keep the cards holding that value in one of the
    filter's columns. Each word is a range scan of the token index; the sets of ranks are
    intersected, the smallest ``limit`` kept, and only their rows of the keys are read."""
    params: dict[str, Any] = {"limit": limit}
    with_, keys, tokens = _search_sources(engine, view)

    def prefix(name: str, value: str) -> str:
        params[f"{name}_lo"], params[f"{name}_hi"] = value, _after(value)
        return (f"SELECT search_rank, customer_id FROM {tokens} "
                f"WHERE token >= ${name}_lo AND token < ${name}_hi")

    sets = []
    for i, word in enumerate(query.split()[:8]):
        parts = word_tokens(word)
        alts = []
        if "@" in word[1:]:  # an e-mail, or its start: one range of the e-mail tokens
            alts.append(prefix(f"e{i}", "@" + fold(word)))
        elif parts:
            alts.append(" INTERSECT ".join(f"SELECT * FROM ({prefix(f'w{i}_{j}', part)})"
                                           for j, part in enumerate(parts[:6])))
        whole = fold(word).strip()
        if whole:
            params[f"g{i}"], params[f"c{i}"] = "~" + whole, "!" + whole
            alts.append(f"SELECT search_rank, customer_id FROM {tokens} "
                        f"WHERE token = $g{i} OR token = $c{i}")
        digits = "".join(c for c in word if c.isdigit())
        if len(digits) >= 4 and len(digits) >= len(word.lstrip("+")) - 2:
            alts.append(prefix(f"p{i}", "#" + digits))
        sets.append(" UNION ".join(f"SELECT * FROM ({a})" for a in alts))
    if letter:
        params["letter"] = fold(letter)[:1]
        params["letter_hi"] = _after(params["letter"])
        sets.append(f"SELECT search_rank, customer_id FROM {keys} "
                    f"WHERE sort_key >= $letter AND sort_key < $letter_hi")
    conds = []
    for key, _label, cols in available_filters(engine, view) if filters else ():
        value = (filters or {}).get(key, "").strip()
        if value:
            params[f"f_{key}"] = value
            conds.append("(" + " OR ".join(f"CAST({col} AS VARCHAR) = $f_{key}" for col in cols) + ")")
    matched = (" INTERSECT ".join(f"SELECT * FROM ({s})" for s in sets) if sets
               else f"SELECT search_rank, customer_id FROM {keys}")
    kept = (f" AND customer_id IN (SELECT customer_id FROM {cards_table(engine, view)} "
            f"WHERE {' AND '.join(conds)})") if conds else ""
    return SqlStep("web.search", f"""{with_}
        SELECT k.customer_id AS id, k.surname, k.name, k.email, k.mobile, k.city, k.birth_date, k.orders
        FROM {keys} AS k
        WHERE k.search_rank IN (
            SELECT search_rank FROM ({matched}) AS m
            WHERE customer_id NOT IN ({_hidden_sql(engine)}){kept}
            ORDER BY search_rank LIMIT $limit)
        ORDER BY k.search_rank""", params)


def search(engine: Engine, query: str, letter: str = "", limit: int = SEARCH_LIMIT,
           filters: dict[str, str] | None = None, view: str | None = None) -> Table:
    if not _has(engine, "marts.contact_cards"):
        return Table("Contacts", [], empty="No contact cards yet: run the daily job.")
    view = view if view in views(engine) else None
    return _table(engine, "Contacts", search_step(engine, query, letter, limit, filters, view),
                  empty="No contact matches.", link="card",
                  link_query=f"?view={view}" if view else "")


# ------------------------------------------------------------------------------------ card

def card(engine: Engine, customer_id: int, view: str | None = None) -> dict[str, Any] | None:
    """The person's card row (in ``view``, a view node's cards, else the main view), or
    None when there is no such person to show (never built, erased, or soft-deleted, or
    without a record under the view): the page answers the same for all."""
    if not _has(engine, "marts.contact_cards"):
        return None
    data = engine.columns(SqlStep("web.card", f"""
        SELECT * FROM {cards_table(engine, view)}
        WHERE customer_id = $id AND customer_id NOT IN ({_hidden_sql(engine)})""",
        {"id": customer_id}))
    if not data or not next(iter(data.values())):
        return None
    row = {k: v[0] for k, v in data.items()}
    row["predictions"] = card_predictions(engine, customer_id)
    return row


# The day's predictions shown in the card's header (field as rules name it -> stored column).
CARD_PREDICTIONS = ("prediction_status", "churn_band", "churn_risk", "p_alive",
                    "purchase_propensity", "expected_purchases_90d", "expected_order_value", "clv")


def card_predictions(engine: Engine, customer_id: int) -> dict[str, Any] | None:
    """The person's latest predictions (``predictions.customer_predictions``), or None.
    They are not columns of ``marts.contact_cards``: the predictions stage reads the
    cards (its population), so the card is built before them; the page joins them here,
    as rules and feeds do (``tessera.vocabulary.PREDICTION_FIELDS``)."""
    if not _has(engine, "predictions.customer_predictions"):
        return None
    from tessera.vocabulary import PREDICTION_COLUMNS

    select = ", ".join(f"{PREDICTION_COLUMNS[f]} AS {f}" for f in CARD_PREDICTIONS)
    data = engine.columns(SqlStep("web.card_predictions", f"""
        SELECT as_of_date AS predicted_on, {select} FROM predictions.customer_predictions
        WHERE customer_id = $id ORDER BY as_of_date DESC LIMIT 1""", {"id": customer_id}))
    if not data or not next(iter(data.values())):
        return None
    return {k: v[0] for k, v in data.items()}


def find_customer(engine: Engine, key: str) -> int | None:
    """A customer id from an id or an e-mail address (as the card holds it), among the
    people the page may show."""
    key = key.strip()
    if key.isdigit():
        return int(key) if card(engine, int(key)) else None
    if not _has(engine, "marts.contact_cards"):
        return None
    rows = engine.rows(SqlStep("web.find_by_email", f"""
        SELECT customer_id FROM marts.contact_cards
        WHERE email = $email AND customer_id NOT IN ({_hidden_sql(engine)})
        ORDER BY customer_id LIMIT 1""", {"email": key.lower()}))
    return int(rows[0][0]) if rows else None


def card_tab(engine: Engine, tab: str, row: dict[str, Any], view: str | None = None) -> list[Table]:
    """The tables of one tab of the card whose row is ``row`` (see :func:`card`); in a
    view, the profile's lineage is the view's (the other tabs are the person's)."""
    if tab == "profile" and view and view in views(engine):
        return _profile(engine, row, view)
    return _TAB_BUILDERS[tab](engine, row)


def _with_lineage(engine: Engine, kind: str, key: int, what: str, fields: list[tuple],
                  lineage_table: str = "") -> Table:
    """A golden record's (``kind``: customer or company) fields with each value's lineage."""
    lineage: dict[str, tuple] = {}
    lineage_table = lineage_table or f"core.{kind}_field_lineage"
    if _has(engine, lineage_table.replace('"', "")):
        for field_name, *rest in engine.rows(SqlStep(f"web.{kind}_lineage", f"""
                SELECT field, source, node, source_record_id, source_updated_at, rule
                FROM {lineage_table} WHERE {kind}_id = $id""", {"id": key})):
            lineage[field_name] = tuple(rest)
    return Table(f"Golden {what} and the lineage of each field",
                 ["field", "value", "source", "node", "source record", "source updated", "rule"],
                 [(f, v, *lineage.get(f, ("", "", "", None, ""))) for f, v in fields],
                 note="Each value's source record and the survivorship rule that chose it.")


def _merged_sources(engine: Engine, kind: str, key: int, what: str) -> list[Table]:
    """The source records resolved into one golden ``kind`` (customer or company)."""
    if not _has(engine, f"core.{kind}_sources"):
        return []
    return [_table(engine, f"Source records merged into this {what}", SqlStep(f"web.{kind}_sources", f"""
        SELECT source, source_record_id AS record, node, matched_by, resolved_at
        FROM core.{kind}_sources WHERE {kind}_id = $id ORDER BY source, source_record_id""",
        {"id": key}))]


def _profile(engine: Engine, row: dict[str, Any], view: str | None = None) -> list[Table]:
    cid = row["customer_id"]
    golden = _table_columns(engine, "core", "customers") or [k for k in row if k != "predictions"]
    totals = [(TOTAL_LABELS[k], row[k]) for k in TOTAL_LABELS if k in row]
    lineage = f'views."{view}_field_lineage"' if view else ""
    what = f"profile in the view {view}" if view else "profile"
    return [
        _with_lineage(engine, "customer", cid, what, [(f, row.get(f)) for f in golden if f in row],
                      lineage),
        Table("E-commerce and activity totals", ["measure", "value"], totals),
        *_contact_data().details_tables(engine, row),
    ]


def _identifiers(engine: Engine, row: dict[str, Any]) -> list[Table]:
    cid = row["customer_id"]
    ids = [(k, row[k]) for k in ("customer_id", "email", "mobile", "phone", "erp_id", "tax_code")
           if k in row and row[k] not in (None, "")]
    tables = [Table("Golden identifiers", ["identifier", "value"], ids)]
    tables += _merged_sources(engine, "customer", cid, "person")
    if _has(engine, "core.merge_log"):
        tables.append(_table(engine, "Merges and splits", SqlStep("web.merges", """
            SELECT logged_at, event, other_customer_id AS other_customer, records, rule
            FROM core.merge_log WHERE customer_id = $id OR other_customer_id = $id
            ORDER BY logged_at DESC LIMIT $limit""", {"id": cid, "limit": LIST_LIMIT})))
    return tables


def _consents(engine: Engine, row: dict[str, Any]) -> list[Table]:
    cid = row["customer_id"]
    golden = [(k, row[k]) for k in ("email_consent", "sms_consent", "email_hard_bounced") if k in row]
    tables = [Table("Consent on the golden record", ["channel", "state"], golden)]
    if _has(engine, "core.consents"):
        tables.append(_table(engine, "State per channel", SqlStep("web.consents", """
            SELECT channel, state, since, events FROM core.consents
            WHERE customer_id = $id ORDER BY channel""", {"id": cid})))
    if _has(engine, "core.consent_events"):
        tables.append(_table(engine, "Opt-in and opt-out history", SqlStep("web.consent_events", """
            SELECT occurred_at, channel, state, kind, explicit, source, source_record_id AS record
            FROM core.consent_events WHERE customer_id = $id
            ORDER BY occurred_at DESC, channel LIMIT $limit""", {"id": cid, "limit": LIST_LIMIT})))
    return tables


def _orders(engine: Engine, row: dict[str, Any]) -> list[Table]:
    totals = [(TOTAL_LABELS[k], row[k]) for k in
              ("order_number", "order_summary", "order_avg", "first_order_date", "last_order_date")
              if k in row]
    tables = [Table("Totals", ["measure", "value"], totals)]
    if _has(engine, "core.orders"):
        tables.append(_table(engine, "Orders, newest first", SqlStep("web.orders", """
            SELECT order_id, order_date, amount, channel_macro, channel_micro, offer_id, source
            FROM core.orders WHERE customer_id = $id
            ORDER BY order_date DESC, order_id LIMIT $limit""",
            {"id": row["customer_id"], "limit": LIST_LIMIT}), empty="No orders."))
    return tables


# What the timeline shows of each table: (table, when, kind, what, detail, extra condition).
TIMELINE_PARTS = (
    ("core.events", "occurred_at", "'event'", "event_type", "coalesce(properties, '')", ""),
    ("core.orders", "CAST(order_date AS TIMESTAMP)", "'order'", "'order ' || order_id",
     "CAST(amount AS VARCHAR) || ' ' || coalesce(channel_macro, '')", ""),
    ("core.consent_events", "occurred_at", "'consent'", "channel || ' ' || state",
     "kind || ' from ' || source", ""),
    ("marketing.segment_history", "CAST(entered_on AS TIMESTAMP)", "'segment'", "'entered ' || segment",
     "''", ""),
    ("marketing.segment_history", "CAST(left_on AS TIMESTAMP)", "'segment'", "'left ' || segment", "''",
     "left_on IS NOT NULL"),
    ("marketing.stage_history", "CAST(entered_on AS TIMESTAMP)", "'stage'", "'entered ' || stage", "''", ""),
    ("marketing.score_actions", "CAST(as_of_date AS TIMESTAMP)", "'score action'", "action || ' ' || target",
     "score_type || ' crossed ' || CAST(threshold AS VARCHAR)", ""),
    ("core.notes", "created_at", "'note'", "'note by ' || coalesce(author, '')", "''",
     "visibility = 'public'"),
    ("core.tasks", "created_at", "'task'", "title", "status", ""),
)


def timeline_step(engine: Engine, customer_id: int) -> SqlStep | None:
    """Everything that happened to the person, newest first: events, orders, consent
    changes, segment and stage moves, score actions, public notes and tasks."""
    parts = [f"SELECT {at} AS occurred_at, {kind} AS kind, {what} AS what, {detail} AS detail "
             f"FROM {table} WHERE customer_id = $id" + (f" AND {extra}" if extra else "")
             for table, at, kind, what, detail, extra in TIMELINE_PARTS if _has(engine, table)]
    if not parts:
        return None
    union = "\nUNION ALL\n".join(parts)
    return SqlStep("web.timeline", f"""
        SELECT occurred_at, kind, what, detail FROM ({union})
        ORDER BY occurred_at DESC NULLS LAST, kind, what LIMIT $limit""",
        {"id": customer_id, "limit": LIST_LIMIT})


def _timeline(engine: Engine, row: dict[str, Any]) -> list[Table]:
    cid = row["customer_id"]
    step = timeline_step(engine, cid)
    tables = [Table("Timeline", ["occurred_at", "kind", "what", "detail"]) if step is None else
              _table(engine, f"Timeline (newest {LIST_LIMIT})", step)]
    if _has(engine, "core.events"):
        tables.append(_table(engine, "Activity by hour of day", SqlStep("web.activity_hours", """
            SELECT hour(occurred_at) AS hour, count(*) AS events FROM core.events
            WHERE customer_id = $id GROUP BY ALL ORDER BY events DESC, hour""", {"id": cid}),
            note="The first row is the best hour to send."))
        tables.append(_table(engine, "Activity by day of week", SqlStep("web.activity_days", """
            SELECT isodow(occurred_at) AS day_of_week, count(*) AS events FROM core.events
            WHERE customer_id = $id GROUP BY ALL ORDER BY events DESC, day_of_week""", {"id": cid}),
            note="1 = Monday; the first row is the best day to send."))
    return tables


# the event properties that name the visitor's device, operating system and browser
VISIT_PROPERTIES = (("device", "Most used devices"), ("os", "Most used systems"),
                    ("browser", "Most used browsers"))


def _visits(engine: Engine, row: dict[str, Any]) -> list[Table]:
    """Most used devices / systems / browsers with their share and last use, from the
    properties events carry (``{"device": "mobile", "os": "iOS", "browser": "Safari"}``)."""
    if not _has(engine, "core.events"):
        return [Table("Visits", [], empty="No event source in this deployment.")]
    tables = []
    for prop, title in VISIT_PROPERTIES:
        tables.append(_table(engine, title, SqlStep("web.visits", """
            WITH v AS (
                SELECT json_extract_string(properties, $path) AS value, occurred_at
                FROM core.events WHERE customer_id = $id)
            SELECT value AS {prop}, count(*) AS events,
                   round(100.0 * count(*) / sum(count(*)) OVER (), 1) AS share_pct,
                   max(occurred_at) AS last_used
            FROM v WHERE value IS NOT NULL AND value <> ''
            GROUP BY value ORDER BY events DESC, value""".format(prop=prop),
            {"id": row["customer_id"], "path": f"$.{prop}"}),
            empty=f"No event names a {prop}."))
    return tables


def _messages(engine: Engine, row: dict[str, Any]) -> list[Table]:
    """The e-mail campaigns that reached the person (opens and clicks, from the events'
    ``campaign_id``) or bounced (the bounce source), per campaign; then deliverability."""
    cid = row["customer_id"]
    parts = []
    # (a deployment without event sources has the card's bare core.events: no properties)
    if _has(engine, "core.events") and "properties" in _table_columns(engine, "core", "events"):
        parts.append("""SELECT json_extract_string(properties, '$.campaign_id') AS campaign,
                   occurred_at AS happened_at, event_type = 'email_open' AS opened,
                   event_type = 'email_click' AS clicked, CAST(NULL AS VARCHAR) AS bounce
            FROM core.events WHERE customer_id = $id AND event_type IN ('email_open', 'email_click')""")
    bounces = _has(engine, "staging.bounces") and _has(engine, "core.bounce_status")
    if bounces:
        parts.append("""SELECT campaign_id AS campaign, bounced_at AS happened_at, FALSE AS opened,
                   FALSE AS clicked, bounce_type AS bounce FROM staging.bounces
            WHERE email_key IN (SELECT email_key FROM core.bounce_status WHERE customer_id = $id)""")
    if not parts:
        return [Table("Messages", [], empty="No e-mail event or bounce source in this deployment.")]
    union = "\nUNION ALL\n".join(parts)
    tables = [_table(engine, "E-mail campaigns, latest first", SqlStep("web.messages", f"""
        SELECT coalesce(campaign, '(no campaign)') AS campaign, min(happened_at) AS first_at, max(happened_at) AS last_at,
               count(*) FILTER (WHERE opened) AS opens, count(*) FILTER (WHERE clicked) AS clicks,
               max(bounce) AS bounce,
               CASE WHEN max(bounce) IS NOT NULL THEN 'bounced (' || max(bounce) || ')'
                    WHEN count(*) FILTER (WHERE clicked) > 0 THEN 'clicked'
                    ELSE 'opened' END AS status
        FROM ({union}) GROUP BY ALL ORDER BY last_at DESC, campaign LIMIT $limit""",
        {"id": cid, "limit": LIST_LIMIT}), empty="No campaign opened, clicked or bounced.",
        note="From the e-mail events and bounces; every send of a message source is listed in "
             "the messages table (when the deployment has one).")]
    if bounces:
        tables.append(_table(engine, "E-mail deliverability", SqlStep("web.bounce_status", """
            SELECT state, hard_bounces, soft_bounces, campaigns_bounced, bounced_in_last_3, last_bounced_at
            FROM core.bounce_status WHERE customer_id = $id""", {"id": cid}), empty="No bounce recorded."))
    return tables


def _notes(engine: Engine, row: dict[str, Any]) -> list[Table]:
    cid = row["customer_id"]
    tables = []
    if _has(engine, "core.notes"):
        private = engine.scalar(SqlStep("web.private_notes", """
            SELECT count(*) FROM core.notes WHERE customer_id = $id AND visibility <> 'public'""",
            {"id": cid}))
        tables.append(_table(engine, "Public notes", SqlStep("web.notes", """
            SELECT created_at, author, body FROM core.notes
            WHERE customer_id = $id AND visibility = 'public'
            ORDER BY created_at DESC LIMIT $limit""", {"id": cid, "limit": LIST_LIMIT}),
            note=f"{private} private note(s) not shown: private notes are for their author only."))
    else:
        tables.append(Table("Notes", [], empty="No note source in this deployment."))
    if _has(engine, "core.tasks"):
        tables.append(_table(engine, "Tasks", SqlStep("web.tasks", """
            SELECT title, owner, status, due_at, reminder_at, created_at, completed_at
            FROM core.tasks WHERE customer_id = $id
            ORDER BY status = 'open' DESC, due_at, created_at LIMIT $limit""",
            {"id": cid, "limit": LIST_LIMIT})))
    else:
        tables.append(Table("Tasks", [], empty="No task source in this deployment."))
    return tables


def _companies(engine: Engine, row: dict[str, Any]) -> list[Table]:
    fields = [(k.removeprefix("company_"), row[k]) for k in row
              if k.startswith("company_") or k == "coworker_count"]
    if not fields:
        return [Table("Company", [], empty="This deployment has no company users.")]
    tables = [Table("Company", ["field", "value"], fields if row.get("company_id") is not None else [],
                    empty="Not linked to a company.")]
    if row.get("company_id") is not None and _has(engine, "marts.coworkers"):
        tables.append(_table(engine, "Co-workers", SqlStep("web.coworkers", f"""
            SELECT c.customer_id AS id, c.last_name AS surname, c.first_name AS name, c.email,
                   c.company_role AS role
            FROM marts.coworkers w JOIN marts.contact_cards c ON c.customer_id = w.coworker_id
            WHERE w.customer_id = $id AND c.customer_id NOT IN ({_hidden_sql(engine)})
            ORDER BY surname, name, c.customer_id LIMIT $limit""",
            {"id": row["customer_id"], "limit": LIST_LIMIT}), link="card"))
    return tables


def _segments(engine: Engine, row: dict[str, Any]) -> list[Table]:
    if not _has(engine, "marketing.segment_history"):
        return [Table("Segments", [], empty="No segment built yet.")]
    return [_table(engine, "Segments, with entered and left dates", SqlStep("web.segments", """
        SELECT segment, entered_on, left_on, left_on IS NULL AS member_now
        FROM marketing.segment_history WHERE customer_id = $id
        ORDER BY left_on IS NULL DESC, entered_on DESC, segment""", {"id": row["customer_id"]}),
        empty="Never in a segment.")]


def _scores(engine: Engine, row: dict[str, Any]) -> list[Table]:
    cid = row["customer_id"]
    if not _has(engine, "marketing.scores"):
        return [Table("Scores", [], empty="No scoring configured (scoring.yaml).")]
    tables = [_table(engine, "Scores on the latest day", SqlStep("web.scores", """
        SELECT score_type, score, as_of_date FROM marketing.scores
        WHERE customer_id = $id AND as_of_date = (SELECT max(as_of_date) FROM marketing.scores)
        ORDER BY score_type""", {"id": cid}))]
    if _has(engine, "marketing.score_actions"):
        tables.append(_table(engine, "Threshold actions fired", SqlStep("web.score_actions", """
            SELECT as_of_date, score_type, threshold, action, target, previous_score, score
            FROM marketing.score_actions WHERE customer_id = $id
            ORDER BY as_of_date DESC, score_type LIMIT $limit""", {"id": cid, "limit": LIST_LIMIT})))
    if _has(engine, "marketing.contact_tags"):
        tables.append(_table(engine, "Tags", SqlStep("web.tags", """
            SELECT tag, added_on, origin FROM marketing.contact_tags WHERE customer_id = $id
            ORDER BY added_on DESC, tag""", {"id": cid})))
    return tables


def _stages(engine: Engine, row: dict[str, Any]) -> list[Table]:
    cid = row["customer_id"]
    if not _has(engine, "marketing.stages"):
        return [Table("Stage", [], empty="No funnel configured (stages.yaml).")]
    tables = [_table(engine, "Stage on the latest day", SqlStep("web.stage", """
        SELECT stage, stage_rank, as_of_date FROM marketing.stages
        WHERE customer_id = $id AND as_of_date = (SELECT max(as_of_date) FROM marketing.stages)""",
        {"id": cid}), empty="In no stage.")]
    if _has(engine, "marketing.stage_history"):
        tables.append(_table(engine, "Stage moves", SqlStep("web.stage_history", """
            SELECT stage, stage_rank, entered_on, left_on FROM marketing.stage_history
            WHERE customer_id = $id ORDER BY entered_on DESC, stage_rank DESC""", {"id": cid})))
    return tables


def _rfm(engine: Engine, row: dict[str, Any]) -> list[Table]:
    if not _has(engine, "marketing.rfm_scores"):
        return [Table("RFM", [], empty="No RFM built yet.")]
    return [_table(engine, "RFM, latest day first", SqlStep("web.rfm", """
        SELECT as_of_date, rfm_group, rfm_score, r_score, f_score, m_score, recency_days,
               frequency, monetary
        FROM marketing.rfm_scores WHERE customer_id = $id
        ORDER BY as_of_date DESC LIMIT 30""", {"id": row["customer_id"]}),
        empty="Not scored (no orders).")]


def _discovered(schema: str, accuracy: str = ""):
    """A tab over whatever tables another stage publishes in ``schema`` with a
    ``customer_id`` column: the rows of the person's latest day, if the table has days;
    then the stage's ``accuracy`` table (its back-test), the latest day's rows."""
    label = schema.capitalize()

    def build(engine: Engine, row: dict[str, Any]) -> list[Table]:
        tables = []
        names = [r[0] for r in engine.rows(SqlStep("web.discover", """
            SELECT DISTINCT table_name FROM information_schema.columns
            WHERE table_schema = $schema AND column_name = 'customer_id' ORDER BY table_name""",
            {"schema": schema}))]
        for name in names:
            cols = _table_columns(engine, schema, name)
            qualified = f'{schema}."{name.replace(chr(34), chr(34) * 2)}"'
            latest = ("AND as_of_date = (SELECT max(as_of_date) FROM {t} WHERE customer_id = $id)"
                      .format(t=qualified) if "as_of_date" in cols else "")
            order = "ORDER BY rank" if "rank" in cols else ""
            tables.append(_table(engine, name.replace("_", " "), SqlStep("web.discovered", f"""
                SELECT * FROM {qualified} WHERE customer_id = $id {latest} {order} LIMIT $limit""",
                {"id": row["customer_id"], "limit": LIST_LIMIT}), empty="None for this person."))
        if not tables:
            tables.append(Table(label, [], empty=f"No {schema} yet: this tab fills when the "
                                                 f"{schema} stage publishes its tables."))
        elif accuracy and _has(engine, f"{schema}.{accuracy}"):
            tables.append(_table(engine, f"How accurate they are ({schema}.{accuracy}, latest day)",
                                 SqlStep("web.accuracy", f"""
                SELECT * FROM {schema}.{accuracy}
                WHERE as_of_date = (SELECT max(as_of_date) FROM {schema}.{accuracy})
                LIMIT $limit""", {"limit": LIST_LIMIT}),
                note="The stage's back-test of the whole base, not of this person: how far to "
                     "trust the rows above.", empty="Not back-tested yet (too little history)."))
        return tables

    return build


def _activation():
    from tessera.web import activation_tabs  # it imports this module

    return activation_tabs


def _contact_data():
    from tessera.web import contact_data_tabs  # it imports this module

    return contact_data_tabs
# The recommendation kinds in the order the card lists them (the combination first).
_REC_KINDS = ("combined", "collaborative", "bought_after_viewing", "viewed_together",
              "bought_together", "buy_again", "popular")


def _recommendations(engine: Engine, row: dict[str, Any]) -> list[Table]:
    """The person's top recommended products (the combination the feeds and templates
    use) first, then every kind's list in one line each, then the back-test of the
    whole base and the weights the combination used. Read from the lists table, so a
    published snapshot (tables only) shows the same."""
    if not _has(engine, "recommendations.contact_products"):
        return [Table("Recommendations", [], empty="No recommendations yet: this tab fills when "
                                                   "the recommendations stage publishes its tables.")]
    latest = ("as_of_date = (SELECT max(as_of_date) FROM recommendations.contact_products "
              "WHERE customer_id = $id)")
    order = " ".join(f"WHEN '{k}' THEN {i}" for i, k in enumerate(_REC_KINDS))
    tables = [
        _table(engine, "Top recommended products (the combination, latest day)", SqlStep(
            "web.recommended", f"""
            SELECT rank, product_id, round(score, 4) AS score, as_of_date
            FROM recommendations.contact_products
            WHERE customer_id = $id AND kind = 'combined' AND {latest}
            ORDER BY rank LIMIT $limit""", {"id": row["customer_id"], "limit": LIST_LIMIT}),
            empty="None for this person."),
        _table(engine, "Every kind, best first (latest day)", SqlStep("web.recommended_kinds", f"""
            SELECT kind, array_to_string(list(product_id ORDER BY rank), ', ') AS products
            FROM recommendations.contact_products
            WHERE customer_id = $id AND {latest}
            GROUP BY kind ORDER BY CASE kind {order} ELSE 99 END, kind""", {"id": row["customer_id"]}),
            empty="None for this person."),
    ]
    if _has(engine, "recommendations.evaluation"):
        tables.append(_table(engine, "How accurate they are (recommendations.evaluation, latest day)",
                             SqlStep("web.recommendations_accuracy", """
            SELECT mode, kind, contacts, round(hit_rate, 4) AS hit_rate,
                   round(ndcg_at_k, 4) AS ndcg_at_k, round(coverage, 4) AS coverage, k, cutoff_date
            FROM recommendations.evaluation
            WHERE as_of_date = (SELECT max(as_of_date) FROM recommendations.evaluation)
            ORDER BY mode, kind LIMIT $limit""", {"limit": LIST_LIMIT}),
            note="The stage's back-test of the whole base, not of this person: how far to "
                 "trust the lists above.", empty="Not back-tested yet (too little history)."))
    if _has(engine, "recommendations.combination_weights"):
        tables.append(_table(engine, "Weights of the combination (chosen on the back-test)",
                             SqlStep("web.recommendation_weights", """
            SELECT mode AS tuned_on, weight_set, kind, weight, round(ndcg_at_k, 4) AS ndcg_at_k
            FROM recommendations.combination_weights
            WHERE chosen AND as_of_date = (SELECT max(as_of_date) FROM recommendations.combination_weights)
            ORDER BY mode DESC, kind"""), empty="The configured weights (no back-test)."))
    return tables


_TAB_BUILDERS = {
    "profile": _profile, "identifiers": _identifiers, "consents": _consents, "orders": _orders,
    "timeline": _timeline, "visits": _visits,
    "messages": lambda engine, row: _contact_data().messages_tables(engine, row) + _messages(engine, row),
    "mobile": lambda engine, row: _contact_data().mobile_tab(engine, row),
    "notes": _notes, "companies": _companies, "segments": _segments,
    "coupons": lambda engine, row: _activation().coupons_tab(engine, row),
    "journeys": lambda engine, row: _activation().journeys_tab(engine, row),
    "scores": _scores, "stages": _stages, "rfm": _rfm,
    "predictions": _discovered("predictions", "accuracy"),
    "recommendations": _recommendations,
}


# ------------------------------------------------------------------------------ registries

def _registry_step(engine: Engine, name: str, source: str, text: str, initial: str, order: str,
                   select: str, query: str, letter: str, limit: int, path: str = "",
                   filters: dict[str, str] | None = None) -> SqlStep:
    """A registry list: every word of ``query`` in the folded ``text``, ``letter`` the
    first letter of the folded ``initial``, rows in ``order``, and each chosen filter of
    the registry at ``path`` (:data:`REGISTRY_FILTERS`). Registries differ only by these
    expressions (Sendero: a keyword box, the filter fields, the initial-letter bar, a
    fixed order)."""
    params: dict[str, Any] = {"limit": limit}
    conds = [f"x.customer_id NOT IN ({_hidden_sql(engine)})"] if "x.customer_id" in select else []
    for f in registry_filters(engine, path) if filters else ():
        value = (filters or {}).get(f.key, "").strip()
        if value:
            column = f"CAST({f.alias}.{f.column} AS VARCHAR)"
            if f.mode == "is":
                params[f"f_{f.key}"] = value
                conds.append(f"{column} = $f_{f.key}")
            else:
                params[f"f_{f.key}"] = fold(value)
                conds.append(f"starts_with(lower(strip_accents(coalesce({column}, ''))), $f_{f.key})")
    for i, word in enumerate(query.split()[:8]):
        params[f"t{i}"] = fold(word)
        conds.append(f"contains(lower(strip_accents({text})), $t{i})")
    if letter:
        params["letter"] = fold(letter)[:1]
        conds.append(f"starts_with(lower(strip_accents(coalesce({initial}, ''))), $letter)")
    return SqlStep(name, f"""
        SELECT {select} FROM {source} WHERE {" AND ".join(conds) or "TRUE"}
        ORDER BY {order} LIMIT $limit""", params)


@dataclass(frozen=True)
class RegistryFilter:
    """A filter field of a registry (Sendero seed): ``is`` keeps the rows whose value is
    the one chosen (the page offers the values present), ``starts`` the rows whose
    folded value starts with the folded text typed (names, e-mails)."""

    key: str
    label: str
    alias: str  # the table of the registry's source holding the column: k, x or p
    column: str
    mode: str = "is"


_COMPANY_FIELDS = (
    RegistryFilter("country", "Country", "k", "country"),
    RegistryFilter("region", "Region", "k", "region"),
    RegistryFilter("province", "Province", "k", "province"),
)
_SECTORS = (RegistryFilter("sector_macro", "Sector (macro)", "k", "sector_macro"),
            RegistryFilter("sector_micro", "Sector (micro)", "k", "sector_micro"))
_SOURCES = (RegistryFilter("source_macro", "Source (macro)", "k", "source_macro"),
            RegistryFilter("source_micro", "Source (micro)", "k", "source_micro"))
# The filter fields of the Sendero seed for each registry but the contacts' (FILTERS),
# those a golden company / company link / potential company has.
REGISTRY_FILTERS: dict[str, tuple[RegistryFilter, ...]] = {
    "/companies": (RegistryFilter("legal_name", "Company name", "k", "legal_name", "starts"),
                   *_COMPANY_FIELDS, RegistryFilter("email", "E-mail", "k", "email", "starts"),
                   RegistryFilter("erp_id", "ERP id", "k", "erp_id"), *_SECTORS, *_SOURCES,
                   RegistryFilter("company_type", "Type", "k", "company_type")),
    "/company-users": (RegistryFilter("first_name", "Name", "x", "first_name", "starts"),
                       RegistryFilter("last_name", "Surname", "x", "last_name", "starts"),
                       RegistryFilter("company", "Company", "k", "legal_name", "starts"),
                       RegistryFilter("email", "E-mail", "x", "email", "starts"),
                       RegistryFilter("erp_id", "ERP id", "x", "erp_id"),
                       RegistryFilter("role", "Role", "p", "role"), *_SECTORS),
    "/potential-companies": (RegistryFilter("legal_name", "Company name", "k", "legal_name", "starts"),
                             *_COMPANY_FIELDS, *_SECTORS, *_SOURCES,
                             RegistryFilter("email", "E-mail", "k", "email", "starts")),
}
# Each registry's source: its tables under the aliases its filters name.
REGISTRY_SOURCES = {
    "/companies": ("core.companies k", {"k": "core.companies"}),
    "/company-users": ("core.company_contacts p JOIN marts.contact_cards x ON x.customer_id = p.customer_id "
                       "JOIN core.companies k ON k.company_id = p.company_id",
                       {"p": "core.company_contacts", "x": "marts.contact_cards", "k": "core.companies"}),
    "/potential-companies": ("core.potential_companies k", {"k": "core.potential_companies"}),
}


def registry_filters(engine: Engine, path: str) -> list[RegistryFilter]:
    """The filters of the registry at ``path`` whose column this deployment has."""
    if path not in REGISTRY_FILTERS:
        return []
    tables = REGISTRY_SOURCES[path][1]
    have = {alias: set(_table_columns(engine, *_split(table))) if _has(engine, table) else set()
            for alias, table in tables.items()}
    return [f for f in REGISTRY_FILTERS[path] if f.column in have.get(f.alias, ())]


def registry_filter_options(engine: Engine, path: str) -> dict[str, list[tuple[str, int, str]]]:
    """Per ``is`` filter of the registry at ``path``, its values with how many rows of the
    registry hold each, the most frequent first (the page caches them per snapshot)."""
    out = {}
    source = REGISTRY_SOURCES.get(path, ("", {}))[0]
    hidden = f" AND x.customer_id NOT IN ({_hidden_sql(engine)})" if " x " in f" {source} " else ""
    for f in registry_filters(engine, path):
        if f.mode != "is":
            continue
        out[f.key] = [(str(v), int(n), "") for v, n in engine.rows(SqlStep("web.registry_filter_options", f"""
            SELECT CAST({f.alias}.{f.column} AS VARCHAR) AS v, count(*) AS n FROM {source}
            WHERE CAST({f.alias}.{f.column} AS VARCHAR) <> ''{hidden}
            GROUP BY v ORDER BY n DESC, v LIMIT {FILTER_OPTIONS}"""))]
    return out


def companies_search(engine: Engine, query: str, letter: str = "", limit: int = SEARCH_LIMIT,
                     filters: dict[str, str] | None = None) -> Table:
    """The B2B companies registry: every word must be in the legal name, VAT number, ERP
    id, e-mail, city, province or region; in legal-name order, with an initial filter."""
    if not _has(engine, "core.companies"):
        return Table("Companies", [], empty="This deployment has no company source.")
    people = ("(SELECT count(*) FROM core.company_contacts p WHERE p.company_id = k.company_id)"
              if _has(engine, "core.company_contacts") else "0")
    return _table(engine, "Companies", _registry_step(
        engine, "web.companies", "core.companies k",
        "concat_ws(' ', k.legal_name, k.vat_number, k.erp_id, k.email, k.city, k.province, k.region)",
        "k.legal_name", "lower(strip_accents(coalesce(k.legal_name, ''))), k.company_id",
        "k.company_id AS id, k.legal_name, k.vat_number, k.city, k.province, k.sector_macro, "
        f"k.employees, {people} AS people", query, letter, limit, "/companies", filters),
        empty="No company matches.", link="company")


def company_users_search(engine: Engine, query: str, letter: str = "",
                         limit: int = SEARCH_LIMIT, filters: dict[str, str] | None = None) -> Table:
    """The B2B company users registry: people linked to a company, found by name, e-mail,
    company, VAT number or role; in surname and name order (shown people only)."""
    if not (_has(engine, "core.company_contacts") and _has(engine, "core.companies")):
        return Table("Company users", [], empty="This deployment has no company users.")
    return _table(engine, "Company users", _registry_step(
        engine, "web.company_users", REGISTRY_SOURCES["/company-users"][0],
        "concat_ws(' ', x.last_name, x.first_name, x.email, x.mobile, k.legal_name, k.vat_number, p.role)",
        "coalesce(x.last_name, x.email)",
        "lower(strip_accents(coalesce(x.last_name, x.email, ''))), "
        "lower(strip_accents(coalesce(x.first_name, ''))), x.customer_id, k.company_id",
        "x.customer_id AS id, x.last_name AS surname, x.first_name AS name, x.email, "
        "k.legal_name AS company, k.vat_number, p.role", query, letter, limit, "/company-users", filters),
        empty="No company user matches.", link="card")


def potential_companies_search(engine: Engine, query: str, letter: str = "",
                               limit: int = SEARCH_LIMIT, filters: dict[str, str] | None = None) -> Table:
    """The potential (purchased) companies registry: every word in the legal name, VAT
    number, e-mail, city, province, region or status (``potential`` / ``registered``)."""
    if not _has(engine, "core.potential_companies"):
        return Table("Potential companies", [], empty="This deployment has no purchased lists.")
    return _table(engine, "Potential companies", _registry_step(
        engine, "web.potential_companies", "core.potential_companies k",
        "concat_ws(' ', k.legal_name, k.vat_number, k.email, k.city, k.province, k.region, "
        "k.country, k.status, k.source)",
        "k.legal_name", "lower(strip_accents(coalesce(k.legal_name, ''))), k.source, k.source_record_id",
        "k.registered_company_id AS company, k.legal_name, k.vat_number, k.city, k.province, "
        "k.country, k.sector_macro, k.status, k.registered_by, k.source", query, letter, limit,
        "/potential-companies", filters),
        empty="No potential company matches.", link="company")


@dataclass(frozen=True)
class Registry:
    """One registry list page: its address, words, and the read behind it."""

    path: str
    title: str
    placeholder: str
    initial: str
    order: str
    read: Callable[..., Table]
    filters: bool = False  # the per-field filters and the view selector (contacts)


def _contacts(engine: Engine, query: str, letter: str = "", limit: int = SEARCH_LIMIT,
              filters: dict[str, str] | None = None, view: str | None = None) -> Table:
    return search(engine, query, letter, limit, filters, view)


REGISTRIES = (
    Registry("/", "Contacts", "name, e-mail, phone, birth year or id", "Surname (else e-mail)",
             "surname and name, else e-mail", _contacts, filters=True),
    Registry("/companies", "Companies", "legal name, VAT number, city or ERP id", "Legal name",
             "legal name", companies_search),
    Registry("/company-users", "Company users", "name, e-mail, company, VAT number or role",
             "Surname (else e-mail)", "surname and name, else e-mail", company_users_search),
    Registry("/potential-companies", "Potential companies",
             "legal name, VAT number, city, status (potential, registered)", "Legal name",
             "legal name", potential_companies_search),
)


def company(engine: Engine, company_id: int) -> tuple[dict[str, Any] | None, list[Table]]:
    """A golden company with the lineage of its fields, its source records and its people
    (only people the page may show)."""
    if not _has(engine, "core.companies"):
        return None, []
    data = engine.columns(SqlStep("web.company", "SELECT * FROM core.companies WHERE company_id = $id",
                                  {"id": company_id}))
    if not data or not next(iter(data.values())):
        return None, []
    row = {k: v[0] for k, v in data.items()}
    tables = [_with_lineage(engine, "company", company_id, "company", list(row.items()))]
    if _has(engine, "core.company_contacts"):
        tables.append(_table(engine, "People of this company", SqlStep("web.company_people", f"""
            SELECT c.customer_id AS id, c.last_name AS surname, c.first_name AS name, c.email,
                   p.role
            FROM core.company_contacts p JOIN marts.contact_cards c ON c.customer_id = p.customer_id
            WHERE p.company_id = $id AND c.customer_id NOT IN ({_hidden_sql(engine)})
            ORDER BY surname, name, c.customer_id LIMIT $limit""",
            {"id": company_id, "limit": LIST_LIMIT}), empty="No person linked.", link="card"))
    return row, tables + _merged_sources(engine, "company", company_id, "company")


# ------------------------------------------------------------------------------- analytics

@dataclass
class Chart:
    """Counts to draw as bars: (label, value) pairs and what they add up to."""

    title: str
    bars: list[tuple[str, float]]
    unit: str = "contacts"
    empty: str = "Nothing built yet."

    @property
    def total(self) -> float:
        return sum(v for _, v in self.bars)

    @property
    def top(self) -> float:
        return max((v for _, v in self.bars), default=0) or 1


# An order's campaign: the person's last e-mail click on a campaign in the days before it.
ATTRIBUTION_DAYS = 7
ROAS_NOTE = (f"Revenue: orders placed within {ATTRIBUTION_DAYS} days after the buyer clicked a "
             "campaign's e-mail, each order to the last campaign clicked (last click). ROAS = "
             "revenue / cost over every channel of the campaign; campaigns without a cost line "
             "have no ROAS.")


def roas_step(engine: Engine) -> SqlStep:
    """Cost per campaign (every channel) beside the revenue of the orders it is credited
    with (:data:`ROAS_NOTE`); campaigns with a cost and no sale, and sales of a campaign
    with no cost line, both shown."""
    attributed = "SELECT CAST(NULL AS VARCHAR) AS campaign, CAST(NULL AS DECIMAL(18, 2)) AS amount, " \
                 "CAST(NULL AS BIGINT) AS customer_id WHERE FALSE"
    if _has(engine, "core.orders") and _has(engine, "core.events"):
        attributed = f"""
            SELECT campaign, amount, customer_id FROM (
                SELECT c.campaign, o.amount, o.customer_id,
                       row_number() OVER (PARTITION BY o.order_id ORDER BY c.occurred_at DESC,
                                          c.campaign) AS n
                FROM core.orders o JOIN (
                    SELECT customer_id, occurred_at,
                           json_extract_string(properties, '$.campaign_id') AS campaign
                    FROM core.events WHERE event_type = 'email_click') c
                  ON c.customer_id = o.customer_id
                 AND date_diff('day', CAST(c.occurred_at AS DATE), o.order_date)
                     BETWEEN 0 AND {ATTRIBUTION_DAYS}
                WHERE c.campaign IS NOT NULL) AS x
            WHERE n = 1"""
    return SqlStep("web.roas", f"""
        WITH costs AS (
            SELECT campaign_id AS campaign, sum(cost) AS cost, count(DISTINCT channel) AS channels
            FROM staging.campaign_costs GROUP BY campaign_id),
        sales AS (
            SELECT campaign, count(*) AS orders, count(DISTINCT customer_id) AS buyers,
                   sum(amount) AS revenue
            FROM ({attributed}) AS a GROUP BY campaign)
        SELECT coalesce(k.campaign, s.campaign) AS campaign, k.channels, k.cost,
               coalesce(s.orders, 0) AS orders, coalesce(s.buyers, 0) AS buyers,
               coalesce(s.revenue, 0) AS revenue,
               CAST(round(coalesce(s.revenue, 0) / nullif(k.cost, 0), 2) AS DOUBLE) AS roas
        FROM costs k FULL OUTER JOIN sales s ON s.campaign = k.campaign
        ORDER BY campaign DESC LIMIT 200""")


def analytics(engine: Engine) -> dict[str, Any]:
    """Headline numbers and the distributions an analyst looks at first; counts only."""
    out: dict[str, Any] = {"headline": [], "charts": [], "tables": []}
    if not _has(engine, "marts.contact_cards"):
        return out
    hidden = _hidden_sql(engine)
    cards, buyers, revenue, email_ok, sms_ok = engine.rows(SqlStep("web.headline", f"""
        SELECT count(*), count(*) FILTER (WHERE order_number > 0), coalesce(sum(order_summary), 0),
               count(*) FILTER (WHERE email_consent = 'granted'),
               count(*) FILTER (WHERE sms_consent = 'granted')
        FROM marts.contact_cards WHERE customer_id NOT IN ({hidden})"""))[0]
    out["headline"] = [("contacts", cards), ("buyers", buyers), ("revenue", revenue),
                       ("e-mail consent granted", email_ok), ("SMS consent granted", sms_ok)]

    def chart(title: str, step: SqlStep, unit: str = "contacts", empty: str = "Nothing built yet.") -> None:
        bars = [(str(label) if label is not None else "(none)", float(value))
                for label, value in engine.rows(step)]
        out["charts"].append(Chart(title, bars, unit, empty))

    if _has(engine, "ops.segment_runs"):
        # each segment's size on its latest built day, empty segments included
        chart("Segment sizes (each segment's latest built day)", SqlStep("web.segment_sizes", """
            SELECT segment, members FROM ops.segment_runs
            QUALIFY row_number() OVER (PARTITION BY segment ORDER BY as_of_date DESC, built_at DESC) = 1
            ORDER BY members DESC, segment"""))
    if _has(engine, "marketing.funnel_daily"):
        chart("Funnel: contacts per stage (latest day)", SqlStep("web.funnel", """
            SELECT stage, contacts FROM marketing.funnel_daily
            WHERE as_of_date = (SELECT max(as_of_date) FROM marketing.funnel_daily)
            ORDER BY stage_rank"""))
    if _has(engine, "marketing.rfm_scores"):
        chart("RFM groups (latest day)", SqlStep("web.rfm_groups", """
            SELECT rfm_group, count(*) AS contacts FROM marketing.rfm_scores
            WHERE as_of_date = (SELECT max(as_of_date) FROM marketing.rfm_scores)
            GROUP BY rfm_group ORDER BY contacts DESC, rfm_group"""))
    chart("Contacts by gender", SqlStep("web.by_gender", f"""
        SELECT nullif(gender, '') AS gender, count(*) FROM marts.contact_cards
        WHERE customer_id NOT IN ({hidden}) GROUP BY ALL ORDER BY 2 DESC, 1"""))
    chart("Contacts by country", SqlStep("web.by_country", f"""
        SELECT nullif(country, '') AS country, count(*) FROM marts.contact_cards
        WHERE customer_id NOT IN ({hidden}) GROUP BY ALL ORDER BY 2 DESC, 1 LIMIT 20"""))
    chart("Contacts by age band", SqlStep("web.by_age", f"""
        WITH a AS (
            SELECT CAST(floor(date_diff('day', birth_date, current_date) / 365.25) AS INTEGER) AS age
            FROM marts.contact_cards WHERE customer_id NOT IN ({hidden}))
        SELECT CASE WHEN age IS NULL THEN 'unknown' WHEN age < 25 THEN 'under 25'
                    WHEN age < 35 THEN '25-34' WHEN age < 45 THEN '35-44' WHEN age < 55 THEN '45-54'
                    WHEN age < 65 THEN '55-64' ELSE '65 and over' END AS band, count(*)
        FROM a GROUP BY ALL ORDER BY min(coalesce(age, 999))"""))
    if _has(engine, "ops.import_reject_reasons"):
        # the 15 commonest reasons, the rest as one bar, so that the bars add up to every reject
        chart("Records rejected at import, by field and reason", SqlStep("web.reject_reasons", """
            WITH r AS (
                SELECT field || ': ' || reason AS reason, sum(records) AS records
                FROM ops.import_reject_reasons GROUP BY ALL),
            k AS (SELECT reason, records, row_number() OVER (ORDER BY records DESC, reason) AS n FROM r)
            SELECT CASE WHEN n <= 15 THEN reason ELSE '(other reasons)' END AS reason,
                   CAST(sum(records) AS BIGINT) AS records
            FROM k GROUP BY 1 ORDER BY min(n)"""),
            unit="records", empty="No record rejected.")
    if _has(engine, "staging.offers"):
        orders = _has(engine, "core.orders")
        uses = ("LEFT JOIN (SELECT offer_id, count(*) AS uses, sum(amount) AS revenue FROM core.orders "
                "WHERE offer_id IS NOT NULL GROUP BY offer_id) o ON o.offer_id = f.source_record_id"
                if orders else "")
        out["tables"].append(_table(engine, "Offers report", SqlStep("web.offers", f"""
            SELECT f.source_record_id AS offer, f.description, f.valid_from, f.valid_to,
                   {"coalesce(o.uses, 0)" if orders else "0"} AS orders_using_it,
                   {"coalesce(o.revenue, 0)" if orders else "0"} AS revenue
            FROM staging.offers f {uses}
            ORDER BY orders_using_it DESC, offer"""), empty="No offer delivered."))
    if _has(engine, "marts.contact_changes"):
        out["tables"].append(_table(engine, "New, updated and deleted contacts per day", SqlStep(
            "web.contact_changes", """
            SELECT as_of_date AS day, new, updated, deleted, contacts, compared_with
            FROM marts.contact_changes ORDER BY as_of_date DESC LIMIT 60"""),
            note="Against the cards of the previous day the job ran (compared_with); on the first "
                 "day every contact counts as new. Deleted: erased, soft-deleted or merged.",
            empty="Not computed yet: run the daily job."))
    # a deployment whose order source maps no sales channel has no channel columns
    channels = [c for c in ("channel_macro", "channel_micro")
                if _has(engine, "core.orders") and c in _table_columns(engine, "core", "orders")]
    if channels:
        keys = ", ".join(channels)
        out["tables"].append(_table(engine, "Sales per channel", SqlStep("web.sales_channels", f"""
            SELECT {keys}, count(*) AS orders,
                   count(DISTINCT customer_id) AS buyers, sum(amount) AS revenue
            FROM core.orders GROUP BY ALL ORDER BY revenue DESC NULLS LAST, {keys}
            LIMIT 50"""), note="Per sales channel; ROAS is per campaign, below (it needs a "
                                "campaign_cost source).", empty="No order."))
    if _has(engine, "staging.campaign_costs"):
        out["tables"].append(_table(engine, "Sales and ROAS per campaign", roas_step(engine),
                                    empty="No campaign cost delivered.", note=ROAS_NOTE))
        out["tables"].append(_table(engine, "Campaign costs per channel", SqlStep("web.campaign_costs", """
            SELECT campaign_id AS campaign, channel, min(spend_date) AS first_day,
                   max(spend_date) AS last_day, sum(cost) AS cost
            FROM staging.campaign_costs GROUP BY ALL ORDER BY campaign DESC, cost DESC, channel
            LIMIT 300"""), empty="No campaign cost delivered."))
    if _has(engine, "ops.import_report"):
        out["tables"].append(_table(engine, "Import health per day", SqlStep("web.import_health", """
            SELECT CAST(loaded_at AS DATE) AS day, count(*) AS files,
                   count(*) FILTER (WHERE status = 'failed') AS failed_files,
                   CAST(sum(records) AS BIGINT) AS records, CAST(sum(new) AS BIGINT) AS new,
                   CAST(sum(updated) AS BIGINT) AS updated, CAST(sum(rejected) AS BIGINT) AS rejected,
                   CAST(sum(coalesce(suppressed, 0)) AS BIGINT) AS suppressed
            FROM ops.import_report GROUP BY ALL ORDER BY day DESC LIMIT 60"""),
            empty="No file loaded yet."))
    if _has(engine, "history.runs") and _has(engine, "ops.import_report"):
        out["tables"].append(_table(engine, "Run history per day", days_step(engine),
                                    empty="No day recorded yet.",
                                    note="Files, rows and customers of each day's runs; segment "
                                         "entries and exits dated that day; that day's feeds only."))
    if _has(engine, "ops.segment_runs"):
        out["tables"].append(_table(engine, "Segment sizes over time", SqlStep("web.segment_runs", """
            SELECT as_of_date, segment, members FROM ops.segment_runs
            QUALIFY row_number() OVER (PARTITION BY segment, as_of_date ORDER BY built_at DESC) = 1
            ORDER BY as_of_date DESC, segment LIMIT 500"""), empty="No segment built yet."))
    return out
