"""Daily export feeds, published atomically with a manifest.

Which rows a feed delivers is :mod:`tessera.feeds.selection`. The file is written to a temporary name in the destination folder,
fsynced and renamed, and only then is the manifest (rows, sha256, columns) written
beside it: a reader that sees a manifest always sees a whole file
(RELIABILITY.md rule 5).

An export killed while writing leaves its temporary (``.<file>.tmp-<pid>``) behind; each
export sweeps its own folder of such files before it writes (``sweep_stale_temps``).
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Mapping

import pyarrow.compute as pc

from tessera.engine import Engine, SqlStep, as_engine
from tessera.engine.steps import ddl_statements
from tessera.feeds.delivery import (HttpDestination, deliver_pending, enqueue, json_batches,
                                    xml_batches)
from tessera.feeds.changes import changed_contacts, selection_key
from tessera.feeds.diff import (base_day_step, day_total_step, diff_file_step, diff_step,
                                full_step, row_hash_sql, state_update_steps, stored_rows_step)
from tessera.feeds.erasure import scrub_feed
from tessera.feeds.files import _atomically, sweep_stale_temps, temp_path  # noqa: F401
from tessera.feeds.formats import EXTENSIONS, FileStats, schema_of, write_feed_file
from tessera.feeds.retention import apply_retention
from tessera.feeds.selection import delivery_filter, erasures_to_announce_step, feed_rows_step
from tessera.marketing.segments import marketing_table_steps, segment_base_sql

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def feed_table_steps() -> list[SqlStep]:
    """DDL of the feeds' bookkeeping tables (``sql/tables.sql``), idempotent."""
    return ddl_statements(__package__, "tables.sql")


