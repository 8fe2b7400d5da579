"""The page's published snapshot: the tables it reads, copied as Parquet at the end of a run.

Why: DuckDB has one writer per file, and a writer blocks even read-only readers
(RELIABILITY.md rule 3), so a page over the warehouse itself answers 503 for as long as
the daily job writes. The run (and every command that erases or soft-deletes people)
instead publishes a copy of what the page reads into a new folder next to the warehouse,
then points ``CURRENT`` at it with an atomic rename; the page reads the folder
``CURRENT`` names and never opens the warehouse file. A reader that opened the previous
folder keeps reading it: the current folder and the one it replaced are kept.

Layout, for a warehouse ``var/demo/warehouse.duckdb``::

    var/demo/warehouse.web/CURRENT                      the published folder's name
    var/demo/warehouse.web/20261206T120000-ab12cd/      one Parquet file per table,
        core.orders.parquet, marts.contact_cards.parquet, ..., manifest.json

Person-level tables are written in ``customer_id`` order, so that a card's look-up reads
one Parquet row group of each table (row-group statistics), not the whole file.

``core.events`` (50 M rows at the reference scale; sorting them took 32 s a day) is
published as a base and the days since: the base file of an earlier publish is linked
into the new folder (no copy), ``core.events.delta.parquet`` holds the rows that
appeared since the base's day and are still there, and ``core.events.hidden.parquet``
the keys of the base's rows that went away or changed; the page reads the base less the
hidden keys plus the delta. Both come from the history of ``core.events`` that the
day's ``history/days`` recorded (:mod:`tessera.history.versions`), not from a scan of
the table. The base is written again (in full) when it is a week old, when the delta
passes a quarter of it, after an erasure, when the table's columns changed, when
``core.events`` was built after the newest recorded day, and whenever the count of
what the page would read differs from the table's.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tessera.engine import Engine, SqlStep
from tessera.privacy.consent import SOFT_DELETED_SQL

POINTER = "CURRENT"

# Every table the page and the report read; a deployment lacks some (they are skipped).
READ_TABLES = (
    "marts.contact_cards", "marts.contact_search", "marts.contact_search_tokens", "marts.coworkers", "marts.contact_changes",
    "core.customers", "core.customer_field_lineage", "core.customer_sources", "core.merge_log",
    "core.consents", "core.consent_events", "core.orders", "core.events", "core.notes",
    "core.tasks", "core.companies", "core.company_contacts", "core.company_field_lineage",
    "core.company_sources", "core.bounce_status", "staging.bounces",
    "staging.offers", "core.potential_companies", "staging.campaign_costs",
    "marketing.segment_history", "marketing.stage_history", "marketing.stages",
    "marketing.scores", "marketing.score_actions", "marketing.contact_tags",
    "marketing.rfm_scores", "marketing.funnel_daily",
    "ops.segment_runs", "ops.import_report", "ops.import_reject_reasons",
    "ops.runs",
    "activation.coupons", "activation.journey_state", "activation.journey_history",
    "activation.outbox", "activation.outbox_subjects", "activation.evaluated_days",
    "core.messages", "core.app_events", "core.mobile_profiles", "core.contact_details",
)
# Tables published through a select of their own: the outbox without its payload (the
# fields a pending send reads) and with the target only where it is not an address.
READ_SELECTS = {
    "activation.outbox": (
        "SELECT action_key, as_of_date, origin, name, step, customer_id, kind, channel, "
        "CASE WHEN kind IN ('tag', 'webhook', 'coupon') THEN target END AS target, status, "
        "attempts, queued_at, sent_at, last_error FROM activation.outbox"),
}
# Tables written in another order than the person's: the search's keys in registry order
# (the first results are the first rows) and its token index by token (a word's range scan
# reads the row groups whose min/max hold it, one or two of them).
ORDERS = {"marts.contact_search": "search_rank", "marts.contact_search_tokens": "token"}
# Published under another name: who is soft-deleted now (the page hides them). The live
# request log's order (its rowid) does not survive a copy, so its outcome is copied.
SOFT_DELETED = "ops.soft_deleted"
# Schemas whose every table is read (the card's discovered tabs and their accuracy).
# ``views``: the view nodes' cards and lineage (the page's view selector). Their base
# tables only: the SQL views beside them (recommendations.<kind>, the latest day of the
# lists) are other selects of the same rows, which the page does not read.
READ_SCHEMAS = ("predictions", "recommendations", "views")
# Tables of those schemas the page never reads: the recommendations' stored model and the
# signatures of each day's inputs (millions of rows of factors, pairs and hashes).
NOT_READ = frozenset({"recommendations.model_products", "recommendations.model_factors",
                      "recommendations.model_pairs", "recommendations.list_inputs"})
VIEW_CARDS = "_contact_cards"


def view_search_tables(view: str) -> tuple[str, str]:
    """The search keys and token index published for a view node's cards (quoted)."""
    return f'views."{view}_contact_search"', f'views."{view}_contact_search_tokens"'


