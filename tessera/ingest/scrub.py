"""Rewrite archived landing files without the records of erased people.

Erasure must reach the files Tessera keeps (SPEC C3, "forget me"): the CSV, JSON lines,
XML and XLSX deliveries under the landing folder and the API snapshots under
``<landing>/_api/<source>/``. Records are found by content, never by stored line numbers:
a record goes when it carries an identifier under an erasure suppression (a keyed hash,
so a re-run after an interruption still finds it when the warehouse has already forgotten
the person), when its id is one of the erased source records, or when it is a line of a
removed order.

Every rewrite streams (memory flat in the file's size: CSV, JSON lines and API snapshots
line by line, XML through ``iterparse`` then a byte copy of a memory map, XLSX through
openpyxl's read-only and write-only modes), goes to a temporary file in the same folder,
is fsynced and renamed over the original: a crash leaves either the old or the new file.

Removing records shifts the physical line (or sheet row) of every later record, and the
warehouse points at those lines: ``raw.<source>._line``, ``staging.<entity>._line`` and
``ops.rejects.line``. Each rewrite therefore reports the spans it removed, and the stored
lines of that file are moved up by as many lines as were removed before them, so that a
reject still names the line an analyst finds in the file as it is now. Rejects that
pointed into a removed record are deleted with it (they were about the erased person).
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
import mmap
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tessera.engine.space import naming_space
from tessera.engine.warehouse import table_exists
from tessera.ingest.formats.jsonl import _json_path
from tessera.ingest.formats.xlsx import _open_sheet, xlsx_cell_text
from tessera.ingest.formats.xml import _ascii_compatible
from tessera.privacy.suppression import _test_point, ensure_tables, normalise_value
from tessera.vocabulary import CARD_ENTITIES, ENTITY_TABLES, IDENTIFIER_FIELDS


@dataclass
class Removal:
    """What a rewrite removed from one file, in the file's own line (or row) numbers.

    ``spans`` holds ``(first, last, shift)``: records starting on lines ``first..`` were
    removed, and every kept record starting on line ``last`` or later moves up by
    ``shift`` lines. ``starts`` holds the first line of each removed record.
    """

    spans: list[tuple[int, int, int]] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)

    def add_lines(self, first: int, last: int) -> None:
        """Whole physical lines ``first..last`` removed."""
        self.spans.append((first, last + 1, last - first + 1))
        self.starts.append(first)


def _py_hmac(key: str, value: str) -> str:
    return hmac.new(key.encode("utf-8"), value.encode("utf-8"), hashlib.sha256).hexdigest()


def _tmp_of(path: Path) -> Path:
    return path.with_name(f".{path.name}.forget-tmp")


def _sync(tmp: Path) -> tuple[str, int]:
    """fsync ``tmp``; its sha256 and size."""
    digest = hashlib.sha256()
    size = 0
    with open(tmp, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return digest.hexdigest(), size


def _file_sha(path: Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _apply_rewrite(con, source, rel: str, sha: str, size: int, removal: "Removal") -> None:
    """After the rename: the file ledger and the stored lines follow the new file, and the
    journal row goes, in one transaction."""
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("UPDATE ops.file_ledger SET sha256 = ?, bytes = ? WHERE source = ? AND file = ?",
                    [sha, size, source.name, rel])
        shift_stored_lines(con, source, rel, removal)
        con.execute("DELETE FROM ops.file_stats WHERE source = ? AND file = ?", [source.name, rel])
        con.execute("DELETE FROM ops.scrub_files WHERE source = ? AND file = ?", [source.name, rel])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


# ----------------------------------------------------------------------------- CSV

def _rewrite_csv(path: Path, source, hit, tmp: Path) -> Removal:
    layout = source.csv
    enc = "utf-8-sig" if layout.encoding in ("utf-8", "utf-8-sig") else layout.encoding
    out_enc = "utf-8" if enc == "utf-8-sig" else enc
    cols = source.columns
    removal = Removal()
    # Pass 1: which physical lines belong to a record that goes.
    with open(path, encoding=enc, newline="") as fh:
        reader = csv.reader(fh, delimiter=layout.delimiter, quotechar=layout.quote,
                            escapechar=layout.escape, doublequote=layout.escape is None)
        header = None
        prev = 0
        for row in reader:
            start, end = prev + 1, reader.line_num
            prev = end
            if header is None and layout.header:
                header = {h.strip(): i for i, h in enumerate(row)}
                continue
            idx = header or {}
            values = {}
            for canon, col in cols.items():
                i = idx.get(col) if header is not None else (int(col) if str(col).isdigit() else None)
                values[canon] = row[i] if i is not None and i < len(row) else None
            if hit(values):
                removal.add_lines(start, end)
    if not removal.starts:
        return removal
    gone = {ln for first, last, _ in removal.spans for ln in range(first, last)}
    with open(path, "rb") as fh:
        bom = fh.read(3) == b"\xef\xbb\xbf"
    # Pass 2: copy every other physical line, split exactly as the csv module counted.
    with open(path, encoding=enc, newline="") as src, open(tmp, "w", encoding=out_enc, newline="") as dst:
        if bom:
            dst.write("\ufeff")
        for lineno, line in enumerate(src, start=1):
            if lineno not in gone:
                dst.write(line)
    return removal


# ------------------------------------------------------------------ JSON lines / API

def _rewrite_jsonl(path: Path, source, hit, tmp: Path) -> Removal:
    removal = Removal()
    with open(path, encoding="utf-8-sig") as fh:
        for lineno, text in enumerate(fh, start=1):
            try:
                obj = json.loads(text)
            except ValueError:
                continue
            if isinstance(obj, dict) and hit({c: _json_path(obj, p) for c, p in source.columns.items()}):
                removal.add_lines(lineno, lineno)
    if not removal.starts:
        return removal
    gone = set(removal.starts)
    with open(path, encoding="utf-8-sig") as src, open(tmp, "w", encoding="utf-8", newline="\n") as dst:
        for lineno, text in enumerate(src, start=1):
            if lineno not in gone:
                dst.write(text)
    return removal


# ----------------------------------------------------------------------------- XML

def _xml_hits(path: Path, source, hit) -> list[int]:
    """Ordinals (in document order) of the record elements that go: a streaming parse."""
    from lxml import etree

    tag = source.xml.record_tag
    out: list[int] = []
    n = 0
    for _, elem in etree.iterparse(str(path), events=("end",), tag=tag, resolve_entities=False,
                                   no_network=True, load_dtd=False, huge_tree=False,
                                   remove_comments=True):
        values = {c.tag: (c.text or "") for c in elem if isinstance(c.tag, str)}
        if hit({canon: values.get(t) for canon, t in source.columns.items()}):
            out.append(n)
        n += 1
        elem.clear(keep_tail=True)
        parent = elem.getparent()
        while parent is not None and elem.getprevious() is not None:
            del parent[0]
    return out


_RELEASE = 16 << 20


def _count_nl(mm, a: int, b: int) -> int:
    n = 0
    for i in range(a, b, 1 << 22):
        n += mm[i:min(b, i + (1 << 22))].count(b"\n")
    return n


def _rewrite_xml(path: Path, source, hit, tmp: Path) -> Removal:
    """Drop record elements byte for byte: everything else in the file stays as it was.

    ``iterparse`` decides which records go (by ordinal); a scan of the memory-mapped
    bytes, which skips comments, CDATA and processing instructions exactly as the reader's
    line counter does (``formats.xml.record_start_lines``), finds the same start tags and
    their end tags. A record that has its lines to itself goes with its indentation and
    line break, so the file keeps its layout.
    """
    removal = Removal()
    wanted = _xml_hits(path, source, hit)
    if not wanted:
        return removal
    if not _ascii_compatible(path):
        return _rewrite_xml_tree(path, source, set(wanted), tmp)
    tag = re.escape(source.xml.record_tag.encode("ascii"))
    opener = re.compile(rb"<!--|<!\[CDATA\[|<\?|<" + tag + rb"(?=[\s/>])")
    closers = {b"<!--": b"-->", b"<![CDATA[": b"]]>", b"<?": b"?>"}
    close_re = re.compile(rb"<!--|<!\[CDATA\[|<\?|</" + tag + rb"\s*>")
    targets = set(wanted)
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm, \
            open(tmp, "wb") as out:
        pos, copied, line, ordinal = 0, 0, 1, 0
        size = len(mm)
        released = 0

        def release(upto: int) -> None:
            # Mapped pages count in the process's RSS: hand back what was read already,
            # so that resident memory stays flat in the file's size.
            nonlocal released
            upto -= upto % mmap.PAGESIZE
            if upto - released >= _RELEASE:
                mm.madvise(mmap.MADV_DONTNEED, released, upto - released)
                released = upto

        while targets:
            release(min(pos, copied))
            m = opener.search(mm, pos)
            if m is None:
                break
            token = m.group()
            if token in closers:
                j = mm.find(closers[token], m.end())
                pos = size if j < 0 else j + len(closers[token])
                continue
            k, ordinal = ordinal, ordinal + 1
            # End of the start tag (quoted attribute values may hold '>').
            q = m.end()
            quote = None
            while q < size:
                c = mm[q:q + 1]
                if quote:
                    if c == quote:
                        quote = None
                elif c in (b'"', b"'"):
                    quote = c
                elif c == b">":
                    break
                q += 1
            if mm[q - 1:q] == b"/":
                end = q + 1
            else:
                end = -1
                while True:
                    cm = close_re.search(mm, q)
                    if cm is None:
                        break  # not well-formed past here; the parse above would have failed
                    if cm.group() in closers:
                        j = mm.find(closers[cm.group()], cm.end())
                        q = size if j < 0 else j + len(closers[cm.group()])
                        continue
                    end = cm.end()
                    break
                if end < 0:
                    break
            if k not in targets:
                pos = end
                continue
            targets.discard(k)
            start = m.start()
            line_start = mm.rfind(b"\n", 0, start) + 1
            if mm[line_start:start].strip() == b"":
                start = line_start
            nl = mm.find(b"\n", end)
            stop = nl + 1 if nl >= 0 and mm[end:nl].strip() == b"" else end
            first = line + _count_nl(mm, copied, m.start())
            gone_nl = _count_nl(mm, start, stop)
            # What followed the removed bytes (old line first + gone_nl) moves to line first.
            removal.spans.append((first, first + gone_nl, gone_nl))
            removal.starts.append(first)
            for i in range(copied, start, 1 << 22):
                out.write(mm[i:min(start, i + (1 << 22))])
            line = first + gone_nl
            copied = pos = stop
        for i in range(copied, size, 1 << 22):
            out.write(mm[i:min(size, i + (1 << 22))])
            release(i)
    if targets:
        # The byte scan and the parser disagree (nested record tags?): never publish a
        # file that still holds an erased record.
        raise RuntimeError(f"{path.name}: could not locate {len(targets)} record(s) to remove; "
                           "file left unchanged")
    return removal


def _rewrite_xml_tree(path: Path, source, ordinals: set[int], tmp: Path) -> Removal:
    """UTF-16 and other non-ASCII-compatible XML: parse whole and re-serialise.

    Rare enough that memory in the file's size is acceptable; stored line numbers of
    such a file are not moved (the re-serialised layout has no exact mapping).
    """
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True)
    tree = etree.parse(str(path), parser)
    removal = Removal()
    for n, elem in enumerate(list(tree.iter(source.xml.record_tag))):
        if n in ordinals:
            removal.starts.append(elem.sourceline or 0)
            elem.getparent().remove(elem)
    tree.write(str(tmp), xml_declaration=True, encoding=tree.docinfo.encoding)
    return removal


# ----------------------------------------------------------------------------- XLSX

def _rewrite_xlsx(path: Path, source, hit, tmp: Path) -> Removal:
    """Copy the workbook sheet by sheet without the erased records' rows.

    Read-only in, write-only out: memory stays flat whatever the sheet's size. Values are
    copied (formulas as their text, never evaluated); cell styles are not, which an
    archived delivery does not need.
    """
    import openpyxl

    layout = source.xlsx
    removal = Removal()
    wb, ws = _open_sheet(path, layout)
    try:
        header_cells = next(ws.iter_rows(min_row=layout.header_row, max_row=layout.header_row,
                                         max_col=layout.max_columns), ())
        header = [("" if c.value is None else str(c.value)).strip() for c in header_cells]
        index = {canon: header.index(col) for canon, col in source.columns.items() if col in header}
        for offset, row in enumerate(ws.iter_rows(min_row=layout.header_row + 1, max_col=len(header))):
            values = {canon: (xlsx_cell_text(row[i])[0] if i < len(row) else None)
                      for canon, i in index.items()}
            if any(v is not None for v in values.values()) and hit(values):
                removal.add_lines(layout.header_row + 1 + offset, layout.header_row + 1 + offset)
    finally:
        wb.close()
    if not removal.starts:
        return removal
    gone = set(removal.starts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        src = openpyxl.load_workbook(path, read_only=True, data_only=False, keep_links=False)
    dst = openpyxl.Workbook(write_only=True)
    try:
        for name in src.sheetnames:
            sheet = src[name]
            sheet.reset_dimensions()
            out = dst.create_sheet(title=name)
            for rowno, row in enumerate(sheet.iter_rows(values_only=True), start=1):
                if name == layout.sheet and rowno in gone:
                    continue
                out.append(list(row))
        dst.save(tmp)
    finally:
        src.close()
    return removal


_REWRITERS: dict[str, Callable] = {"csv": _rewrite_csv, "jsonl": _rewrite_jsonl, "api": _rewrite_jsonl,
                                   "push": _rewrite_jsonl,
                                   "xml": _rewrite_xml, "xlsx": _rewrite_xlsx}


def _files(root: Path, source) -> list[Path]:
    if source.format == "api":
        folder = root / "_api" / source.name
        return sorted(p for p in folder.glob("*.jsonl") if p.is_file()) if folder.is_dir() else []
    return sorted(p for p in root.glob(source.path) if p.is_file() and not p.name.startswith("."))


def shift_stored_lines(con, source, rel: str, removal: Removal) -> None:
    """Move the warehouse's stored lines of one rewritten file to the file as it is now."""
    import pyarrow as pa

    spans = pa.table({"last": pa.array([x[1] for x in removal.spans], pa.int64()),
                      "shift": pa.array([x[2] for x in removal.spans], pa.int64())})
    starts = pa.table({"line": pa.array(removal.starts, pa.int64())})
    con.register("_scrub_spans_in", spans)
    con.register("_scrub_starts_in", starts)
    con.execute("CREATE OR REPLACE TEMP TABLE _scrub_spans AS SELECT * FROM _scrub_spans_in")
    con.execute("CREATE OR REPLACE TEMP TABLE _scrub_starts AS SELECT * FROM _scrub_starts_in")
    con.unregister("_scrub_spans_in")
    con.unregister("_scrub_starts_in")
    shift = "coalesce((SELECT sum(shift) FROM _scrub_spans WHERE last <= {col}), 0)"
    con.execute("DELETE FROM ops.rejects WHERE source = ? AND file = ? AND line IN (SELECT line FROM _scrub_starts)",
                [source.name, rel])
    con.execute(f"UPDATE ops.rejects SET line = line - {shift.format(col='line')} "
                "WHERE source = ? AND file = ?", [source.name, rel])
    targets = []
    if table_exists(con, "raw", source.name):
        targets.append((f"raw.{source.name}", ""))
    table = ENTITY_TABLES.get(source.entity)
    if table and table_exists(con, "staging", table):
        targets.append((f"staging.{table}", f" AND source = '{source.name}'"))
    for name, extra in targets:
        con.execute(f"UPDATE {name} SET _line = _line - {shift.format(col='_line')} "
                    f"WHERE _file = ?{extra}", [rel])
    con.execute("DROP TABLE _scrub_spans")
    con.execute("DROP TABLE _scrub_starts")