def _neutralise(value):
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def publish_csv(path: Path, columns: list[str], rows: list[tuple], for_spreadsheet: bool) -> str:
    """Write rows to ``path`` atomically; return the file's sha256."""
    with _atomically(path, mode="w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_neutralise(v) for v in row] if for_spreadsheet else row)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


def write_manifest(path: Path, manifest: dict) -> None:
    text = json.dumps(manifest, indent=2, sort_keys=True, default=str).encode("utf-8")
    with _atomically(path, needed=len(text), mode="wb") as fh:
        fh.write(text)


def _consent_recheck_step(feed, as_of: dt.date, day_rows: str) -> SqlStep:
    """Rows of the day's selection that fail the channel's consent or a suppression: the
    belt-and-braces re-check before anything is published (set-based, no id list)."""
    return SqlStep("feeds.unconsented",
                   f"SELECT count(*) FROM ({segment_base_sql()}) WHERE customer_id IN "
                   f"(SELECT customer_id FROM {day_rows}) "
                   f"AND NOT ({delivery_filter(feed.channel)})", [as_of])


def _ensure_feed_table(engine: Engine, feed, stored: SqlStep) -> None:
    """``exports.<feed>`` with the feed's current columns. If the fields changed, the
    table is rebuilt empty: the next diff then starts from nothing (all rows added). A
    table of the earlier layout (every delivered day in full) becomes the versions of
    its last day, so an upgrade does not resend every row."""
    want = ["as_of_date", "valid_to", "_row_hash", *feed.source_fields]
    have = [r[0] for r in engine.rows(SqlStep(
        "feeds.table_columns", "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = 'exports' AND table_name = $feed ORDER BY ordinal_position",
        {"feed": feed.name}))]
    if have == want:
        return
    if have == ["as_of_date", *feed.source_fields]:
        cols = ", ".join('"' + f + '"' for f in feed.source_fields)
        engine.replace_table(f"exports.{feed.name}", SqlStep("feeds.state_from_days", f"""
            SELECT as_of_date, CAST(NULL AS DATE) AS valid_to, {row_hash_sql(feed)} AS _row_hash,
                   {cols} FROM exports.{feed.name}
            WHERE as_of_date = (SELECT max(as_of_date) FROM exports.{feed.name})"""))
        return
    engine.replace_table(f"exports.{feed.name}", SqlStep(stored.name, stored.sql + " WHERE false",
                                                         stored.params))


def _mart_columns(engine: Engine, feed) -> list[str] | None:
    """A mart feed's mart columns; every field it asks for must be the mart's or the card's."""
    if feed.row_source != "mart":
        return None
    cols = [r[0] for r in engine.rows(SqlStep(
        "feeds.mart_columns", "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = 'marts' AND table_name = $mart", {"mart": feed.mart}))]
    if not cols:
        raise RuntimeError(f"feed {feed.name}: the mart marts.{feed.mart} does not exist")
    if "customer_id" not in cols:
        raise RuntimeError(f"feed {feed.name}: marts.{feed.mart} has no customer_id column")
    return cols


def _schema(engine: Engine, step: SqlStep) -> list[dict]:
    return [{"name": f.name, "type": str(f.type)} for f in schema_of(engine, step)]


def _stored_types(engine: Engine, feed) -> dict[str, str]:
    """The DuckDB types ``exports.<feed>`` keeps each field in."""
    return dict(engine.rows(SqlStep(
        "feeds.stored_types", "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'exports' AND table_name = $feed", {"feed": feed.name})))


def _as_stored(engine: Engine, feed, data, rows_of_diff: bool = False):
    """Rows another engine computed (the day's selection, or its diff) in the types of
    ``exports.<feed>``, so the files, the manifest's schema and the stored versions are
    the ones a DuckDB-only run writes; a diff's ``_row_hash`` is recomputed by this engine
    over those values, so the stored digests stay this engine's whatever computed the
    diff."""
    types = _stored_types(engine, feed)
    cast = ", ".join(f"CAST({_qn(f)} AS {types[f]}) AS {_qn(f)}" for f in feed.source_fields)
    name = f"_feed_from_compute_{feed.name}"
    engine.register_arrow(name, data)
    try:
        if not rows_of_diff:
            return engine.arrow(SqlStep("feeds.as_stored", f"SELECT {cast} FROM {name}"))
        return engine.arrow(SqlStep("feeds.diff_as_stored", f"""
            SELECT _kind, CASE WHEN _row_hash IS NULL THEN NULL ELSE {row_hash_sql(feed)} END
                   AS _row_hash, {", ".join(_qn(f) for f in feed.source_fields)}
            FROM (SELECT _kind, _row_hash, {cast} FROM {name})"""))
    finally:
        engine.unregister(name)


def _qn(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def prepare_feed(engine: Engine, feed, as_of: dt.date) -> list[str] | None:
    """The tables a feed's day reads and writes, with ``exports.<feed>`` in the feed's
    current layout (idempotent); returns a mart feed's mart columns. With ``engine:
    spark`` the asset calls it before the hand-over, so Spark gets them as they will be."""
    engine.run(*feed_table_steps())
    if feed.row_source == "score_actions" or set(feed.source_fields) & {"stage", "stage_rank"}:
        engine.run(*marketing_table_steps())
    mart_columns = _mart_columns(engine, feed)
    _ensure_feed_table(engine, feed, stored_rows_step(feed, as_of, mart_columns))
    return mart_columns


def build_feed(engine: Engine, feed, as_of: dt.date, feeds_dir: Path, now: dt.datetime,
               environ: Mapping[str, str] | None = None, sleep=time.sleep,
               incremental: bool = True, compute: Engine | None = None) -> dict:
    """Publish one feed for one day: its files (full, or added / changed / removed), then
    the manifest, then the warehouse's record of the delivery; then, for a feed with an
    HTTP destination, its batches are queued and every pending batch is delivered.

    The connection needs ``tessera_hmac`` installed (``privacy.install_hmac``) and
    ``ops.suppressions`` present. ``environ`` holds the destination's secret (by the
    variable named in ``feeds.yaml``); the process environment by default.
    ``incremental=False`` compares a diff day in full even where the changed contacts are
    known (:mod:`tessera.feeds.changes`; the tests prove both give the same files).

    ``compute`` (a Spark engine holding the same tables, ``engine: spark``) runs the
    set-based part: the day's selection (consent, bounces, the suppression ledger's keyed
    hashes, every field) and the diff against the delivered state, compared by values.
    Everything else stays on ``engine``, the system of record: the erasure scrub, the
    belt-and-braces consent re-check, the files and manifest (written by one process to
    one folder, atomically), the delivery records and state in one transaction, the HTTP
    queue and retention.
    """
    engine = as_engine(engine)
    if compute is not None and compute.dialect == engine.dialect:
        compute = None  # the same engine: nothing to hand between them
    started = time.time()
    # the destination first: a missing secret fails the day before anything is written
    dest = None if feed.destination is None else HttpDestination.from_settings(
        f"feed:{feed.name}", feed.destination, os.environ if environ is None else environ)
    # an erasure since the last run leaves the kept files and unsent bodies first
    scrubbed = {f"erasure_{k}": v for k, v in scrub_feed(engine, feed, feeds_dir, now).items()}
    if not feed.delivered_on(as_of.weekday()):
        skipped = {"skipped": True, "rows": 0, "files": [], "stale_temp_files": 0,
                   "stale_temp_bytes": 0}
        if dest is not None:  # what earlier days left unacknowledged still goes
            skipped["delivery"] = deliver_pending(engine, dest, sleep=sleep).as_metadata()
        skipped.update(apply_retention(engine, feed, feeds_dir, as_of, now,
                                       None if dest is None else dest.name))
        return {**skipped, **scrubbed}
    mart_columns = prepare_feed(engine, feed, as_of)
    # The day's selection runs once, into an Arrow table that every file is written from;
    # exports.<feed> gets it only in the final transaction, with the delivery record, so
    # that a diff's base is always exactly what was delivered.
    key = selection_key(feed, mart_columns)
    # a diff day selects only the contacts whose card changed since the base, where the
    # recorded versions say so (tessera.feeds.changes); otherwise every contact
    changed, path = (None, "incremental off") if not incremental else changed_contacts(
        engine, feed, as_of, engine.scalar(base_day_step(feed, as_of)), key)
    only = f"_feed_changed_{feed.name}" if changed is not None else None
    day_rows = f"_feed_day_{feed.name}"
    if only:
        engine.register_arrow(only, changed)
        if compute is not None:
            compute.register_arrow(only, changed)
    try:
        if compute is None:
            selected = engine.arrow(feed_rows_step(feed, as_of, mart_columns, only))
        else:
            computed = compute.arrow(feed_rows_step(feed, as_of, mart_columns, only))
            compute.register_arrow(day_rows, computed)  # the diff's input, on compute
            selected = _as_stored(engine, feed, computed)
        total = None if only else selected.num_rows
        if feed.row_source == "mart" and total and \
                pc.count_distinct(selected.column("customer_id")).as_py() != total:
            raise RuntimeError(f"feed {feed.name}: marts.{feed.mart} has more than one row for a "
                               "contact; a feed delivers one row per contact")
        engine.register_arrow(day_rows, selected)
        try:
            stats = _publish_day(engine, feed, as_of, feeds_dir, now, started, day_rows, total,
                                 dest, sleep, key, only, compute)
        finally:
            engine.unregister(day_rows)
            if compute is not None:
                compute.unregister(day_rows)
    finally:
        if only:
            engine.unregister(only)
            if compute is not None:
                compute.unregister(only)
    stats.update({"diff_path": path, "diff_candidates": changed.num_rows if only else None,
                  "diff_selected": selected.num_rows if only else None})
    return {**stats, **scrubbed}


def _publish_day(engine: Engine, feed, as_of: dt.date, feeds_dir: Path, now: dt.datetime,
                 started: float, day_rows: str, total: int | None, dest, sleep, key: str,
                 only: str | None, compute: Engine | None = None) -> dict:
    """The day's files, manifest and records from its selection (``day_rows``: every
    contact's rows, or with ``only`` the changed contacts', ``total`` then unknown)."""
    out_dir = feeds_dir / feed.name
    swept = sweep_stale_temps(out_dir, started)
    ext = EXTENSIONS[feed.format]
    stem = f"{feed.name}_{as_of.isoformat()}"
    write = lambda step, name: write_feed_file(  # noqa: E731
        engine, step, out_dir / name, feed.format, csv_dialect=feed.csv, xml_names=feed.xml,
        for_spreadsheet=feed.for_spreadsheet)
    base = None
    files: dict[str, FileStats] = {}
    erased = [r[0] for r in engine.rows(erasures_to_announce_step(feed, as_of))]
    diff_table, registered = f"_feed_diff_{feed.name}", False
    try:
        # the diff against the last delivered day, in every mode: a diff feed's files,
        # and what the day changes in the stored state
        base = engine.scalar(base_day_step(feed, as_of))
        latest = engine.scalar(SqlStep("feeds.latest_day", "SELECT max(as_of_date) FROM "
                                       "exports.feed_deliveries WHERE feed = ?", [feed.name]))
        if compute is None:
            diff = engine.arrow(diff_step(feed, day_rows, as_of, base, only))
        else:
            diff = _as_stored(engine, feed, compute.arrow(
                diff_step(feed, day_rows, as_of, base, only, by_values=True)), rows_of_diff=True)
        engine.register_arrow(diff_table, diff)
        registered = True
        if total is None:
            total = engine.scalar(day_total_step(feed, diff_table, base))
        # the belt-and-braces consent re-check, over what is published: every row of a
        # full file, the added and changed rows of a diff
        checked = day_rows if feed.mode == "full" else \
            f"(SELECT customer_id FROM {diff_table} WHERE _kind <> 'removed')"
        bad = engine.scalar(_consent_recheck_step(feed, as_of, checked))
        if bad:
            raise RuntimeError(f"feed {feed.name}: {bad} rows without {feed.channel} consent; "
                               "not published")
        if feed.mode == "diff":
            steps = {kind: diff_file_step(feed, diff_table, kind)
                     for kind in ("added", "changed", "removed")}
            for kind, step in steps.items():
                files[kind] = write(step, f"{stem}.{kind}.{ext}")
            schema = _schema(engine, steps["added"])
        else:
            steps = {"full": full_step(feed, day_rows), "deletions": SqlStep(
                "feeds.deletions", "SELECT unnest(CAST(? AS BIGINT[])) AS customer_id ORDER BY 1",
                [erased])}
            for kind, step in steps.items():
                files[kind] = write(step, f"{stem}.{ext}" if kind == "full" else f"{stem}.{kind}.{ext}")
            schema = _schema(engine, steps["full"])
        main = files.get("full")
        manifest = {
            "feed": feed.name, "as_of_date": as_of.isoformat(), "mode": feed.mode,
            "format": feed.format, "channel": feed.channel, "segment": feed.segment,
            "rows": total if main else None, "file": main.file if main else None,
            "sha256": main.sha256 if main else None,
            "deletions_file": files["deletions"].file if "deletions" in files else None,
            "deletions": len(erased),
            "files": [{"kind": k, "file": f.file, "rows": f.rows, "sha256": f.sha256}
                      for k, f in files.items()],
            "schema": schema, "previous_delivery": base.isoformat() if base else None,
            "written_at": now.isoformat(),
        }
        write_manifest(out_dir / f"{stem}.manifest.json", manifest)
        first = main or files["added"]
        day = {"feed": feed.name, "as_of_date": as_of}
        batches = [] if dest is None else _http_batches(engine, feed, as_of, steps, dest)
        queued = 0
        # The day is delivered, and its HTTP batches queued, in one transaction: a day
        # recorded as delivered always has its batches in the queue.
        with engine.together():
            if dest is not None:
                queued = enqueue(engine, dest.name, batches, now)
            engine.replace_partition("exports.feed_deliveries", day, SqlStep(
                "feeds.delivery", "SELECT $feed, CAST($as_of AS DATE), $file, CAST($rows AS BIGINT), "
                "$sha, CAST($now AS TIMESTAMP)", {"feed": feed.name, "as_of": as_of,
                                                   "file": str(out_dir / first.file), "rows": total,
                                                   "sha": first.sha256, "now": now}))
            engine.replace_partition("exports.feed_files", day, SqlStep(
                "feeds.files", "SELECT $feed, CAST($as_of AS DATE), unnest(CAST($kinds AS VARCHAR[])), "
                "unnest(CAST($names AS VARCHAR[])), unnest(CAST($rows AS BIGINT[])), "
                "unnest(CAST($shas AS VARCHAR[])), CAST($base AS DATE)",
                {"feed": feed.name, "as_of": as_of, "kinds": list(files),
                 "names": [f.file for f in files.values()], "rows": [f.rows for f in files.values()],
                 "shas": [f.sha256 for f in files.values()], "base": base}))
            engine.replace_partition("exports.feed_definitions", {"feed": feed.name}, SqlStep(
                "feeds.definition", "SELECT $feed, $definition, CAST($as_of AS DATE)",
                {"feed": feed.name, "definition": feed.model_dump_json(exclude_defaults=True),
                 "as_of": as_of}))
            engine.replace_partition("exports.feed_selections", day, SqlStep(
                "feeds.selection", "SELECT $feed, CAST($as_of AS DATE), $key",
                {"feed": feed.name, "as_of": as_of, "key": key}))
            engine.replace_partition("exports.feed_erasure_notices", day, SqlStep(
                "feeds.erasure_notices", "SELECT $feed, unnest(CAST($ids AS BIGINT[])), "
                "CAST($as_of AS DATE)", {"feed": feed.name, "ids": erased, "as_of": as_of}))
            # exports.<feed> keeps the delivered rows as versions (the base of the next
            # diff), changed by what changed; a backfill older than the last delivered
            # day leaves them to that day
            if latest is None or as_of >= latest:
                engine.run(*state_update_steps(feed, diff_table, as_of, rerun=as_of == latest))
        stats = {"rows": total, "file": str(out_dir / first.file), "sha256": first.sha256,
                 "files": [{"kind": k, "file": f.file, "rows": f.rows} for k, f in files.items()],
                 "manifest": manifest, "previous_delivery": base, "skipped": False,
                 "stale_temp_files": swept["files"], "stale_temp_bytes": swept["bytes"]}
        if feed.destination is not None:
            report = deliver_pending(engine, dest, sleep=sleep)
            stats["delivery"] = {"batches": len(batches), "queued": queued, **report.as_metadata()}
        stats.update(apply_retention(engine, feed, feeds_dir, as_of, now,
                                     None if dest is None else dest.name))
        return stats
    finally:
        if registered:
            engine.unregister(diff_table)


def _http_batches(engine: Engine, feed, as_of: dt.date, steps: dict, dest: HttpDestination) -> list:
    """The day's records as batches for the destination: upserts (full, added, changed)
    and deletes (erasures, removed), in file order."""
    ops = {"full": "upsert", "deletions": "delete", "added": "upsert", "changed": "upsert",
           "removed": "delete"}
    records, subjects = [], []
    id_out = next(c.out for c in feed.columns if c.field == "customer_id")
    for kind, step in steps.items():
        for row in engine.arrow(step).to_pylist():
            records.append({"op": ops[kind], "record": row})
            # an erasure notice (the id and nothing else) is about nobody: it must still
            # reach the receiver after the person is erased; any other record is theirs
            notice = kind == "deletions" or (kind == "removed" and all(
                v is None for k, v in row.items() if k != id_out))
            subjects.append(None if notice else row.get(id_out))
    make = xml_batches if feed.destination.body == "xml" else json_batches
    return make(dest.name, source=feed.name, as_of=as_of, records=records, subjects=subjects,
                batch_rows=feed.destination.batch_rows,
                envelope={"feed": feed.name, "as_of_date": as_of.isoformat(), "mode": feed.mode})