def _view_search_selects(engine: Engine, table: str) -> dict[str, str]:
    """The search keys and token index of a view node's cards (``views.<node>_contact_cards``),
    computed while publishing: the main view's come from the card stage, a view's would
    otherwise be folded from its cards at every search (a scan of every card of the node)."""
    from tessera.card.search import SEARCHED, contact_search_select, contact_search_tokens_select

    view = table[len("views."):-len(VIEW_CARDS)]
    have = {r[0] for r in engine.rows(SqlStep(
        "web.snapshot_view_columns", "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = 'views' AND table_name = $table", {"table": table[len("views."):]}))}
    keys = contact_search_select([f for f in SEARCHED if f not in have]).replace(
        "FROM marts.contact_cards", f'FROM views."{table[len("views."):]}"')
    tokens = contact_search_tokens_select("search_keys")
    keys_name, tokens_name = (t.replace('"', "") for t in view_search_tables(view))
    return {keys_name: f"SELECT * FROM ({keys}) ORDER BY search_rank",
            tokens_name: f"WITH search_keys AS ({keys}) SELECT * FROM ({tokens}) ORDER BY token"}


def snapshot_root(warehouse: str | Path) -> Path:
    """The folder holding a warehouse's published snapshots."""
    warehouse = Path(warehouse)
    return warehouse.with_name(warehouse.stem + ".web")


def current(warehouse: str | Path) -> Path | None:
    """The folder the page reads now, or None while nothing was published."""
    root = snapshot_root(warehouse)
    try:
        name = (root / POINTER).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    folder = root / name
    return folder if name and folder.is_dir() else None


def _tables(engine: Engine) -> list[str]:
    found = [t for t in READ_TABLES if engine.table_exists(*t.split("."))]
    for schema in READ_SCHEMAS:
        found += [t for t in (f"{schema}.{name}" for (name,) in engine.rows(SqlStep(
            "web.snapshot_schema", "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = $schema AND table_type = 'BASE TABLE' ORDER BY table_name",
            {"schema": schema}))) if t not in NOT_READ]
    return found


def _has_customer_id(engine: Engine, table: str) -> bool:
    return _has_column(engine, table, "customer_id")


def _has_column(engine: Engine, table: str, column: str) -> bool:
    schema, name = table.split(".")
    return bool(engine.scalar(SqlStep(
        "web.snapshot_columns", "SELECT count(*) FROM information_schema.columns "
        "WHERE table_schema = $schema AND table_name = $table AND column_name = $column",
        {"schema": schema, "table": name, "column": column})))


LABELS = "web.filter_labels"


def _labels_step(labels: list[tuple[str, str, str]]) -> SqlStep:
    """``(filter, value, label)`` rows as a select of bound values (a few hundred at most)."""
    values = ", ".join(f"($f{i}, $v{i}, $l{i})" for i in range(len(labels)))
    params = {}
    for i, (key, value, label) in enumerate(labels):
        params.update({f"f{i}": key, f"v{i}": str(value), f"l{i}": label})
    return SqlStep("web.snapshot_labels", f"SELECT * FROM (VALUES {values}) AS t(filter, value, label)",
                   params)


EVENTS = "core.events"
# the base's rows that went away or changed (their keys), and the rows since its day
DELTA, HIDDEN = "delta", "hidden"
REBASE_DAYS = 7
REBASE_SHARE = 0.25


def _manifest(folder: Path | None) -> dict:
    try:
        return json.loads((folder / "manifest.json").read_text(encoding="utf-8")) if folder else {}
    except (OSError, ValueError):
        return {}


