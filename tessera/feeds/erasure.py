"""Erasure in what the feeds keep: the published files still on disk and the HTTP batch
bodies not acknowledged yet.

``tessera forget`` (and ``purge``) delete a person's rows from every warehouse table in
one transaction, ``exports.<feed>`` (the diff state) included. What it cannot reach from
the privacy layer is finished here, right after it, and again at the start of every
feed's delivery, so that a forget killed in between is completed by the next run:

* every kept file of the feed (``exports.feed_files``) is read back, the erased
  customers' rows are left out, and the file is written again by the same writer
  (atomically), its manifest and checksums updated. An erasure notice (the deletions
  file, or a removed row that carries only the id) stays: it is how the receiver learns
  to delete; a removed row that also carried hashed identifiers keeps only the id.
* the unacknowledged batch bodies are scrubbed by
  :func:`tessera.feeds.delivery.scrub_erased_batches`.

``exports.feed_scrubs`` records each (feed, erasure request) done, so the files are read
only when an erasure is new to the feed.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from xml.etree import ElementTree as ET

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tessera.engine import Engine, SqlStep, as_engine
from tessera.feeds.delivery import scrub_erased_batches
from tessera.feeds.diff import full_step, removal_columns
from tessera.feeds.files import _atomically, sha256_file
from tessera.feeds.formats import schema_of, write_feed_file

SCRUBS_DDL = SqlStep("feeds.scrubs_ddl", """
    CREATE TABLE IF NOT EXISTS exports.feed_scrubs (
        feed VARCHAR NOT NULL, request_id VARCHAR NOT NULL, files_rewritten INTEGER NOT NULL,
        rows_dropped BIGINT NOT NULL, scrubbed_at TIMESTAMP NOT NULL)""")


def _id_column(feed) -> str:
    return next(c.out for c in feed.columns if c.field == "customer_id")


def _output_schema(engine: Engine, feed) -> pa.Schema:
    """The types the feed's files carry (its output columns over the stored rows)."""
    return schema_of(engine, full_step(feed, f"exports.{feed.name}"))


def _read_xlsx(path: Path) -> pa.Table:
    """Our own XLSX (tessera.feeds.formats): inline strings, typed numbers, dates."""
    from openpyxl import load_workbook

    wb = load_workbook(path, read_only=True, data_only=True)
    try:
        rows = list(wb.active.iter_rows(values_only=True))
    finally:
        wb.close()
    head = [str(h) for h in rows[0]] if rows else []
    cols = {h: [r[i] if i < len(r) else None for r in rows[1:]] for i, h in enumerate(head)}
    return pa.table({h: pa.array(v) for h, v in cols.items()}) if head else pa.table({})


def _read_xml(path: Path, names: list[str]) -> pa.Table:
    """Our own XML: every value as its text (the writer renders each as its text too)."""
    root = ET.parse(path).getroot()
    recs = [{c.tag: c.text or "" for c in rec} for rec in root]
    return pa.table({n: pa.array([r.get(n) for r in recs], pa.string()) for n in names})


def read_feed_file(engine: Engine, path: Path, feed, names: list[str]) -> pa.Table:
    """A published file back as a table (column names ``names`` where the file has none)."""
    fmt = feed.format
    if fmt == "parquet":
        return pq.read_table(path)
    if fmt == "csv":
        d = feed.csv
        t = engine.arrow(SqlStep("feeds.read_back_csv", (
            "SELECT * FROM read_csv(?, delim = ?, quote = ?, escape = ?, header = ?, "
            "all_varchar = true, auto_detect = false, columns = ?)"),
            [str(path), d.delimiter, d.quote, d.quote, d.header, {n: "VARCHAR" for n in names}]))
        return t
    if fmt == "jsonl":
        return engine.arrow(SqlStep("feeds.read_back_jsonl",
                                    "SELECT * FROM read_json(?, format = 'newline_delimited')",
                                    [str(path)]))
    if fmt == "xlsx":
        return _read_xlsx(path)
    if fmt == "xml":
        return _read_xml(path, names)
    raise ValueError(f"unknown feed format {fmt!r}")