def scrub_landing_files(con, deployment, landing_dir, key: str, request_id: str | None,
                        record_ids: dict[str, list[str]] | None = None,
                        order_ids: list[str] | None = None,
                        only: set[tuple[str, str]] | None = None) -> int:
    """Rewrite every landing file and API snapshot that holds an erased person's records.

    Idempotent: a second run finds nothing left to remove. Order sources are scrubbed
    before order lines, so that the lines of an order removed for its customer's ERP id
    go too. The file ledger's fingerprint of a rewritten file is updated so the next run
    does not take it for a new delivery. Returns the number of files rewritten.

    ``only`` limits the rewrite to some ``(source, file)`` pairs: ingestion uses it to cut
    the records it suppressed out of the file that just re-delivered them.
    """
    ensure_tables(con)
    hashes: dict[str, set[str]] = {}
    for kind, h in con.execute("SELECT kind, id_hash FROM ops.suppressions WHERE channel = 'all'").fetchall():
        hashes.setdefault(kind, set()).add(h)
    rec_ids = {k: set(v) for k, v in (record_ids or {}).items()}
    removed_orders: set[str] = set(order_ids or [])
    # Contacts first (the records they drop name the notes and tasks that go with them),
    # orders before their lines.
    ordered = sorted(deployment.sources, key=lambda s: {"contact": 0, "order": 1, "order_line": 3,
                                                        "note": 3, "task": 3}.get(s.entity, 2))

    def hit_for(source):
        def hit(values: dict) -> bool:
            if source.entity == "order_line":
                return (values.get("order_id") or "").strip() in removed_orders
            if source.entity in ("note", "task"):
                return (values.get("contact_ref") or "").strip() in rec_ids.get(source.customer_source, ())
            rid = (values.get("source_record_id") or "").strip()
            hit = bool(rid) and rid in rec_ids.get(source.name, ())
            if not hit and source.entity in CARD_ENTITIES and source.customer_source:
                hit = (values.get("customer_ref") or "").strip() in rec_ids.get(source.customer_source, ())
            if not hit:
                for fld, kind in IDENTIFIER_FIELDS.get(source.entity, {}).items():
                    v = normalise_value(kind, values.get(fld))
                    if v and _py_hmac(key, v) in hashes.get(kind, ()):
                        hit = True
                        break
            if hit and rid:
                if source.entity == "order":
                    removed_orders.add(rid)
                rec_ids.setdefault(source.name, set()).add(rid)
            return hit
        return hit

    rewritten = 0
    root = Path(landing_dir)
    for source in ordered:
        if source.entity not in IDENTIFIER_FIELDS and source.entity not in ("order_line", "note", "task"):
            continue
        rewrite = _REWRITERS.get(source.format)
        if rewrite is None:
            continue
        for path in _files(root, source):
            if only is not None and (source.name, str(path.relative_to(root))) not in only:
                continue
            tmp = _tmp_of(path)
            rel = str(path.relative_to(root))
            try:
                with naming_space("the landing archive", path, needed=path.stat().st_size):
                    removal = rewrite(path, source, hit_for(source), tmp)
                    if not removal.starts:
                        continue
                    sha, size = _sync(tmp)
                # Journal first: a kill after the rename below is finished by the next
                # command (_recover_rewrites) instead of leaving a ledger that no longer
                # matches the file and stored lines that point at the wrong records.
                con.execute("INSERT INTO ops.scrub_files VALUES (?, ?, ?, ?, ?, ?)",
                            [source.name, rel, sha, size, json.dumps(removal.spans),
                             json.dumps(removal.starts)])
                _test_point("scrub-before-rename")
                os.replace(tmp, path)
            finally:
                if tmp.exists():
                    tmp.unlink()
            _test_point("scrub-after-rename")
            _apply_rewrite(con, source, rel, sha, size, removal)
            rewritten += 1
    if request_id is not None:
        con.execute("UPDATE ops.erasures SET files_rewritten = files_rewritten + ? WHERE request_id = ?",
                    [rewritten, request_id])
    return rewritten


