"""Streaming readers for landing files: CSV, XML (Sendero layouts), JSON lines, XLSX.

Each reader turns one file into Arrow batches of *strings* named by canonical field,
plus ``_line`` (the physical line where the record starts) so that every reject can
name its line. Typing and validation happen afterwards in DuckDB SQL, set-based.

DuckDB's own CSV reader is used only where it cannot go wrong (``open_csv_landing``): it cannot
report physical line numbers for records with quoted newlines (a vectorised scan of the
bytes gives them), it does not decode cp1250/cp1252 without an extension download
(those files are re-encoded first), and its sniffer and ``ignore_errors`` were measured
to lose data silently (RELIABILITY.md rule 6): neither is ever used, the dialect is
declared, the mode strict and the record count reconciled with the scan. Files it
refuses go through pyarrow or Python's ``csv`` module, which report each bad record.
"""

from __future__ import annotations

import codecs
import gc
import datetime as dt
import csv
import hashlib
import io
import json
import mmap
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor, wait
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import duckdb
import numpy as np
import pyarrow as pa
from lxml import etree

from tessera.settings import Source
from tessera.engine.warehouse import sql_literal

BATCH_ROWS = 50_000
_CHUNK = 1 << 20


class FileRejected(Exception):
    """The whole file cannot be loaded (wrong encoding, DOCTYPE, broken XML, bad header).

    The message names the file, the line when known, and the reason, never a value.
    """


@dataclass
class Problem:
    line: int | None
    field: str
    reason: str


@dataclass
class ReadResult:
    """Filled while batches are consumed."""

    records: int = 0
    problems: list[Problem] = field(default_factory=list)
    # False only when a scan of the bytes proved that no value starts or ends with a
    # blank: trimming every field of every record was a fifth of a clean file's ingest.
    edge_blanks: bool = True


def fingerprint(path: Path) -> tuple[str, int]:
    """sha256 of the file's bytes and its size, reading into one reused 1 MiB buffer."""
    sha = hashlib.sha256()
    size = 0
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            sha.update(view[:n])
            size += n
    return sha.hexdigest(), size


def check_encoding(path: Path, encoding: str | None) -> None:
    """A strict decode of the file in the declared encoding; FileRejected names the line.

    A single-byte code page (cp1252, cp1250, latin-1) decodes almost any bytes, so a
    UTF-8 file declared as cp1252 would load as mojibake without an error. When the
    bytes also decode as UTF-8 and contain multi-byte sequences, the declaration is
    wrong with near certainty: refuse the file instead of corrupting names.
    """
    if not encoding:
        return
    lines_before = 0
    dec = codecs.getincrementaldecoder(_codec(encoding))(errors="strict")
    single_byte = encoding in ("cp1252", "cp1250", "latin-1")
    utf8 = codecs.getincrementaldecoder("utf-8")(errors="strict") if single_byte else None
    utf8_ok, non_ascii = True, False
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            try:
                dec.decode(chunk)
            except UnicodeDecodeError as exc:
                line = lines_before + chunk[: exc.start].count(b"\n") + 1
                raise FileRejected(
                    f"{path.name}: line {line}: bytes are not valid {encoding} "
                    f"({exc.reason}); fix the file or the source's declared encoding"
                ) from None
            if utf8 is not None and utf8_ok:
                if not non_ascii and not chunk.isascii():
                    non_ascii = True
                try:
                    utf8.decode(chunk)
                except UnicodeDecodeError:
                    utf8_ok = False
            lines_before += chunk.count(b"\n")
    try:
        dec.decode(b"", final=True)
    except UnicodeDecodeError:
        raise FileRejected(f"{path.name}: truncated multi-byte sequence at the end of the file") from None
    if single_byte and utf8_ok and non_ascii:
        raise FileRejected(
            f"{path.name}: the source declares {encoding} but the file is UTF-8 text; "
            "declare encoding: utf-8 for this source"
        )


def encoding_checked_by_duckdb(source: Source) -> bool:
    """Whether the CSV landing may skip ``check_encoding`` until DuckDB has read the file.

    DuckDB's CSV reader refuses invalid UTF-8 itself ("Invalid unicode"), so for a
    UTF-8 source the separate decode pass (a fifth of a clean file's ingest) is only
    needed to name the bad line once the landing has failed. Single-byte code pages
    accept any bytes, and their check is the guard against mojibake: always run.
    """
    return source.format == "csv" and _codec(encoding_of(source)) in ("utf-8", "utf-8-sig")


def _codec(encoding: str | None) -> str:
    # A BOM is accepted (and stripped) for UTF-8 whether or not the source says so.
    return "utf-8-sig" if encoding in ("utf-8", "utf-8-sig") else (encoding or "utf-8")


def _batch(columns: dict[str, list], lines: list[int]) -> pa.Table:
    arrays = {name: pa.array(values, type=pa.string()) for name, values in columns.items()}
    arrays["_line"] = pa.array(lines, type=pa.int64())
    return pa.table(arrays)


# The pyarrow path reads the whole file into memory for its scan: larger files that
# DuckDB refuses take the Python path (DuckDB's own path scans any size in segments).
FAST_CSV_MAX_BYTES = 1 << 30


def _positions(arr: np.ndarray, value: int) -> np.ndarray:
    """Where ``arr == value``, in 1 MiB slices.

    One comparison over the whole file allocates a file-sized mask; on this machine the
    page faults of that allocation cost five times the comparison itself.
    """
    mask = np.empty(min(arr.size, _CHUNK), dtype=bool)
    found = []
    for i in range(0, arr.size, _CHUNK):
        part = arr[i:i + _CHUNK]
        m = mask[:part.size]
        np.equal(part, value, out=m)
        hits = np.flatnonzero(m)
        if hits.size:
            found.append(hits + i)
    return np.concatenate(found) if found else np.empty(0, np.int64)


def csv_record_lines(data, delimiter: str, quote: str,
                     widths: bool = True) -> tuple[np.ndarray, np.ndarray] | None:
    """Start line and field count of every record (see ``csv_records``), or None."""
    scan = csv_records(data, delimiter, quote, widths)
    return None if scan is None else (scan[0], scan[1])


