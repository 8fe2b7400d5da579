"""CSV: the byte scans, DuckDB's landing, pyarrow's and Python's exact readers."""

from __future__ import annotations

import codecs
import csv
import gc
import io
import mmap
import tempfile
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Iterator

import duckdb
import numpy as np
import pyarrow as pa

from tessera.engine.space import naming_space
from tessera.settings import Source
from tessera.ingest.formats.common import (
    not_a_refusal, _CHUNK, BATCH_ROWS, FileRejected, Landing, Problem, ReadResult, _codec, _keeps_insertion_order,
    _positions, _register_lines, _rows_batch, check_header, has_controls,
)

# The pyarrow path reads the whole file into memory for its scan: larger files that
# DuckDB refuses take the Python path (DuckDB's own path scans any size in segments).
FAST_CSV_MAX_BYTES = 1 << 30


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
    check_header(path.name, header, source, delimiter=dialect.delimiter)
    col = {c: f"c{header.index(src)}" for c, src in wanted.items()}
    names = {f"c{i}": "VARCHAR" for i in range(len(header))}
    temps: list[Path] = []

    def readable(src: Path) -> Path:
        """``src`` itself, or a UTF-8 copy of it when DuckDB cannot decode its code page."""
        if not transcode:
            return src
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
                        controls = scan is not None and has_controls(arr, encoding)
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
            cut = _cut_wrong_width_records(path, dialect.delimiter, dialect.quote, encoding)
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
    return Landing(con, records, edge_blanks, problems, controls=controls)


def _swallowed(record: bytes, encoding: str, delimiter: str, quote: str, width: int) -> bool:
    """Whether a bad record over several lines holds good records after its first line.

    Then a broken quote swallowed them: only the exact reader gives them back (the fast
    paths cut records whole). Python work for bad records only.
    """
    text = record.decode(_codec(encoding), errors="replace")
    rest = text.splitlines(keepends=True)[1:]
    if not rest:
        return False

    def make_reader(lines):
        return csv.reader(lines, delimiter=delimiter, quotechar=quote, strict=True)

    return _reads_as_a_record(make_reader, [(0, t) for t in rest], width, width)


def _cut_wrong_width_records(path: Path, delimiter: str, quote: str, encoding: str = "utf-8"):
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
            bounds = np.append(starts, arr.size)
            for k in np.flatnonzero(bad):
                if mm.find(b"\n", int(bounds[k]), int(bounds[k + 1]) - 1) >= 0 and _swallowed(
                        mm[bounds[k]:bounds[k + 1]], encoding, delimiter, quote, int(width)):
                    return None
            fd, tmp = tempfile.mkstemp(suffix=".csv", prefix="tessera-cut-")
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
    scan = csv_records(data, dialect.delimiter, dialect.quote)
    if scan is None:
        return None
    starts, widths, offsets = scan
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
    if bad:
        bounds = np.append(offsets, len(data))
        for k in np.flatnonzero((widths != 0) & (widths != width)):
            record = data[bounds[k]:bounds[k + 1]]
            if b"\n" in record.rstrip(b"\r\n") and _swallowed(
                    record, dialect.encoding, dialect.delimiter, dialect.quote, int(width)):
                return None  # a broken quote: the exact reader reads its lines again
    return header, good, bad, width


def _skip_invalid_row(row) -> str:
    # Blank-looking lines and records of the wrong width: the scan has counted both.
    return "skip"


def _read_csv_arrow(path: Path, source: Source, result: ReadResult, header: list[str],
                    lines: list[int], bad: list[tuple[int, int]], width: int) -> Iterator[pa.Table]:
    import pyarrow.csv as pacsv

    dialect = source.csv
    wanted = source.columns
    check_header(path.name, header, source, delimiter=dialect.delimiter)
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
        src = _Lines(text)

        def make_reader(lines):
            return csv.reader(lines, delimiter=dialect.delimiter, quotechar=dialect.quote,
                              escapechar=dialect.escape, doublequote=dialect.escape is None,
                              strict=True)

        reader = make_reader(src)
        try:
            header = next(reader) if dialect.header else None
        except StopIteration:
            return
        except (csv.Error, _RecordTooLong) as exc:
            raise FileRejected(f"{path.name}: line 1: field *: unreadable header "
                               f"({csv_error_reason(exc)})") from None
        src.take()
        if header is not None:
            header = [h.strip() for h in header]
            check_header(path.name, header, source, delimiter=dialect.delimiter)
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
            yield from _csv_rows(src, make_reader, result, width, need, idx, names,
                                 gc_was_enabled)
        finally:
            if gc_was_enabled:
                gc.enable()