# ------------------------------------------------------------ finishing killed erasures

def _recover_rewrites(con, deployment, root: Path) -> int:
    """Finish or forget the file rewrites a killed process left in ``ops.scrub_files``.

    The file on disk decides: if it has the journal's new fingerprint the rename happened,
    and the ledger and stored lines are brought along; otherwise the original is intact,
    and the journal row and any temporary copy go (the scrub will redo that file).
    """
    sources = {s.name: s for s in deployment.sources}
    done = 0
    for name, rel, sha, size, spans, starts in con.execute(
            "SELECT source, file, sha256, bytes, spans, starts FROM ops.scrub_files").fetchall():
        path = root / rel
        tmp = _tmp_of(path)
        if tmp.exists():
            tmp.unlink()
        source = sources.get(name)
        if source is not None and _file_sha(path) == sha:
            removal = Removal(spans=[tuple(x) for x in json.loads(spans)],
                              starts=json.loads(starts))
            _apply_rewrite(con, source, rel, sha, size, removal)
            done += 1
        else:
            con.execute("DELETE FROM ops.scrub_files WHERE source = ? AND file = ?", [name, rel])
    return done


def erasures_owed(con) -> bool:
    """Whether a forget or purge left work on the landing files (cheap: two small tables)."""
    return table_exists(con, "ops", "pending_scrubs") and bool(con.execute(
        "SELECT (SELECT count(*) FROM ops.pending_scrubs) + (SELECT count(*) FROM ops.scrub_files)"
    ).fetchone()[0])


