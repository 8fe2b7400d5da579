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
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from tessera.engine import Engine, SqlStep, as_engine
from tessera.engine.space import naming_space
from tessera.engine.steps import ddl_statements
from tessera.feeds.selection import (erasures_to_announce_step, feed_rows_step,
                                     unconsented_step)
from tessera.marketing.segments import marketing_table_steps

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def feed_table_steps() -> list[SqlStep]:
    """DDL of the feeds' bookkeeping tables (``sql/tables.sql``), idempotent."""
    return ddl_statements(__package__, "tables.sql")


def _neutralise(value):
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


_TEMP_NAME = re.compile(r"^\.[^/]+\.tmp-(?P<pid>[0-9]+)$")


def temp_path(path: Path) -> Path:
    """The temporary a file is written to before it is renamed to ``path``."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_temps(folder: Path, started: float) -> dict:
    """Remove the temporaries that killed exports left in ``folder``: only names of the
    ``temp_path`` pattern, only plain files in that folder (no recursion, no links), only
    those last written before ``started`` (the running export's start), and not one whose
    writing process still runs. Returns how many files and bytes were removed."""
    removed = {"files": 0, "bytes": 0}
    if not folder.is_dir():
        return removed
    for entry in os.scandir(folder):
        m = _TEMP_NAME.match(entry.name)
        if not m or not entry.is_file(follow_symlinks=False):
            continue
        st = entry.stat(follow_symlinks=False)
        pid = int(m["pid"])
        if st.st_mtime >= started or (pid != os.getpid() and _pid_alive(pid)):
            continue
        try:
            os.unlink(entry.path)
        except FileNotFoundError:
            continue
        removed["files"] += 1
        removed["bytes"] += st.st_size
    return removed


@contextmanager
def _atomically(path: Path, needed: int | None = None, **open_args) -> Iterator[IO]:
    """A file written under a temporary name, fsynced, then renamed to ``path``: a reader
    never sees a partial file under the final name; a full disk is named, and leaves no
    temporary file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with naming_space("the feed folder", path, needed=needed), open(tmp, **open_args) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


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
    text = json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8")
    with _atomically(path, needed=len(text), mode="wb") as fh:
        fh.write(text)


def build_feed(engine: Engine, feed, as_of: dt.date, feeds_dir: Path, now: dt.datetime) -> dict:
    """Publish one feed for one day. The connection needs ``tessera_hmac`` installed
    (``privacy.install_hmac``) and ``ops.suppressions`` present."""
    engine = as_engine(engine)
    started = time.time()
    if not feed.segment and getattr(feed, "score_actions", False):
        engine.run(*marketing_table_steps())
    step = feed_rows_step(feed, as_of)
    table = engine.arrow(step)
    columns = table.column_names
    rows = list(zip(*table.to_pydict().values())) if columns else []
    # Belt and braces: the query filters by consent; verify before publishing anything.
    if "customer_id" in columns:
        bad = engine.scalar(unconsented_step(feed, as_of, table.column("customer_id").to_pylist()))
        if bad:
            raise RuntimeError(f"feed {feed.name}: {bad} rows without {feed.channel} consent; not published")
    out_dir = feeds_dir / feed.name
    swept = sweep_stale_temps(out_dir, started)
    data_path = out_dir / f"{feed.name}_{as_of.isoformat()}.csv"
    sha = publish_csv(data_path, columns, rows, feed.for_spreadsheet)
    # Downstream tools must delete erased people: each erasure is announced in the first
    # delivery of this feed made after it (and again if that same day is re-delivered).
    engine.run(*feed_table_steps())
    erased = [r[0] for r in engine.rows(erasures_to_announce_step(feed, as_of))]
    deletions_path = out_dir / f"{feed.name}_{as_of.isoformat()}.deletions.csv"
    publish_csv(deletions_path, ["customer_id"], [(c,) for c in erased], False)
    manifest = {
        "deletions_file": deletions_path.name, "deletions": len(erased),
        "feed": feed.name, "as_of_date": as_of.isoformat(), "file": data_path.name,
        "rows": len(rows), "sha256": sha, "columns": columns, "format": "csv",
        "channel": feed.channel, "segment": feed.segment, "written_at": now.isoformat(),
    }
    write_manifest(out_dir / f"{feed.name}_{as_of.isoformat()}.manifest.json", manifest)
    day = {"feed": feed.name, "as_of_date": as_of}
    with engine.together():
        engine.replace_partition("exports.feed_deliveries", day, SqlStep(
            "feeds.delivery", "SELECT $feed, CAST($as_of AS DATE), $file, CAST($rows AS BIGINT), "
            "$sha, CAST($now AS TIMESTAMP)", {"feed": feed.name, "as_of": as_of,
                                               "file": str(data_path), "rows": len(rows),
                                               "sha": sha, "now": now}))
        engine.replace_partition("exports.feed_erasure_notices", day, SqlStep(
            "feeds.erasure_notices", "SELECT $feed, unnest(CAST($ids AS BIGINT[])), "
            "CAST($as_of AS DATE)", {"feed": feed.name, "ids": erased, "as_of": as_of}))
        # exports.<feed> keeps every delivered day; a re-run replaces its own day only.
        # If the feed's fields changed, the table is rebuilt with the new columns.
        target = f"exports.{feed.name}"
        dated = SqlStep("feeds.rows_of_day", f"SELECT CAST(? AS DATE) AS as_of_date, * "
                        f"FROM ({step.sql})", [as_of, *step.params])
        want = ["as_of_date", *columns]
        have = [r[0] for r in engine.rows(SqlStep(
            "feeds.table_columns", "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'exports' AND table_name = $feed ORDER BY ordinal_position",
            {"feed": feed.name}))]
        if have != want:
            engine.replace_table(target, SqlStep(dated.name, dated.sql + " WHERE false",
                                                 dated.params))
        engine.replace_partition(target, {"as_of_date": as_of}, dated)
    return {"rows": len(rows), "file": str(data_path), "sha256": sha,
            "stale_temp_files": swept["files"], "stale_temp_bytes": swept["bytes"]}