def _events_increment(engine: Engine, previous: Path | None, columns: list[str]) -> dict | None:
    """What the day's ``core.events`` needs on top of the previous folder's base (its
    day, rows, and the selects of the delta and the hidden keys), or None: publish it in
    full. See the module's docstring for when."""
    from tessera.history.versions import history_table, recorded_days

    base = _manifest(previous).get("events_base")
    hist = history_table(EVENTS)
    if not base or previous is None or not (previous / f"{EVENTS}.parquet").exists():
        return None
    if base.get("columns") != columns or not engine.table_exists("history", hist.split(".")[1]):
        return None
    if not engine.table_exists("ops", "events_state"):
        return None
    days = recorded_days(engine)
    base_day = dt.date.fromisoformat(base["day"])
    if not days or days[-1] <= base_day or (days[-1] - base_day).days >= REBASE_DAYS:
        return None
    latest = days[-1]
    # core.events as the newest recorded day saw it: built no later than it was recorded
    if not _events_of_day(engine, latest):
        return None
    if engine.table_exists("ops", "erasures") and engine.scalar(SqlStep(
            "web.snapshot_erasures_since", "SELECT count(*) FROM ops.erasures WHERE erased_at >= $at",
            {"at": dt.datetime.fromisoformat(base["published_local"])})):
        return None
    select = ", ".join(f'h."{c}"' for c in columns)
    params = {"base": base_day, "day": latest}
    delta = (f"SELECT {select} FROM {hist} h WHERE h._from > $base AND h._from <= $day AND NOT EXISTS ("
             f"SELECT 1 FROM {hist}__closed x WHERE x._row_hash = h._row_hash AND x._copy = h._copy "
             "AND x._from = h._from AND x._to <= $day) ORDER BY h.customer_id")
    hidden = (f"SELECT DISTINCT h.source, h.event_id FROM {hist}__closed x JOIN {hist} h "
              "ON h._row_hash = x._row_hash AND h._copy = x._copy AND h._from = x._from "
              "WHERE x._to > $base AND x._to <= $day AND x._from <= $base")
    return {"day": latest, "base": base, "delta": SqlStep("web.snapshot_events_delta", delta, params),
            "hidden": SqlStep("web.snapshot_events_hidden", hidden, params)}


def _events_of_day(engine: Engine, day: dt.date) -> bool:
    """Whether ``core.events`` is the one the history recorded for ``day`` (built no later
    than the day was recorded)."""
    built, recorded = engine.rows(SqlStep("web.snapshot_events_times", """
        SELECT (SELECT max(built_at) FROM ops.events_state),
               (SELECT max(recorded_at) FROM history.days WHERE as_of_date = $day)""", {"day": day}))[0]
    return built is not None and recorded is not None and built <= recorded


def _base_of(engine: Engine, columns: list[str]) -> dict | None:
    """What a full copy of ``core.events`` is a base of: the newest recorded day, when the
    table is that day's (built no later than the day was recorded); else None (the next
    publish copies it in full again)."""
    from tessera.history.versions import recorded_days

    days = recorded_days(engine)
    if not days or not engine.table_exists("ops", "events_state"):
        return None
    if not _events_of_day(engine, days[-1]):
        return None
    return {"day": str(days[-1]), "published_local": dt.datetime.now().replace(microsecond=0).isoformat(),
            "columns": columns}


def _publish_events(engine: Engine, previous: Path, work: Path, plan: dict) -> int | None:
    """The base linked, the delta and the hidden keys written; the rows the page will
    read, or None (nothing kept) when they do not add up to the table's."""
    base = previous / f"{EVENTS}.parquet"
    delta = engine.copy_to(plan["delta"], work / f"{EVENTS}.{DELTA}.parquet", "parquet")
    hidden = engine.copy_to(plan["hidden"], work / f"{EVENTS}.{HIDDEN}.parquet", "parquet")
    rows = int(plan["base"]["rows"]) - hidden + delta
    total = int(engine.scalar(SqlStep("web.snapshot_events_count", f"SELECT count(*) FROM {EVENTS}")) or 0)
    if rows != total or delta > REBASE_SHARE * int(plan["base"]["rows"]):
        for part in (DELTA, HIDDEN):
            (work / f"{EVENTS}.{part}.parquet").unlink(missing_ok=True)
        return None
    try:
        os.link(base, work / f"{EVENTS}.parquet")
    except OSError:  # another file system: a copy of the file, still no sort
        shutil.copyfile(base, work / f"{EVENTS}.parquet")
    return rows