def _typed(table: pa.Table, schema: pa.Schema, fmt: str) -> pa.Table:
    """Back to the types the writer was given (XML stays text: text renders the same;
    CSV is read as text and typed again, since only text is neutralised), so that every
    kept row is written as it was."""
    if fmt == "xml":
        return table
    cols = []
    for f in schema:
        if f.name not in table.column_names:
            return table
        col = table.column(f.name)
        try:
            cols.append(col if col.type == f.type else pc.cast(col, f.type, safe=False))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            cols.append(col)
    return pa.table(cols, names=[f.name for f in schema])


def _names(feed, kind: str) -> list[str]:
    return ([c.out for c in removal_columns(feed)] if kind == "removed" else
            ["customer_id"] if kind == "deletions" else [c.out for c in feed.columns])


def _scrub_file(engine: Engine, feed, path: Path, kind: str, erased: pa.Array,
                schema: pa.Schema) -> tuple[int, int, str] | None:
    """Rewrite one file without the erased customers' rows; (rows, dropped, sha256), or
    None when it holds none of them."""
    if kind == "deletions":
        return None  # erasure notices: the id only, and they stay
    id_col = _id_column(feed)
    cols = _names(feed, kind)
    table = read_feed_file(engine, path, feed, cols)
    if id_col not in table.column_names or table.num_rows == 0:
        return None
    ids = pc.cast(table.column(id_col), pa.int64(), safe=False)
    hit = pc.fill_null(pc.is_in(ids, value_set=erased), False)
    if not pc.any(hit).as_py():
        return None
    sub = pa.schema([schema.field(c) for c in cols if c in schema.names])
    table = _typed(table, sub, feed.format)
    if kind == "removed":
        # an erased person's removal stays, as the id only (like an erasure notice)
        others = [n for n in table.column_names if n != id_col]
        only_id = [pc.if_else(hit, pa.nulls(table.num_rows, table.column(n).type), table.column(n))
                   for n in others]
        if all(pc.all(pc.is_null(pc.filter(table.column(n), hit))).as_py() for n in others):
            return None  # already the id only
        table = pa.table([table.column(id_col), *only_id], names=[id_col, *others]).select(
            table.column_names)
        dropped = 0
    else:
        table = table.filter(pc.invert(hit))
        dropped = int(pc.sum(hit.cast(pa.int64())).as_py())
    name = f"_feed_scrub_{feed.name}"
    engine.register_arrow(name, table)
    try:
        select = ", ".join('"' + c.replace('"', '""') + '"' for c in table.column_names)
        stats = write_feed_file(engine, SqlStep("feeds.scrubbed", f"SELECT {select} FROM {name}"),
                                path, feed.format, csv_dialect=feed.csv, xml_names=feed.xml,
                                for_spreadsheet=feed.for_spreadsheet)
    finally:
        engine.unregister(name)
    return stats.rows, dropped, stats.sha256


def _update_manifest(path: Path, changed: dict[str, tuple[int, str]]) -> None:
    if not path.exists():
        return
    manifest = json.loads(path.read_text(encoding="utf-8"))
    for f in manifest.get("files", []):
        if f["file"] in changed:
            f["rows"], f["sha256"] = changed[f["file"]]
    if manifest.get("file") in changed:
        manifest["rows"], manifest["sha256"] = changed[manifest["file"]]
    text = json.dumps(manifest, indent=2, sort_keys=True, default=str).encode("utf-8")
    with _atomically(path, needed=len(text), mode="wb") as fh:
        fh.write(text)