def csv_records(data, delimiter: str, quote: str, widths: bool = True,
                allow_bom: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Start line and field count of every record, or None when the file is not clean.

    Vectorised over the bytes with numpy (no Python loop per line): a newline ends a
    record when an even number of quote characters precedes it, since a well-formed
    field opens and closes its quotes and doubles the ones inside. The scan returns
    None, and the caller falls back to the exact Python reader, at the first thing it
    cannot vouch for: a quote that opens a field anywhere but at its start (a quote
    inside an unquoted field), text after a closing quote, an unterminated quote, a CR
    outside quotes that does not end a line. It works on the raw bytes of
    ASCII-compatible encodings (UTF-8, cp1250, cp1252, latin-1): delimiter and quote
    bytes never occur inside a UTF-8 character. Blank-looking records (only
    whitespace) have width 0. With ``widths=False`` the fields are not counted (the
    DuckDB path lets its strict reader count them): empty lines get width 0, every
    other record -1. The third array is each record's first byte in ``data`` (a record
    runs to the next one's first byte), for cutting records out of the file.
    """
    if len(delimiter.encode()) != 1 or len(quote.encode()) != 1:
        return None
    arr = np.frombuffer(data, dtype=np.uint8)
    bom = 3 if allow_bom and arr[:3].tobytes() == b"\xef\xbb\xbf" else 0
    arr = arr[bom:]
    n = arr.size
    if n == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64)
    d, q = delimiter.encode()[0], quote.encode()[0]
    nl = _positions(arr, 10)
    qs = _positions(arr, q)
    if qs.size % 2:
        return None  # unterminated quote
    # Record ends: newlines outside quotes; a final line without a newline ends too.
    ends = nl[(np.searchsorted(qs, nl) % 2) == 0]
    if ends.size == 0 or ends[-1] != n - 1:
        ends = np.append(ends, n)
    starts = np.concatenate(([0], ends[:-1] + 1))
    # Quote placement: an opening quote (even rank) follows a delimiter, a record start
    # or a closing quote (the doubled-quote case); a closing quote (odd rank) is followed
    # by a delimiter, CR, LF, the end, or an opening quote (doubled).
    if qs.size:
        opening, closing = qs[0::2], qs[1::2]
        prev = np.where(opening > 0, arr[np.maximum(opening - 1, 0)], 10)
        # Quotes alternate opening/closing, so the quote before the k-th opening is the
        # (k-1)-th closing and the one after the k-th closing the (k+1)-th opening.
        prev_is_close = np.concatenate(([False], opening[1:] - 1 == closing[:-1]))
        if not np.all((prev == d) | (prev == 10) | (opening == 0) | prev_is_close):
            return None
        nxt = np.where(closing + 1 < n, arr[np.minimum(closing + 1, n - 1)], 10)
        next_is_open = np.concatenate((closing[:-1] + 1 == opening[1:], [False]))
        if not np.all((nxt == d) | (nxt == 10) | (nxt == 13) | next_is_open):
            return None
    # A CR outside quotes must end its line.
    crs = _positions(arr, 13)
    if crs.size:
        outside = crs[(np.searchsorted(qs, crs) % 2) == 0]
        after = outside + 1
        if not np.all((after >= n) | (arr[np.minimum(after, n - 1)] == 10)):
            return None
    if not widths:
        length = ends - starts
        blank = (length == 0) | ((length == 1) & (arr[np.minimum(starts, n - 1)] == 13))
        width = np.where(blank, 0, -1).astype(np.int64)
        if starts[-1] >= n:
            starts, width = starts[:-1], width[:-1]
        return (np.searchsorted(nl, starts) + 1).astype(np.int64), width, starts + bom
    # Width: delimiters in the record minus those inside its quoted fields, plus one.
    ds = _positions(arr, d)
    width = np.searchsorted(ds, ends) - np.searchsorted(ds, starts) + 1
    if qs.size:
        inside = np.searchsorted(ds, closing) - np.searchsorted(ds, opening)
        owner = np.searchsorted(ends, opening)
        width -= np.bincount(owner, weights=inside, minlength=ends.size).astype(np.int64)
    # Records without a delimiter may be blank-looking: rare, checked one by one.
    for k in np.flatnonzero(width == 1):
        if not arr[starts[k]:ends[k]].tobytes().strip():
            width[k] = 0
    # The final newline ends the last line, it does not open another.
    if starts[-1] >= n:
        starts, width, ends = starts[:-1], width[:-1], ends[:-1]
    lines = np.searchsorted(nl, starts) + 1
    return lines.astype(np.int64), width.astype(np.int64), (starts + bom).astype(np.int64)


SCAN_SEGMENT = 256 << 20


def _segments(arr: np.ndarray, quote: int) -> Iterator[tuple[int, int]]:
    """Byte ranges of ``arr`` of about SCAN_SEGMENT bytes, each ending after a record.

    A range ends at the last newline of its window with an even number of quotes
    before it (counted from the range's start, itself a record's start): outside any
    quoted field, so every range holds whole records and starts with even quote parity.
    A window without such a newline (one record longer than the window) grows.
    """
    n, pos = arr.size, 0
    while n - pos > SCAN_SEGMENT:
        size, cut = SCAN_SEGMENT, None
        while cut is None and pos + size < n:
            window = arr[pos: pos + size]
            nl = _positions(window, 10)
            outside = nl[(np.searchsorted(_positions(window, quote), nl) % 2) == 0]
            if outside.size:
                cut = pos + int(outside[-1]) + 1
            else:
                size *= 2
        if cut is None:
            break
        yield pos, cut
        pos = cut
    if pos < n:
        yield pos, n


def scan_csv(data, delimiter: str, quote: str, widths: bool = True, edges: bool = False,
             utf8: bool = True):
    """``csv_records`` (and ``has_edge_blanks``) over a file of any size, in segments.

    Memory stays in proportion to the segment, not the file, but for the per-record
    results (three integers a record). Returns (lines, widths, starts, edge_blanks) or
    None when the file is not clean. ``edge_blanks`` is only computed with ``edges``.
    """
    if len(delimiter.encode()) != 1 or len(quote.encode()) != 1:
        return None
    arr = np.frombuffer(data, dtype=np.uint8)
    parts, lines_before, edge = [], 0, False
    for start, end in _segments(arr, quote.encode()[0]):
        segment = arr[start:end]
        scan = csv_records(segment, delimiter, quote, widths, allow_bom=start == 0)
        if scan is None:
            return None
        lines, width, starts = scan
        parts.append((lines + lines_before, width, starts + start))
        lines_before += _positions(segment, 10).size
        if edges and not edge:
            edge = has_edge_blanks(segment, delimiter, quote, utf8)
    if not parts:
        empty = np.empty(0, np.int64)
        return empty, empty, empty, False
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]), edge)


def _any_in_range(arr: np.ndarray, low: int, high: int) -> bool:
    """Whether some byte is in [low, high), in 1 MiB slices (no file-sized temporaries)."""
    return any(bool(np.any((part >= low) & (part < high)))
               for part in (arr[i:i + _CHUNK] for i in range(0, arr.size, _CHUNK)))


def has_edge_blanks(arr: np.ndarray, delimiter: str, quote: str, utf8: bool) -> bool:
    """Whether some field of the file may start or end with a blank (so needs trimming).

    Exact in one direction only: False is a proof, True may be a false alarm (a blank
    beside a quote inside a value), which costs time, never correctness. A blank (space,
    tab, form feed: RE2's ``\\s`` besides CR and LF) at a field's edge sits next to a
    delimiter, a quote, a line break or the file's ends; a CR or LF at a quoted field's
    edge sits next to its quote; a no-break space anywhere counts. Works on the raw
    bytes of the ASCII-compatible encodings the scan accepts, in 1 MiB slices that
    overlap by one byte.
    """
    n = arr.size
    if n == 0:
        return False
    d, q = delimiter.encode()[0], quote.encode()[0]
    blank, edge, tmp = (np.empty(min(n, _CHUNK + 1), dtype=bool) for _ in range(3))
    for i in range(0, n, _CHUNK):
        part = arr[i:i + _CHUNK + 1]
        m = part.size
        b, e, t = blank[:m], edge[:m], tmp[:m]
        np.equal(part, 0x20, out=b)
        for v in (0x09, 0x0C):
            np.equal(part, v, out=t)
            b |= t
        np.equal(part, d, out=e)
        for v in (q, 10, 13):
            np.equal(part, v, out=t)
            e |= t
        if np.any(b[:-1] & e[1:]) or np.any(e[:-1] & b[1:]):
            return True
    if arr[0] in (0x20, 0x09, 0x0C) or arr[-1] in (0x20, 0x09, 0x0C):
        return True
    nbsp = _positions(arr, 0xA0)
    if nbsp.size and (not utf8 or np.any(arr[np.maximum(nbsp - 1, 0)] == 0xC2)):
        return True
    qs = _positions(arr, q)
    if qs.size:
        opening, closing = qs[0::2], qs[1::2]
        after = arr[np.minimum(opening + 1, n - 1)]
        before = arr[np.maximum(closing - 1, 0)]
        if np.any((after == 10) | (after == 13) | (before == 10) | (before == 13)):
            return True
    return False


def _keeps_insertion_order(con) -> bool:
    """_land's row ids are the file's order only while DuckDB keeps insertion order."""
    return str(con.execute("SELECT current_setting('preserve_insertion_order')")
               .fetchall()[0][0]).lower() == "true"


@dataclass
class Landing:
    """A file landed by DuckDB in ``_land`` (``open_csv_landing``, ``open_jsonl_landing``)."""

    con: object
    records: int
    edge_blanks: bool
    problems: list[Problem] = field(default_factory=list)
    # _land's fields, its position in the file (``_rowid``) and its physical line.
    relation: str = ("(SELECT l.*, k._line FROM (SELECT *, rowid AS _rowid FROM _land) l "
                     "JOIN _land_lines k USING (_rowid))")

    def result(self) -> ReadResult:
        return ReadResult(records=self.records, problems=list(self.problems),
                          edge_blanks=self.edge_blanks)

    def close(self) -> None:
        self.con.unregister("_land_lines")  # a no-op when already gone


def open_csv_landing(con, path: Path, source: Source) -> Landing | None:
    """Land a clean CSV file with DuckDB's own reader into ``_land``, or return None.

    The fastest path, for files whose every record DuckDB's strict reader accepts with
    the declared dialect: its parser is parallel C++ and nothing crosses into Python.
    What DuckDB cannot give, the physical line of each record, comes from the
    vectorised scan of the bytes (``csv_record_lines``), registered as ``_land_lines``
    and joined on the record's position by ``Landing.relation`` inside the statement
    that checks the records (a positional join while landing cost half the parse and
    kept later work on one thread). The scan and DuckDB must find the same number of
    records or the path is abandoned. DuckDB is never asked to guess: no sniffing,
    declared columns, all strings, strict mode. Any error (a record of the wrong width,
    a stray quote, bytes that are not UTF-8) returns None and the caller takes the exact
    readers, which report each bad record on its line; DuckDB's error text quotes the
    row, so it is dropped, never logged. The one refusal handled here is the commonest:
    records with more or fewer fields than the header (and whitespace-only lines) are
    cut out of a copy by their byte ranges and reported as problems, and DuckDB parses
    the rest, so one bad row does not send a million good ones down the slow path.

    Code pages: latin-1 is read natively; cp1252 too when the file has no byte in
    0x80-0x9F (the only range where the two differ); any other code page is first
    re-encoded to UTF-8 into a temporary file, in 1 MiB chunks.
    """
    dialect = source.csv
    assert dialect is not None
    size = path.stat().st_size
    if not dialect.header or dialect.escape is not None or size == 0:
        return None
    if not _keeps_insertion_order(con):
        return None
    encoding = _codec(dialect.encoding)
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        end = mm.find(b"\n")
        head = mm[: end + 1 if end >= 0 else size]
        transcode = False
        if encoding in ("utf-8", "utf-8-sig"):
            duck_encoding = "utf-8"
        else:
            arr = np.frombuffer(mm, dtype=np.uint8)
            if encoding == "latin-1" or (encoding == "cp1252" and not _any_in_range(arr, 0x80, 0xA0)):
                duck_encoding = "latin-1"
            else:
                duck_encoding, transcode = "utf-8", True
            del arr  # the map cannot close while a view of it is alive
    try:
        text = head.decode(encoding, errors="strict")
        header = [h.strip() for h in next(csv.reader(
            [text], delimiter=dialect.delimiter, quotechar=dialect.quote, strict=True))]
    except (UnicodeDecodeError, csv.Error, StopIteration):
        return None
    wanted = source.columns
    missing = [col for col in wanted.values() if col not in header]
    if missing:
        raise FileRejected(
            f"{path.name}: line 1: header lacks column(s) {missing} mapped in the "
            f"source configuration")
    col = {c: f"c{header.index(src)}" for c, src in wanted.items()}
    names = {f"c{i}": "VARCHAR" for i in range(len(header))}
    temps: list[Path] = []

    def readable(src: Path) -> Path:
        """``src`` itself, or a UTF-8 copy of it when DuckDB cannot decode its code page."""
        if not transcode:
            return src
        from tessera.engine.space import naming_space

        fd, tmp = tempfile.mkstemp(suffix=".csv", prefix="tessera-")
        temps.append(Path(tmp))
        dec = codecs.getincrementaldecoder(encoding)(errors="strict")
        with naming_space("a UTF-8 copy of a landing file in the temporary directory", tmp,
                          needed=src.stat().st_size), \
                open(src, "rb") as src_fh, open(fd, "wb") as out:
            while chunk := src_fh.read(_CHUNK):
                out.write(dec.decode(chunk).encode("utf-8"))
            out.write(dec.decode(b"", final=True).encode("utf-8"))
        return Path(tmp)

    def land(read_path: Path) -> int | None:
        """Parse into _land; the record count, or None when DuckDB refuses the file."""
        con.execute("DROP TABLE IF EXISTS _land")
        try:
            con.execute(
                "CREATE TEMP TABLE _land AS SELECT "
                + ", ".join(f'{col[c]} AS "{c}"' for c in wanted)
                + " FROM read_csv(?, delim = ?, quote = ?, escape = ?, header = true, "
                "auto_detect = false, strict_mode = true, columns = ?, encoding = ?)",
                [str(read_path), dialect.delimiter, dialect.quote, dialect.quote, names,
                 duck_encoding])
        except duckdb.Error as exc:
            if not_a_refusal(exc):
                raise  # a full disk or a broken connection is not the file's fault
            return None
        return con.execute("SELECT count(*) FROM _land").fetchall()[0][0]

    problems: list[Problem] = []
    try:
        try:
            first = readable(path)
        except UnicodeDecodeError:
            return None
        # DuckDB parses (releasing the GIL) while this thread scans the bytes for the
        # lines: the connection is left to the worker until it is done.
        with ThreadPoolExecutor(max_workers=1) as pool:
            parsed = pool.submit(land, first)
            try:
                with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                    arr = np.frombuffer(mm, dtype=np.uint8)
                    try:
                        scan = scan_csv(arr, dialect.delimiter, dialect.quote, widths=False,
                                        edges=True, utf8=encoding in ("utf-8", "utf-8-sig"))
                    finally:
                        del arr
            finally:
                wait([parsed])
        found = parsed.result()
        if scan is None:
            return None
        record_lines, blank_or_not, _, edge_blanks = scan
        lines = record_lines[blank_or_not != 0]
        if lines.size == 0 or lines[0] != 1:
            return None  # blank lines before the header: keep it simple
        records = int(lines.size - 1)
        if found != records:
            # Refused, most often for records of the wrong width: cut exactly those out
            # of a copy, report them as the other readers would, and parse the rest.
            cut = _cut_wrong_width_records(path, dialect.delimiter, dialect.quote)
            if cut is None:
                return None
            kept, lines, problems = cut
            temps.append(kept)
            records = int(lines.size - 1)
            if land(readable(kept)) != records:
                return None
            records += len(problems)
    except UnicodeDecodeError:
        return None
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
    _register_lines(con, lines[1:])
    return Landing(con, records, edge_blanks, problems)


def _register_lines(con, lines: np.ndarray) -> None:
    """The physical line of each landed record, by its position (``_rowid``)."""
    con.register("_land_lines", pa.table({
        "_rowid": pa.array(np.arange(lines.size, dtype=np.int64), pa.int64()),
        "_line": pa.array(lines, pa.int64())}))


def _cut_wrong_width_records(path: Path, delimiter: str, quote: str):
    """A copy of ``path`` without its records of the wrong width, or None.

    For a file whose quoting is sound but some records have more or fewer fields than
    the header: the byte scan knows each record's width and first byte, so the good
    records are copied in contiguous runs (no per-record work in Python but for the
    bad ones) and the bad ones become problems worded as the other readers word them.
    Blank-looking records are dropped from the copy too (no reader counts them).
    None when there is nothing to cut (DuckDB refused the file for another reason: the
    exact readers will say which). Returns (copy, lines of the header and
    the kept records, problems).
    """
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        arr = np.frombuffer(mm, dtype=np.uint8)
        try:
            scan = scan_csv(arr, delimiter, quote, widths=True)
            if scan is None:
                return None
            lines, widths, starts, _ = scan
            nonblank = np.flatnonzero(widths != 0)
            if nonblank.size == 0 or lines[nonblank[0]] != 1:
                return None
            width = widths[nonblank[0]]
            bad = (widths != 0) & (widths != width)
            keep = widths == width
            if keep.all():
                return None
            fd, tmp = tempfile.mkstemp(suffix=".csv", prefix="tessera-cut-")
            bounds = np.append(starts, arr.size)
            edges = np.flatnonzero(np.diff(np.concatenate(([0], keep.astype(np.int8), [0]))))
            with open(fd, "wb") as out:
                out.write(mm[: starts[0]])  # a byte order mark
                for first, stop in zip(edges[0::2], edges[1::2]):
                    out.write(mm[bounds[first]: bounds[stop]])
            problems = [Problem(int(line), "*", f"expected {int(width)} fields, found {int(n)}")
                        for line, n in zip(lines[bad], widths[bad])]
            return Path(tmp), lines[keep], problems
        finally:
            del arr


def read_csv(path: Path, source: Source, result: ReadResult) -> Iterator[pa.Table]:
    """CSV records as Arrow batches of strings with their physical start line.

    Clean files (every record has the header's width, quotes well-formed, no escape
    character) are parsed by pyarrow's C++ reader with the declared dialect and
    encoding, after one scan of the bytes that finds where each record starts. Any
    other file goes through Python's csv module, which reports each bad record on its
    line. Both paths give the same values, lines and records.
    """
    dialect = source.csv
    assert dialect is not None
    if dialect.header and dialect.escape is None and path.stat().st_size <= FAST_CSV_MAX_BYTES:
        fast = _fast_csv_plan(path, source)
        if fast is not None:
            yield from _read_csv_arrow(path, source, result, *fast)
            return
    yield from read_csv_python(path, source, result)


def _fast_csv_plan(path: Path, source: Source):
    dialect = source.csv
    data = path.read_bytes()
    scan = csv_record_lines(data, dialect.delimiter, dialect.quote)
    if scan is None:
        return None
    starts, widths = scan
    records = [(s, w) for s, w in zip(starts, widths) if w]
    if not records:
        return None
    header_line, width = records[0]
    if width <= 1:
        return None
    if len(records) > 1 and records[1][0] != header_line + 1:
        return None  # a header spanning lines, or blank lines after it: keep it simple
    head = data[: data.index(b"\n") + 1 if b"\n" in data else len(data)]
    text = head.decode(_codec(dialect.encoding), errors="strict")
    header = [h.strip() for h in next(csv.reader(
        [text], delimiter=dialect.delimiter, quotechar=dialect.quote, strict=True))]
    # Records of the wrong width are skipped by the parser and reported from the scan,
    # with the same line and message as the Python path.
    good = [s for s, w in records[1:] if w == width]
    bad = [(s, w) for s, w in records[1:] if w != width]
    return header, good, bad, width


def _skip_invalid_row(row) -> str:
    # Blank-looking lines and records of the wrong width: the scan has counted both.
    return "skip"


def _read_csv_arrow(path: Path, source: Source, result: ReadResult, header: list[str],
                    lines: list[int], bad: list[tuple[int, int]], width: int) -> Iterator[pa.Table]:
    import pyarrow.csv as pacsv

    dialect = source.csv
    wanted = source.columns
    missing = [col for col in wanted.values() if col not in header]
    if missing:
        raise FileRejected(
            f"{path.name}: line 1: header lacks column(s) {missing} mapped in the "
            f"source configuration")
    names = [f"c{i}" for i in range(len(header))]
    pick = {canon: names[header.index(col)] for canon, col in wanted.items()}
    encoding = _codec(dialect.encoding)
    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(column_names=names, skip_rows=1, block_size=1 << 22,
                                       encoding="utf8" if encoding in ("utf-8", "utf-8-sig")
                                       else encoding),
        parse_options=pacsv.ParseOptions(delimiter=dialect.delimiter, quote_char=dialect.quote,
                                         double_quote=True, newlines_in_values=True,
                                         ignore_empty_lines=True,
                                         # blank-looking lines were counted as blanks too
                                         invalid_row_handler=_skip_invalid_row),
        convert_options=pacsv.ConvertOptions(
            column_types={n: pa.string() for n in names}, include_columns=sorted(set(pick.values())),
            strings_can_be_null=False, quoted_strings_can_be_null=False))
    result.problems.extend(Problem(line, "*", f"expected {width} fields, found {n}")
                           for line, n in bad)
    done = 0
    for batch in reader:
        if batch.num_rows == 0:
            continue
        arrays = {canon: batch.column(col) for canon, col in pick.items()}
        arrays["_line"] = pa.array(lines[done: done + batch.num_rows], type=pa.int64())
        done += batch.num_rows
        result.records = done + len(bad)
        yield pa.table(arrays)
    result.records = done + len(bad)
    if done != len(lines):  # the scan and the parser disagree: never load such a file
        raise FileRejected(f"{path.name}: CSV records could not be counted reliably "
                           f"({done} parsed, {len(lines)} found); nothing loaded")


def read_csv_python(path: Path, source: Source, result: ReadResult) -> Iterator[pa.Table]:
    dialect = source.csv
    assert dialect is not None
    wanted = source.columns  # canonical -> source column
    with open(path, "rb") as raw:
        text = io.TextIOWrapper(raw, encoding=_codec(dialect.encoding), errors="strict", newline="")
        reader = csv.reader(
            text,
            delimiter=dialect.delimiter,
            quotechar=dialect.quote,
            escapechar=dialect.escape,
            doublequote=dialect.escape is None,
            strict=True,
        )
        try:
            header = next(reader) if dialect.header else None
        except StopIteration:
            return
        except csv.Error as exc:
            raise FileRejected(f"{path.name}: line 1: unreadable header ({exc})") from None
        if header is not None:
            header = [h.strip() for h in header]
            missing = [col for col in wanted.values() if col not in header]
            if missing:
                raise FileRejected(
                    f"{path.name}: line 1: header lacks column(s) {missing} mapped in the "
                    f"source configuration"
                )
            index = {canon: header.index(col) for canon, col in wanted.items()}
            width = len(header)
        else:
            index = {canon: int(col) for canon, col in wanted.items()}
            width = None
        names = list(wanted)
        idx = [index[c] for c in names]
        need = max(idx) + 1 if idx else 0
        # Rows are kept whole and transposed per batch (zip, in C): per-field appends
        # in Python were half of the reading time.
        # Rows are acyclic lists of str: the cycle collector has nothing to find in them,
        # but with 50,000 rows alive it kept re-scanning them (a third of the time).
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            yield from _csv_rows(reader, result, width, need, idx, names, gc_was_enabled)
        finally:
            if gc_was_enabled:
                gc.enable()


def _csv_rows(reader, result: ReadResult, width: int | None, need: int, idx: list[int],
              names: list[str], gc_was_enabled: bool) -> Iterator[pa.Table]:
    rows: list[list[str]] = []
    lines: list[int] = []
    problems = result.problems
    records = 0
    prev_end = reader.line_num
    while True:
        try:
            for row in reader:
                start = prev_end + 1
                prev_end = reader.line_num
                n = len(row)
                if n <= 1 and (n == 0 or not row[0].strip()):
                    continue  # blank line
                records += 1
                if n != width and (width is not None or n < need):
                    problems.append(Problem(start, "*", f"expected {width or need} fields, "
                                                        f"found {n}"))
                    continue
                rows.append(row)
                lines.append(start)
                if len(lines) >= BATCH_ROWS:
                    result.records = records
                    batch = _rows_batch(rows, idx, names, lines)
                    rows, lines = [], []
                    if gc_was_enabled:
                        gc.enable()
                    yield batch
                    gc.disable()
            break
        except csv.Error as exc:
            records += 1
            problems.append(Problem(prev_end + 1, "*", f"malformed CSV record ({exc})"))
            prev_end = reader.line_num
    result.records = records
    if lines:
        batch = _rows_batch(rows, idx, names, lines)
        if gc_was_enabled:
            gc.enable()
        yield batch


def _rows_batch(rows: list[list[str]], idx: list[int], names: list[str],
                lines: list[int]) -> pa.Table:
    cols = list(zip(*rows))
    arrays = {name: pa.array(cols[i], type=pa.string()) for name, i in zip(names, idx)}
    arrays["_line"] = pa.array(lines, type=pa.int64())
    return pa.table(arrays)


def _refuse_doctype(path: Path) -> None:
    # A DOCTYPE can only appear in the prolog, before the root element. lxml still
    # expands small internal entities (RELIABILITY.md rule 7), so refuse it outright.
    with open(path, "rb") as fh:
        head = fh.read(64 * 1024)
    if b"<!DOCTYPE" in head or b"<!doctype" in head:
        raise FileRejected(f"{path.name}: XML with a DOCTYPE declaration is refused")


_LXML_LINE_LIMIT = 65535


def record_start_lines(path: Path, tag: str, chunk_size: int = _CHUNK) -> Iterator[int]:
    """Physical line of every ``<tag`` start tag, in document order, by counting.

    libxml2 keeps an element's line in 16 bits: past line 65,535 lxml's ``sourceline``
    falls back on the element's first text node and, for records that span lines, is
    one line late (measured). This scan skips comments, CDATA sections and processing
    instructions, so it sees exactly the start tags the parser sees (a DOCTYPE, the one
    other place markup could hide, is refused). It reads the bytes once more, lazily.
    Only ASCII-compatible encodings are scanned; the caller checks that.
    """
    name = re.escape(tag.encode("ascii"))
    opener = re.compile(rb"<!--|<!\[CDATA\[|<\?|<" + name + rb"(?=[\s/>])")
    closers = {b"<!--": b"-->", b"<![CDATA[": b"]]>", b"<?": b"?>"}
    keep = len(tag) + 10
    line, buf, state, eof = 1, b"", None, False
    with open(path, "rb") as fh:
        while not eof:
            chunk = fh.read(chunk_size)
            eof = not chunk
            buf += chunk
            pos = 0
            while True:
                if state is not None:
                    j = buf.find(state, pos)
                    if j < 0:
                        break
                    end = j + len(state)
                    line += buf.count(b"\n", pos, end)
                    pos, state = end, None
                    continue
                m = opener.search(buf, pos)
                if m is None:
                    break
                line += buf.count(b"\n", pos, m.start())
                pos = m.end()
                token = m.group()
                if token in closers:
                    state = closers[token]
                else:
                    yield line
            if eof:
                return
            # Keep a tail that may hold the start of a token cut by the chunk boundary.
            cut = pos if state is not None and len(buf) - pos < len(state) else max(
                pos, len(buf) - (len(state) if state is not None else keep))
            line += buf.count(b"\n", pos, cut)
            buf = buf[cut:]


def _ascii_compatible(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(4)
    return not (head.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in head)


def read_xml(path: Path, source: Source, result: ReadResult) -> Iterator[pa.Table]:
    layout = source.xml
    assert layout is not None
    _refuse_doctype(path)
    # Line numbers: lxml's are exact below 65,535; from there on (and only for files
    # that get there) the record start tags are counted in the bytes.
    can_count = _ascii_compatible(path)
    starts: Iterator[int] | None = None
    started = 0
    open_lines: list[int] = []
    wanted = source.columns
    source_cols = list(dict.fromkeys(wanted.values()))
    position = {c: i for i, c in enumerate(source_cols)}
    width = len(source_cols)
    names = list(wanted)
    idx = [position[src] for src in wanted.values()]  # a column may feed two fields
    rows: list[list] = []
    lines: list[int] = []
    table_seen: str | None = None
    parser_kw = dict(
        events=("start", "end"), tag=[layout.record_tag, "table"], resolve_entities=False,
        no_network=True, load_dtd=False, huge_tree=False, remove_comments=True,
    )
    try:
        root_checked = False
        for event, elem in etree.iterparse(str(path), **parser_kw):
            if not root_checked:
                # The prolog is fully parsed before the first element event: a DOCTYPE
                # anywhere in it (even after a long comment) is refused here.
                root_checked = True
                info = elem.getroottree().docinfo
                if info.doctype or info.internalDTD is not None:
                    raise FileRejected(f"{path.name}: XML with a DOCTYPE declaration is refused")
            if event == "start":
                if elem.tag == layout.record_tag:
                    line = elem.sourceline
                    if starts is None and can_count and line is not None and line >= _LXML_LINE_LIMIT:
                        starts = record_start_lines(path, layout.record_tag)
                        for _ in range(started):
                            next(starts, None)
                    if starts is not None:
                        counted = next(starts, None)
                        if counted is not None:
                            line = counted
                    started += 1
                    open_lines.append(line)
                continue
            tag = elem.tag
            if tag == "table" and table_seen is None:
                table_seen = (elem.text or "").strip()
                if layout.table and table_seen != layout.table:
                    raise FileRejected(
                        f"{path.name}: line {elem.sourceline}: <table> is '{table_seen}', "
                        f"expected '{layout.table}'"
                    )
                continue
            if tag != layout.record_tag:
                continue
            result.records += 1
            # One pass over the children into a row; columns by zip per batch (in C):
            # a dict per record and a lookup per field were half of the reading time.
            row = [None] * width
            for child in elem:
                at = position.get(child.tag)
                if at is not None:
                    row[at] = (child.text or "").strip()
            rows.append(row)
            lines.append(open_lines.pop())
            elem.clear(keep_tail=False)
            parent = elem.getparent()
            while parent is not None and elem.getprevious() is not None:
                del parent[0]
            if len(lines) >= BATCH_ROWS:
                yield _rows_batch(rows, idx, names, lines)
                rows, lines = [], []
    except etree.XMLSyntaxError as exc:
        line = exc.position[0] if exc.position else None
        raise FileRejected(
            f"{path.name}: line {line}: XML is not well-formed ({exc.msg}); nothing loaded"
        ) from None
    if layout.table and table_seen is None:
        raise FileRejected(f"{path.name}: no <commons><table> declaration; expected '{layout.table}'")
    if lines:
        yield _rows_batch(rows, idx, names, lines)



def _json_path(obj: dict, path: str):
    cur = obj
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    if cur is None:
        return None
    if isinstance(cur, (dict, list)):
        # Minified, keys in their order: the text DuckDB's JSON path gives (open_jsonl_landing).
        return json.dumps(cur, ensure_ascii=False, separators=(",", ":"))
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


_JSON_KEY = re.compile(r"^[^\"\\]+$")


def open_jsonl_landing(con, path: Path, source: Source) -> Landing | None:
    """Land a JSON lines file with DuckDB's JSON reader into ``_land``, or return None.

    Every line is read as one JSON value (``records = false``), and each mapped field is
    extracted from it with a JSON path, as text: strings as they are, numbers and
    booleans as their JSON text, objects and arrays as minified JSON, absent and null
    as NULL (``read_jsonl`` gives the same). DuckDB skips empty and whitespace-only
    lines, as ``read_jsonl`` does; the physical line of each record comes from a byte
    scan of the newlines. A line that is not JSON, or not an object, becomes a problem
    worded as ``read_jsonl`` words it (Python parses just those lines again), so a few
    bad lines do not send millions of good ones down the slow path. Anything unusual
    returns None and the exact reader takes the file: a line Python reads as an object
    but DuckDB does not, a byte order mark (DuckDB refuses it), a lone CR, a line that is
    blank to Python but not to JSON (a no-break space), or a key with a quote or
    backslash in the source's mapping.
    """
    wanted = source.columns
    if any(not all(_JSON_KEY.match(part) for part in src.split(".")) for src in wanted.values()):
        return None
    if not _keeps_insertion_order(con):
        return None
    size = path.stat().st_size
    if size == 0:
        return None
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        if mm[:3] == b"\xef\xbb\xbf":
            return None
        arr = np.frombuffer(mm, dtype=np.uint8)
        try:
            nl = _positions(arr, 10)
            crs = _positions(arr, 13)
            if crs.size and not np.all(np.isin(crs + 1, nl)):
                return None  # a lone CR ends a line for Python's reader, not for DuckDB
            starts = np.concatenate(([0], nl + 1))
            ends = np.append(nl, size)
            keep = ends > starts
            starts, ends = starts[keep], ends[keep]
            numbers = np.flatnonzero(keep) + 1
            # Most lines open with "{": only the others are looked at, one by one.
            first = arr[np.minimum(starts, size - 1)]
            record = first == ord("{")
            for k in np.flatnonzero(~record):
                text = mm[starts[k]:ends[k]]
                if text.decode("utf-8", "replace").strip():
                    record[k] = True          # a record for Python: DuckDB reads it too
                elif text.strip(b" \t\r"):
                    return None               # blank to Python, not to JSON (NBSP)
        finally:
            del arr
    lines, starts, ends = numbers[record], starts[record], ends[record]

    def path_of(src: str) -> str:
        return "$." + ".".join('"' + part + '"' for part in src.split("."))

    con.execute("DROP TABLE IF EXISTS _land")
    try:
        # ignore_errors gives a line DuckDB cannot parse a NULL row in its place (it
        # never drops one with records = false): the row count is checked against the
        # scan, and every such line is parsed again by Python to word its reject.
        con.execute(
            "CREATE TEMP TABLE _land AS SELECT "
            + ", ".join(f"json_extract_string(json, {sql_literal(path_of(src))}) AS \"{canon}\""
                        for canon, src in wanted.items())
            + ", json_type(json) IS NOT DISTINCT FROM 'OBJECT' AS _object FROM read_json(?, "
            "format = 'newline_delimited', records = false, columns = {'json': 'JSON'}, "
            "ignore_errors = true)", [str(path)])
        found = con.execute("SELECT count(*) FROM _land").fetchall()[0][0]
        odd = [r[0] for r in con.execute(
            "SELECT rowid FROM _land WHERE NOT _object ORDER BY rowid").fetchall()]
    except duckdb.Error as exc:
        if not_a_refusal(exc):
            raise  # a full disk or a broken connection is not the file's fault
        con.execute("DROP TABLE IF EXISTS _land")
        return None
    if found != lines.size:
        con.execute("DROP TABLE IF EXISTS _land")
        return None
    problems = []
    if odd:
        with open(path, "rb") as fh:
            for k in odd:
                fh.seek(int(starts[k]))
                text = fh.read(int(ends[k] - starts[k])).decode("utf-8")
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as exc:
                    problems.append(Problem(int(lines[k]), "*", f"not valid JSON ({exc.msg})"))
                    continue
                if isinstance(obj, dict):  # Python reads what DuckDB did not: its call
                    con.execute("DROP TABLE IF EXISTS _land")
                    return None
                problems.append(Problem(int(lines[k]), "*", "a JSON object is expected"))
        con.execute("DELETE FROM _land WHERE NOT _object")
    _register_lines(con, lines)  # by position in the file: the deleted rows leave gaps
    landing = Landing(con, int(found), True, problems)
    return landing


def read_jsonl(path: Path, source: Source, result: ReadResult) -> Iterator[pa.Table]:
    wanted = source.columns
    columns: dict[str, list] = {c: [] for c in wanted}
    lines: list[int] = []
    with open(path, encoding="utf-8-sig", errors="strict") as fh:
        for lineno, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            result.records += 1
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                result.problems.append(Problem(lineno, "*", f"not valid JSON ({exc.msg})"))
                continue
            if not isinstance(obj, dict):
                result.problems.append(Problem(lineno, "*", "a JSON object is expected"))
                continue
            for canon, src in wanted.items():
                columns[canon].append(_json_path(obj, src))
            lines.append(lineno)
            if len(lines) >= BATCH_ROWS:
                yield _batch(columns, lines)
                columns = {c: [] for c in wanted}
                lines = []
    if lines:
        yield _batch(columns, lines)


# --------------------------------------------------------------------------- #
# XLSX
# --------------------------------------------------------------------------- #
def not_a_refusal(exc: BaseException) -> bool:
    """A DuckDB error that says nothing about the file: out of space, a fatal or
    transaction error. Such an error must surface as it is, never send the file to
    a slower reader (which would then fail with a misleading "transaction is aborted")."""
    from tessera.engine.space import is_out_of_space

    return is_out_of_space(exc) or isinstance(exc, (duckdb.FatalException,
                                                    duckdb.TransactionException))


def check_workbook_archive(path: Path, max_uncompressed_mb: int, max_ratio: int) -> None:
    """Refuse a workbook whose zip directory announces too much data, before opening it.

    RELIABILITY.md rule 8. The sizes come from the zip central directory; Python's
    zipfile never inflates a member past its declared size (a lying header fails its
    CRC check), so the declared sizes bound what openpyxl can be made to read.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError):
        raise FileRejected(f"{path.name}: not an XLSX workbook (not a zip archive)") from None
    names = {i.filename for i in infos}
    if "[Content_Types].xml" not in names or not any(n.startswith("xl/") for n in names):
        raise FileRejected(f"{path.name}: not an XLSX workbook (no xl/ part)")
    total = sum(i.file_size for i in infos)
    packed = sum(i.compress_size for i in infos)
    limit = max_uncompressed_mb * 1024 * 1024
    if total > limit:
        raise FileRejected(
            f"{path.name}: workbook expands to {total // (1024 * 1024)} MB, more than the "
            f"source's max_uncompressed_mb ({max_uncompressed_mb}); refused before opening")
    ratio = total / max(packed, 1)
    # Tiny archives compress oddly: the ratio is only meaningful above 1 MB expanded.
    if total > 1024 * 1024 and ratio > max_ratio:
        raise FileRejected(
            f"{path.name}: workbook compression ratio {ratio:.0f}x exceeds the source's "
            f"max_ratio ({max_ratio}x); refused before opening (zip bomb?)")


def xlsx_cell_text(cell) -> tuple[str | None, str | None]:
    """(text, problem) for one read-only cell.

    Numbers become text without float artefacts: an integral float (a phone typed as a
    number, 3471234567.0) becomes ``3471234567``; other numbers keep Excel's 15
    significant digits. Leading zeros that Excel already dropped from a number cell
    cannot be recovered (type such columns as Text). Dates become ISO text. Formulas
    are never evaluated and their cached values are not trusted: a formula cell is a
    problem, as is an error value such as ``#N/A``.
    """
    value = getattr(cell, "value", None)
    if value is None:
        return None, None
    kind = getattr(cell, "data_type", None)
    if kind == "f":
        return None, "cell holds a formula (formulas are not evaluated; paste the values)"
    if kind == "e":
        return None, f"cell holds an Excel error ({value})"
    if isinstance(value, bool):
        return ("true" if value else "false"), None
    if isinstance(value, int):
        return str(value), None
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e18:
            return str(int(value)), None
        return format(value, ".15g"), None
    if isinstance(value, dt.datetime):
        if value.time() == dt.time(0):
            return value.date().isoformat(), None
        return value.strftime("%Y-%m-%d %H:%M:%S"), None
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat(), None
    return str(value), None


def _open_sheet(path: Path, layout):
    import openpyxl

    check_workbook_archive(path, layout.max_uncompressed_mb, layout.max_ratio)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # openpyxl warns about unsupported extensions
            wb = openpyxl.load_workbook(path, read_only=True, data_only=False, keep_links=False)
    except Exception as exc:  # openpyxl raises many types for broken parts
        raise FileRejected(f"{path.name}: unreadable workbook ({type(exc).__name__})") from None
    if layout.sheet not in wb.sheetnames:
        wb.close()
        raise FileRejected(f"{path.name}: no sheet named '{layout.sheet}' "
                           f"(sheets: {', '.join(wb.sheetnames)})")
    ws = wb[layout.sheet]
    # The declared dimension is not trusted (rule 8): rows are padded only up to the
    # columns we ask for, never to the sheet's declared width.
    ws.reset_dimensions()
    return wb, ws


def read_xlsx(path: Path, source: Source, result: ReadResult) -> Iterator[pa.Table]:
    """Records from one sheet of a workbook; ``_line`` is the sheet's physical row number."""
    layout = source.xlsx
    assert layout is not None
    wanted = source.columns
    wb, ws = _open_sheet(path, layout)
    try:
        header_cells = next(ws.iter_rows(min_row=layout.header_row, max_row=layout.header_row,
                                         max_col=layout.max_columns), ())
        header = [("" if c.value is None else str(c.value)).strip() for c in header_cells]
        while header and not header[-1]:
            header.pop()
        missing = [col for col in wanted.values() if col not in header]
        if missing:
            raise FileRejected(
                f"{path.name}: sheet '{layout.sheet}' row {layout.header_row}: header lacks "
                f"column(s) {missing} mapped in the source configuration")
        index = {canon: header.index(col) for canon, col in wanted.items()}
        width = len(header)
        columns: dict[str, list] = {c: [] for c in wanted}
        lines: list[int] = []
        for offset, row in enumerate(ws.iter_rows(min_row=layout.header_row + 1, max_col=width)):
            rowno = layout.header_row + 1 + offset
            if all(getattr(c, "value", None) is None for c in row):
                continue  # blank row
            result.records += 1
            texts, problems = {}, []
            for canon, i in index.items():
                text, problem = xlsx_cell_text(row[i]) if i < len(row) else (None, None)
                if problem:
                    problems.append(Problem(rowno, canon, problem))
                texts[canon] = text
            if problems:
                result.problems.extend(problems)
                continue
            for canon in wanted:
                columns[canon].append(texts[canon])
            lines.append(rowno)
            if len(lines) >= BATCH_ROWS:
                yield _batch(columns, lines)
                columns = {c: [] for c in wanted}
                lines = []
        if lines:
            yield _batch(columns, lines)
    finally:
        wb.close()


# An api source is pulled into a JSON lines snapshot first (tessera.ingest.api).
READERS = {"csv": read_csv, "xml": read_xml, "jsonl": read_jsonl, "xlsx": read_xlsx,
           "api": read_jsonl, "push": read_jsonl}


def encoding_of(source: Source) -> str | None:
    if source.format == "csv":
        return source.csv.encoding if source.csv else "utf-8"
    if source.format in ("jsonl", "api", "push"):
        return "utf-8"
    return None  # XML declares its own encoding; lxml checks it