def publish(engine: Engine, warehouse: str | Path,
            labels: list[tuple[str, str, str]] | None = None, full: bool = False) -> dict:
    """Copy the tables the page reads to a new folder and make it the current one.

    ``labels`` (``(filter, value, label)``: the settings tables of ``lookups.yaml`` for the
    search's filters, see ``queries.FILTERS``) are written as ``web.filter_labels``, since
    the page reads no configuration. ``full``: write ``core.events`` in full (after an
    erasure). Returns counts for the run's metadata (tables, rows, bytes), no personal data."""
    root = snapshot_root(warehouse).resolve()
    root.mkdir(parents=True, exist_ok=True)
    previous = current(warehouse)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    name = f"{stamp}-{uuid.uuid4().hex[:6]}"
    work = root / f".{name}.tmp"
    work.mkdir()
    try:
        rows: dict[str, int] = {}
        selects = {t: READ_SELECTS.get(t, f"SELECT * FROM {t}") for t in _tables(engine)}
        events_base = None
        if EVENTS in selects:
            columns = list(engine.columns(SqlStep("web.snapshot_events_columns", f"SELECT * FROM {EVENTS} LIMIT 0")))
            plan = None if full else _events_increment(engine, previous, columns)
            kept = _publish_events(engine, previous, work, plan) if plan else None
            if kept is not None:
                rows[EVENTS] = kept
                events_base = plan["base"]
                del selects[EVENTS]
            else:
                events_base = _base_of(engine, columns)
        if engine.table_exists("ops", "bulk_edits"):
            selects[SOFT_DELETED] = (f"SELECT customer_id, requested_at FROM ({SOFT_DELETED_SQL}) "
                                     "WHERE customer_id IS NOT NULL")
        for table in [t for t in selects if t.startswith("views.") and t.endswith(VIEW_CARDS)]:
            for index, select in _view_search_selects(engine, table).items():
                rows[index] = engine.copy_to(SqlStep("web.snapshot_view_search", select),
                                             work / f"{index}.parquet", "parquet")
        for table, select in selects.items():
            person = table == SOFT_DELETED or _has_customer_id(engine, table)
            if person and table.split(".")[0] in READ_SCHEMAS and table not in READ_SELECTS and \
                    _has_column(engine, table, "as_of_date"):
                # a person's rows of the latest day are all the page shows of these (see
                # queries._discovered, queries._recommendations); the lists keep a week of
                # days, which would be copied again every day
                select = f"{select} WHERE as_of_date = (SELECT max(as_of_date) FROM {table})"
            order = " ORDER BY customer_id" if person else ""
            if table in ORDERS and _has_column(engine, table, ORDERS[table]):
                order = f" ORDER BY {ORDERS[table]}"
            rows[table] = engine.copy_to(SqlStep(f"web.snapshot_copy.{table}", f"{select}{order}"),
                                         work / f"{table}.parquet", "parquet")
        if labels:
            rows[LABELS] = engine.copy_to(_labels_step(labels), work / f"{LABELS}.parquet", "parquet")
        published_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        manifest = {"published_at": published_at, "rows": rows}
        if events_base is not None:
            events_base.setdefault("rows", rows.get(EVENTS, 0))
            manifest["events_base"] = events_base
        (work / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str), encoding="utf-8")
        work.rename(root / name)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    pointer = root / f".{POINTER}.{name}.tmp"
    pointer.write_text(name, encoding="utf-8")
    os.replace(pointer, root / POINTER)
    # Kept: the new folder and the one it replaced (a reader may still hold it). Chosen by
    # the pointer, not by sorting names: two publishes in one second share the stamp and
    # their random suffixes sort either way, which once pruned the folder just published.
    keep = {name} | ({previous.name} if previous is not None else set())
    for old in root.iterdir():
        if old.is_dir() and not old.name.startswith(".") and old.name not in keep:
            shutil.rmtree(old, ignore_errors=True)
    size = sum(f.stat().st_size for f in (root / name).iterdir())
    return {"folder": str(root / name), "tables": len(rows), "rows": sum(rows.values()),
            "bytes": size, "published_at": published_at}


def republish_if_published(engine: Engine, warehouse: str | Path) -> dict | None:
    """After an erasure or a soft-delete: publish again, so the page stops showing the
    person now rather than after the next run (nothing to do where nothing is published).
    The filters' labels are carried over from the current folder."""
    folder = current(warehouse)
    if folder is None:
        return None
    # every table in full: the erased person's events leave the base too
    return publish(engine, warehouse, _published_labels(folder), full=True)


def _published_labels(folder: Path) -> list[tuple[str, str, str]] | None:
    path = folder / f"{LABELS}.parquet"
    if not path.exists():
        return None
    from tessera.engine import read_snapshot

    with read_snapshot(folder) as snap:
        return [tuple(r) for r in snap.rows(SqlStep(
            "web.snapshot_read_labels", f"SELECT filter, value, label FROM {LABELS}"))]


def filter_labels(deployment) -> list[tuple[str, str, str]]:
    """The labels of the settings-table values the search's filters offer (profession,
    interests, sources ...): the lookup each filter's first column names in the contact
    contract, macro or micro, from ``lookups.yaml`` (predefined source macros included)."""
    from tessera.contracts import entity_contracts
    from tessera.web.queries import FILTERS

    fields = entity_contracts()["contact"].fields
    out = []
    for key, _label, cols in FILTERS:
        spec = fields.get(cols[0])
        if spec is None or not spec.lookup or "." not in spec.lookup:
            continue
        table, level = spec.lookup.split(".", 1)
        if level not in ("macro", "micro"):
            continue
        lookup = deployment.lookup_table(table)
        out += [(key, str(v.id), str(v.label)) for v in getattr(lookup, level)]
    return out


@contextmanager
def reader(warehouse: str | Path) -> Iterator[Engine]:
    """What the page reads: the published snapshot, or the warehouse itself (read-only,
    503 while a run writes) where a run has never published one."""
    from tessera.engine import read_only, read_snapshot

    folder = current(warehouse)
    opened = read_snapshot(folder) if folder is not None else read_only(warehouse)
    with opened as engine:
        yield engine
