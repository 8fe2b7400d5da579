"""Daily export feeds, published atomically with a manifest.

A feed's rows are its segment's members for the day (or, with ``score_actions``, the
contacts a score threshold pushed to the feed that day), joined to the contact card and
the day's RFM, filtered by consent on the feed's channel (and, for e-mail, without a
hard bounce). The file is written to a temporary name in the destination folder,
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
from pathlib import Path

import duckdb

from tessera.privacy.suppression import export_suppression_filter
from tessera.marketing.segments import segment_base_sql
from tessera.engine.space import naming_space
from tessera.engine.warehouse import transaction

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

# Which erased customers each feed has announced, and in which day's delivery. It holds
# only pseudonymous ids; `forget` never deletes from it (it is in the ops sense a log).
NOTICES_DDL = """
CREATE TABLE IF NOT EXISTS exports.feed_erasure_notices (
    feed VARCHAR NOT NULL, erased_customer BIGINT NOT NULL, as_of_date DATE NOT NULL)
"""

DELIVERIES_DDL = """
CREATE TABLE IF NOT EXISTS exports.feed_deliveries (
    feed VARCHAR NOT NULL, as_of_date DATE NOT NULL, file VARCHAR NOT NULL, rows BIGINT NOT NULL,
    sha256 VARCHAR NOT NULL, written_at TIMESTAMP NOT NULL)
"""


def consent_filter(channel: str) -> str:
    if channel == "email":
        return ("email IS NOT NULL AND email_consent = 'granted' "
                "AND NOT coalesce(email_hard_bounced, FALSE)")
    if channel == "sms":
        return "mobile IS NOT NULL AND sms_consent = 'granted'"
    return "TRUE"


def delivery_filter(channel: str) -> str:
    """Consent on the channel AND no suppression of the identifier (needs tessera_hmac)."""
    return f"({consent_filter(channel)}) AND {export_suppression_filter(channel)}"


def feed_rows_sql(feed) -> str:
    """The feed's rows; binds the day, then (with a segment) the segment name and the day."""
    cols = ", ".join(f'"{f}"' for f in feed.fields)
    seg = ""
    if feed.segment:
        seg = ("AND customer_id IN (SELECT customer_id FROM marketing.segment_members "
               "WHERE segment = ? AND as_of_date = ?)")
    elif getattr(feed, "score_actions", False):
        # contacts a score threshold pushed to this feed on the day
        seg = ("AND customer_id IN (SELECT customer_id FROM marketing.score_actions "
               "WHERE action = 'feed' AND target = ? AND as_of_date = ?)")
    return (f"SELECT {cols} FROM ({segment_base_sql()}) WHERE {delivery_filter(feed.channel)} "
            f"{seg} ORDER BY customer_id")


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