def scrub_feed(engine: Engine, feed, feeds_dir: Path, now: dt.datetime) -> dict[str, int]:
    """Finish every erasure this feed has not scrubbed from its kept files yet; then the
    unacknowledged batch bodies. Returns counts (no ids)."""
    engine = as_engine(engine)
    out = {"files_rewritten": 0, "rows_dropped": 0}
    if not engine.table_exists("ops", "erasures"):
        return out
    engine.run(SCRUBS_DDL)
    out.update(scrub_erased_batches(engine))
    requests = [r[0] for r in engine.rows(SqlStep("feeds.scrubs_owed", """
        SELECT DISTINCT request_id FROM ops.erasures WHERE customer_id IS NOT NULL
          AND request_id NOT IN (SELECT request_id FROM exports.feed_scrubs WHERE feed = ?)
        ORDER BY 1""", [feed.name]))]
    if not requests:
        return out
    erased = pa.array([r[0] for r in engine.rows(SqlStep(
        "feeds.erased_ids", "SELECT DISTINCT customer_id FROM ops.erasures "
        "WHERE customer_id IS NOT NULL"))], pa.int64())
    files = (engine.rows(SqlStep("feeds.kept_files", """
        SELECT as_of_date, kind, file, sha256 FROM exports.feed_files WHERE feed = ?
        ORDER BY 1, 2""",
        [feed.name])) if engine.table_exists("exports", "feed_files") else [])
    schema = _output_schema(engine, feed) if engine.table_exists("exports", feed.name) else None
    out_dir = Path(feeds_dir) / feed.name
    by_day: dict[dt.date, dict[str, tuple[int, str]]] = {}
    for day, kind, file, recorded in files:
        path = out_dir / file
        if schema is None or not path.exists():
            continue
        done = _scrub_file(engine, feed, path, kind, erased, schema)
        if done is None:
            if sha256_file(path) != recorded:  # rewritten by a scrub killed before its record
                rows = read_feed_file(engine, path, feed, _names(feed, kind)).num_rows
                by_day.setdefault(day, {})[file] = (rows, sha256_file(path))
            continue
        rows, dropped, sha = done
        by_day.setdefault(day, {})[file] = (rows, sha)
        out["files_rewritten"] += 1
        out["rows_dropped"] += dropped
    with engine.together():
        for day, changed in by_day.items():
            _update_manifest(out_dir / f"{feed.name}_{day.isoformat()}.manifest.json", changed)
            for file, (rows, sha) in changed.items():
                engine.run(SqlStep("feeds.scrubbed_file", """
                    UPDATE exports.feed_files SET rows = ?, sha256 = ?
                    WHERE feed = ? AND as_of_date = ? AND file = ?""",
                    [rows, sha, feed.name, day, file]))
                engine.run(SqlStep("feeds.scrubbed_delivery", """
                    UPDATE exports.feed_deliveries SET sha256 = ?
                    WHERE feed = ? AND as_of_date = ? AND file LIKE '%/' || ?""",
                    [sha, feed.name, day, file]))
        engine.append("exports.feed_scrubs", SqlStep("feeds.scrub_done", """
            SELECT ?, unnest(CAST(? AS VARCHAR[])), ?, ?, CAST(? AS TIMESTAMP)""",
            [feed.name, requests, out["files_rewritten"], out["rows_dropped"], now]))
    return out


def unconfigured_feeds(engine: Engine, configured: set[str]) -> tuple[list, list[str]]:
    """Feeds with kept files (``exports.feed_files``) that ``feeds.yaml`` no longer has:
    their definitions as last delivered (``exports.feed_definitions``), and the names of
    those delivered before definitions were kept (their files cannot be read back)."""
    from tessera.settings.feeds import FeedDef

    if not engine.table_exists("exports", "feed_files"):
        return [], []
    names = [r[0] for r in engine.rows(SqlStep(
        "feeds.kept_feeds", "SELECT DISTINCT feed FROM exports.feed_files ORDER BY 1"))
             if r[0] not in configured]
    stored = dict(engine.rows(SqlStep(
        "feeds.definitions", "SELECT feed, definition FROM exports.feed_definitions"))) \
        if names and engine.table_exists("exports", "feed_definitions") else {}
    return ([FeedDef.model_validate_json(stored[n]) for n in names if n in stored],
            [n for n in names if n not in stored])


def scrub_feeds(engine: Engine, feeds, feeds_dir: Path, now: dt.datetime) -> dict[str, int]:
    """:func:`scrub_feed` for every configured feed (``tessera forget`` / ``purge``), and
    for every feed removed from the configuration whose files are still kept: the files
    were delivered, so they are scrubbed by the definition they were written with."""
    engine = as_engine(engine)
    total = {"files_rewritten": 0, "rows_dropped": 0, "batches_scrubbed": 0,
             "records_dropped": 0, "batches_erased": 0}
    removed, unreadable = unconfigured_feeds(engine, {f.name for f in feeds})
    for feed in [*feeds, *removed]:
        for k, v in scrub_feed(engine, feed, feeds_dir, now).items():
            total[k] = total.get(k, 0) + v
    if not feeds and not removed:
        total.update(scrub_erased_batches(engine))
    total["unconfigured_feeds"] = len(removed)
    total["unconfigured_without_definition"] = len(unreadable)
    return total