def finish_erasures(con, deployment, landing_dir, key: str,
                    only_loaded: bool = False) -> dict[str, int]:
    """Rewrite the landing files every recorded erasure still owes; ``{request: files}``.

    Called right after a forget or purge, and by the next warehouse command and every
    ingestion, so that one killed half-way is completed: the warehouse part was one
    transaction (all or nothing), the files are finished here, idempotently.
    ``only_loaded`` (ingestion) leaves files not loaded yet to the ingestion itself,
    which drops and cuts the suppressed records and counts them in the import report.
    """
    ensure_tables(con)
    root = Path(landing_dir)
    _recover_rewrites(con, deployment, root)
    only = ({(s, f) for s, f in con.execute("SELECT DISTINCT source, file FROM ops.file_ledger"
                                            ).fetchall()} if only_loaded else None)
    out: dict[str, int] = {}
    requests = [r[0] for r in con.execute(
        "SELECT DISTINCT request_id FROM ops.pending_scrubs ORDER BY 1").fetchall()]
    for request_id in requests:
        records: dict[str, list[str]] = {}
        orders: list[str] = []
        for kind, source, rid in con.execute(
                "SELECT kind, source, record_id FROM ops.pending_scrubs WHERE request_id = ? "
                "AND kind <> 'request'", [request_id]).fetchall():
            if kind == "order":
                orders.append(rid)
            else:
                records.setdefault(source, []).append(rid)
        out[request_id] = scrub_landing_files(con, deployment, root, key, request_id, records,
                                              orders, only=only)
        con.execute("DELETE FROM ops.pending_scrubs WHERE request_id = ?", [request_id])
    return out