# A record whose quoted field runs over more lines than this is taken for a broken
# quote: its first line is refused and the lines after it are read again as records.
MAX_RECORD_LINES = 1000


class _RecordTooLong(Exception):
    def __str__(self) -> str:
        return f"a quoted field runs over more than {MAX_RECORD_LINES} lines"


class _Lines:
    """The decoded lines of a file for ``csv.reader``, numbered, some read again.

    Python's reader swallows every line after a quote that is never closed (or closed
    lines later, before text): a record that fails over several lines gives its lines
    back (``again``) and a new reader reads them as records. Each line is taken once by
    a record, or given back and taken again: every physical line is accounted for.
    """

    __slots__ = ("_it", "_again", "taken", "_next")

    def __init__(self, text):
        self._it = iter(text)
        self._again: list[tuple[int, str]] = []
        self.taken: list[tuple[int, str]] = []
        self._next = 1

    def __iter__(self):
        return self

    def __next__(self) -> str:
        if self._again:
            item = self._again.pop()
        else:
            item = (self._next, next(self._it))
            self._next += 1
        self.taken.append(item)
        if len(self.taken) > MAX_RECORD_LINES:
            raise _RecordTooLong()
        return item[1]

    def take(self) -> list[tuple[int, str]]:
        taken, self.taken = self.taken, []
        return taken

    def again(self, items: list[tuple[int, str]]) -> None:
        self._again.extend(reversed(items))


# csv.Error's messages, said in the file's terms and never with the file's content: the
# reader's own text is matched only to pick one of these fixed reasons.
_CSV_REASONS = (
    ("expected after", "a closing quote is followed by something other than the delimiter"),
    ("unexpected end of data", "the file ends inside a quoted field"),
    ("line contains nul", "the record holds a NUL byte"),
    ("field larger than field limit", "a field is longer than the CSV reader's limit"),
    ("new-line character seen in unquoted field",
     "a bare carriage return inside an unquoted field"),
)


def csv_error_reason(exc: BaseException) -> str:
    """A fixed reason for a csv.Error (or a record running over too many lines)."""
    if isinstance(exc, _RecordTooLong):
        return str(exc)
    text = str(exc).lower()
    return next((reason for key, reason in _CSV_REASONS if key in text),
                "the CSV reader could not split it into fields")


def _broken_quote(start: int, taken: list, why: str) -> str:
    return (f"malformed CSV record: the quote opened on line {start} runs over "
            f"{len(taken)} lines and the record is broken ({why}); the lines after "
            "line {start} are read again as records").replace("{start}", str(start))


def _reads_as_a_record(make_reader, taken: list, width: int | None, need: int) -> bool:
    """Whether the lines after a failed record's first one start with a good record."""
    try:
        for row in make_reader(iter([text for _, text in taken])):
            n = len(row)
            if n <= 1 and (n == 0 or not row[0].strip()):
                continue
            return n == width or (width is None and n >= need)
    except csv.Error:
        return False
    return False


def _csv_rows(src: _Lines, make_reader, result: ReadResult, width: int | None, need: int,
              idx: list[int], names: list[str], gc_was_enabled: bool) -> Iterator[pa.Table]:
    rows: list[list[str]] = []
    lines: list[int] = []
    problems = result.problems
    records = 0
    reader = make_reader(src)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except (csv.Error, _RecordTooLong) as exc:
            taken = src.take()
            if not taken:
                break
            records += 1
            start = taken[0][0]
            if len(taken) > 1 and _reads_as_a_record(make_reader, taken[1:], width, need):
                why = csv_error_reason(exc)
                problems.append(Problem(start, "*", _broken_quote(start, taken, why)))
                src.again(taken[1:])
            else:
                problems.append(Problem(start, "*",
                                        f"malformed CSV record ({csv_error_reason(exc)})"))
            reader = make_reader(src)
            continue
        taken = src.take()
        start = taken[0][0]
        n = len(row)
        if n <= 1 and (n == 0 or not row[0].strip()):
            continue  # blank line
        records += 1
        if n != width and (width is not None or n < need):
            why = f"expected {width or need} fields, found {n}"
            if len(taken) > 1 and _reads_as_a_record(make_reader, taken[1:], width, need):
                # A quoted field over several lines in a record of the wrong width, and
                # the next line reads as a good record of its own: a quote that
                # swallowed the records after it. They are read again.
                problems.append(Problem(start, "*", _broken_quote(start, taken, why)))
                src.again(taken[1:])
                reader = make_reader(src)
            else:
                problems.append(Problem(start, "*", why))
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
    result.records = records
    if lines:
        batch = _rows_batch(rows, idx, names, lines)
        if gc_was_enabled:
            gc.enable()
        yield batch