def publish_csv(path: Path, columns: list[str], rows: list[tuple], for_spreadsheet: bool) -> str:
    """Write rows to ``path`` atomically; return the file's sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with naming_space("the feed folder", path), \
                open(tmp, "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(columns)
            for row in rows:
                writer.writerow([_neutralise(v) for v in row] if for_spreadsheet else row)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
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
    tmp = temp_path(path)
    text = json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8")
    try:
        with naming_space("the feed folder", path, needed=len(text)), open(tmp, "wb") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def build_feed(con: duckdb.DuckDBPyConnection, feed, as_of: dt.date, feeds_dir: Path,
               now: dt.datetime) -> dict:
    """Publish one feed for one day. The connection needs ``tessera_hmac`` installed
    (``privacy.install_hmac``) and ``ops.suppressions`` present."""
    started = time.time()
    sql = feed_rows_sql(feed)
    # The base relation binds the RFM day first, then the segment filter binds its own.
    bind = [as_of] + ([feed.segment, as_of] if feed.segment else [])
    if not feed.segment and getattr(feed, "score_actions", False):
        bind += [feed.name, as_of]
        from tessera.marketing.segments import ensure_marketing_tables

        ensure_marketing_tables(con)
    rel = con.execute(sql, bind)
    columns = [d[0] for d in rel.description]
    rows = rel.fetchall()
    # Belt and braces: the query filters by consent; verify before publishing anything.
    check_sql = (f"SELECT count(*) FROM ({segment_base_sql()}) WHERE customer_id IN "
                 f"(SELECT unnest(?::BIGINT[])) AND NOT ({delivery_filter(feed.channel)})")
    if "customer_id" in columns:
        ids = [r[columns.index("customer_id")] for r in rows]
        bad = con.execute(check_sql, [as_of, ids]).fetchone()[0]
        if bad:
            raise RuntimeError(f"feed {feed.name}: {bad} rows without {feed.channel} consent; not published")
    out_dir = feeds_dir / feed.name
    swept = sweep_stale_temps(out_dir, started)
    data_path = out_dir / f"{feed.name}_{as_of.isoformat()}.csv"
    sha = publish_csv(data_path, columns, rows, feed.for_spreadsheet)
    # Downstream tools must delete erased people: each erasure is announced in the first
    # delivery of this feed made after it (and again if that same day is re-delivered).
    con.execute(NOTICES_DDL)
    erased = [r[0] for r in con.execute("""
        SELECT DISTINCT e.customer_id FROM ops.erasures e
        WHERE e.customer_id IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM exports.feed_erasure_notices n
            WHERE n.feed = ? AND n.erased_customer = e.customer_id AND n.as_of_date <> ?)
        ORDER BY 1""", [feed.name, as_of]).fetchall()]
    deletions_path = out_dir / f"{feed.name}_{as_of.isoformat()}.deletions.csv"
    publish_csv(deletions_path, ["customer_id"], [(c,) for c in erased], False)
    manifest = {
        "deletions_file": deletions_path.name, "deletions": len(erased),
        "feed": feed.name, "as_of_date": as_of.isoformat(), "file": data_path.name,
        "rows": len(rows), "sha256": sha, "columns": columns, "format": "csv",
        "channel": feed.channel, "segment": feed.segment, "written_at": now.isoformat(),
    }
    write_manifest(out_dir / f"{feed.name}_{as_of.isoformat()}.manifest.json", manifest)
    con.execute(DELIVERIES_DDL)
    with transaction(con):
        con.execute("DELETE FROM exports.feed_deliveries WHERE feed = ? AND as_of_date = ?",
                    [feed.name, as_of])
        con.execute("INSERT INTO exports.feed_deliveries VALUES (?, ?, ?, ?, ?, ?)",
                    [feed.name, as_of, str(data_path), len(rows), sha, now])
        con.execute("DELETE FROM exports.feed_erasure_notices WHERE feed = ? AND as_of_date = ?",
                    [feed.name, as_of])
        if erased:
            con.executemany("INSERT INTO exports.feed_erasure_notices VALUES (?, ?, ?)",
                            [[feed.name, c, as_of] for c in erased])
        # exports.<feed> keeps every delivered day; a re-run replaces its own day only.
        # If the feed's fields changed, the table is rebuilt with the new columns.
        table = f"exports.{feed.name}"
        want = ["as_of_date", *columns]
        have = [r[0] for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'exports' "
            "AND table_name = ? ORDER BY ordinal_position", [feed.name]).fetchall()]
        if have != want:
            con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT CAST(? AS DATE) AS as_of_date, * "
                        f"FROM ({sql}) WHERE false", [as_of, *bind])
        con.execute(f"DELETE FROM {table} WHERE as_of_date = ?", [as_of])
        con.execute(f"INSERT INTO {table} SELECT CAST(? AS DATE) AS as_of_date, * FROM ({sql})",
                    [as_of, *bind])
    return {"rows": len(rows), "file": str(data_path), "sha256": sha,
            "stale_temp_files": swept["files"], "stale_temp_bytes": swept["bytes"]}
