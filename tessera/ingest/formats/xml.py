"""XML (Sendero layouts) with lxml's iterparse: entities, DTD and network off."""

from __future__ import annotations

import io
import os
import re
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import nullcontext
from multiprocessing import get_context
from pathlib import Path
from typing import BinaryIO, Iterator

import pyarrow as pa
import pyarrow.compute as pc
from lxml import etree

from tessera.settings import Source
from tessera.ingest.formats.common import (
    _CHUNK, BATCH_ROWS, FileRejected, Problem, ReadResult, _rows_batch, check_encoding,
)

_DECLARED = re.compile(rb"""^(?:\xef\xbb\xbf)?<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
# XML encoding names of the 8-bit code pages, as ``check_encoding`` knows them.
_SINGLE_BYTE = {"iso-8859-1": "latin-1", "latin1": "latin-1", "latin-1": "latin-1",
                "iso_8859-1": "latin-1", "windows-1252": "cp1252", "cp1252": "cp1252",
                "windows-1250": "cp1250", "cp1250": "cp1250"}


def _refuse_doctype(path: Path) -> None:
    # A DOCTYPE can only appear in the prolog, before the root element. lxml still
    # expands small internal entities (RELIABILITY.md rule 7), so refuse it outright.
    with open(path, "rb") as fh:
        head = fh.read(64 * 1024)
    for marker in (b"<!DOCTYPE", b"<!doctype"):
        at = head.find(marker)
        if at >= 0:
            line = head.count(b"\n", 0, at) + 1
            raise FileRejected(f"{path.name}: line {line}: "
                               "XML with a DOCTYPE declaration is refused; nothing loaded")
    # lxml trusts the declaration: UTF-8 bytes declared ISO-8859-1 become mojibake, and a
    # cp1250 file declared windows-1252 too. The 8-bit code pages get the same checks as
    # a CSV file's declared encoding (check_encoding: UTF-8 text, implausible bytes).
    declared = _DECLARED.match(head)
    if declared:
        codec = _SINGLE_BYTE.get(declared.group(1).decode("ascii").lower())
        if codec:
            check_encoding(path, codec)


_LXML_LINE_LIMIT = 65535


def record_start_lines(path: Path | BinaryIO, tag: str, chunk_size: int = _CHUNK) -> Iterator[int]:
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
    with (open(path, "rb") if isinstance(path, (str, Path)) else nullcontext(path)) as fh:
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
    """The file's records as Arrow batches of strings, one process (see
    :func:`read_xml_parallel` for large files)."""
    _refuse_doctype(path)
    yield from _records(str(path), path.name, source, result,
                        (lambda: record_start_lines(path, source.xml.record_tag))
                        if _ascii_compatible(path) else None, check_table=True)


def _records(document: str | BinaryIO, name: str, source: Source, result: ReadResult,
             scan, check_table: bool, first_line: int = 1) -> Iterator[pa.Table]:
    """Parse ``document`` (a path, or the bytes of a part of a file with its ancestors'
    tags around it) into batches. ``scan``: a fresh :func:`record_start_lines` over the
    same bytes, for lines past lxml's limit (None: not countable). ``first_line``: the
    file line of the document's first line (a part's lines are its file's).
    ``check_table``: the ``<table>`` declaration is this document's to check."""
    layout = source.xml
    assert layout is not None
    # Line numbers: lxml's are exact below 65,535; from there on (and only for files
    # that get there) the record start tags are counted in the bytes.
    shift = first_line - 1
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
        for event, elem in etree.iterparse(document, **parser_kw):
            if not root_checked:
                # The prolog is fully parsed before the first element event: a DOCTYPE
                # anywhere in it (even after a long comment) is refused here.
                root_checked = True
                info = elem.getroottree().docinfo
                if info.doctype or info.internalDTD is not None:
                    raise FileRejected(f"{name}: XML with a DOCTYPE declaration is refused")
            if event == "start":
                if elem.tag == layout.record_tag:
                    line = elem.sourceline
                    if starts is None and scan is not None and line is not None and line >= _LXML_LINE_LIMIT:
                        starts = scan()
                        for _ in range(started):
                            next(starts, None)
                    if starts is not None:
                        counted = next(starts, None)
                        if counted is not None:
                            line = counted
                    started += 1
                    open_lines.append(line + shift if line is not None else None)
                continue
            tag = elem.tag
            if tag == "table" and table_seen is None:
                table_seen = (elem.text or "").strip()
                if check_table and layout.table and table_seen != layout.table:
                    # The file's value is not repeated (a refused file's text stays out
                    # of logs); the configured one is ours to name.
                    raise FileRejected(
                        f"{name}: line {elem.sourceline}: field <table>: the file declares "
                        f"another table; expected '{layout.table}'; nothing loaded"
                    )
                continue
            if tag != layout.record_tag:
                continue
            result.records += 1
            # One pass over the children into a row; columns by zip per batch (in C):
            # a dict per record and a lookup per field were half of the reading time.
            row = [None] * width
            twice = None
            for child in elem:
                at = position.get(child.tag)
                if at is not None:
                    if row[at] is not None:
                        twice = child.tag
                    row[at] = (child.text or "").strip()
            line = open_lines.pop()
            if twice is None:
                rows.append(row)
                lines.append(line)
            else:
                # Which of the two is the value? Neither is taken: the record is refused.
                field = next(c for c, src in wanted.items() if src == twice)
                result.problems.append(Problem(line, field, f"element <{twice}> given twice in one record"))
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
            f"{name}: line {line}: XML is not well-formed ({exc.msg}); nothing loaded"
        ) from None
    if check_table and layout.table and table_seen is None:
        raise FileRejected(f"{name}: field <table>: no <commons><table> declaration; "
                           f"expected '{layout.table}'; nothing loaded")
    if lines:
        yield _rows_batch(rows, idx, names, lines)


# ---- large files: parts parsed in parallel processes --------------------------------------

# A file this large is read in parts by a pool of processes (one process parses ~15 MB/s:
# the 2 GB order lines of the reference data took 131 s); below it, the pool's start
# (a fresh interpreter per worker, ~1 s) is not worth it.
PARALLEL_MIN_BYTES = 64 * 1024 ** 2
PART_BYTES = 32 * 1024 ** 2


class SplitUnsafe(Exception):
    """A part did not parse on its own (a malformed file, or a cut inside a comment or
    CDATA section): the caller drops what it read and reads the file in one process,
    which gives the exact error, if any."""


def xml_workers(path: Path, source: Source) -> int:
    """How many processes should parse ``path`` (0: one, in this process): an XML file of
    at least :data:`PARALLEL_MIN_BYTES` on a machine with more than one core (or
    ``TESSERA_XML_WORKERS``; 1 turns the parts off)."""
    if source.format != "xml" or path.stat().st_size < PARALLEL_MIN_BYTES:
        return 0
    workers = int(os.environ.get("TESSERA_XML_WORKERS") or os.cpu_count() or 1)
    return workers if workers > 1 else 0


def read_xml_parallel(path: Path, source: Source, result: ReadResult, workers: int,
                      part_bytes: int | None = None) -> Iterator[pa.Table]:
    """The same batches as :func:`read_xml`, in the file's order, from parts of about
    ``part_bytes`` parsed by ``workers`` processes.

    Why this is exact: a part starts at a record's start tag at the start of a line, and
    is parsed inside its file's own prolog and ancestor elements (the bytes before the
    first record, and the ancestors' end tags), so each record is parsed as in the whole
    file. Lines are counted per part and offset by the newlines before it. A cut that
    falls inside a comment or CDATA section leaves a part that is not well-formed, which
    raises :class:`SplitUnsafe`; so does a malformed file (the one-process read then
    names its error). Only ASCII-compatible encodings are split; others raise
    SplitUnsafe at once."""
    _refuse_doctype(path)
    layout = source.xml
    assert layout is not None
    if not _ascii_compatible(path):
        raise SplitUnsafe("not an ASCII-compatible encoding")
    size = path.stat().st_size
    cuts, head, tail = _cuts(path, layout.record_tag, size, part_bytes or PART_BYTES)
    if len(cuts) < 2:
        raise SplitUnsafe("no record to cut at")
    bounds = list(zip(cuts, [*cuts[1:], size]))
    ctx = get_context("spawn")  # a fork would copy the caller's DuckDB threads
    line = 1
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        pending = []
        nxt = 0
        try:
            while nxt < len(bounds) or pending:
                # a window of parts in flight: finished parts wait in memory for their turn
                while nxt < len(bounds) and len(pending) < 2 * workers:
                    start, end = bounds[nxt]
                    pending.append(pool.submit(_parse_part, str(path), source, start, end,
                                               b"" if nxt == 0 else head,
                                               b"" if end == size else tail, nxt == 0))
                    nxt += 1
                try:
                    batches, problems, records, newlines = pending.pop(0).result()
                except SplitUnsafe:
                    raise
                except (BrokenProcessPool, OSError, MemoryError) as exc:
                    # a worker could not start or died (a main module that starts work on
                    # import, memory): the one-process read still can
                    raise SplitUnsafe(f"a worker process failed ({type(exc).__name__})") from None
                result.records += records
                for pr in problems:
                    result.problems.append(Problem(pr.line + line - 1 if pr.line is not None else None,
                                                   pr.field, pr.reason))
                for batch in batches:
                    if line != 1:
                        at = batch.schema.get_field_index("_line")
                        batch = batch.set_column(at, "_line", pc.add(batch.column(at), line - 1))
                    yield batch
                line += newlines
        finally:
            for f in pending:
                f.cancel()


def _cuts(path: Path, tag: str, size: int, part_bytes: int) -> tuple[list[int], bytes, bytes]:
    """The offsets the parts start at (the first is 0), the bytes before the first record
    (the prolog and the ancestors' start tags) and the ancestors' end tags."""
    # a record's start tag first on its line (indented or not); a part starts at that line
    opener = re.compile(rb"\n[ \t]*<" + re.escape(tag.encode("ascii")) + rb"(?=[\s/>])")
    with open(path, "rb") as fh:
        first = None
        head = b""
        while first is None and len(head) < 4 * _CHUNK:
            block = fh.read(_CHUNK)
            if not block:
                break
            head += block
            m = opener.search(head)
            first = m.start() + 1 if m else None
        if first is None:
            raise SplitUnsafe("no record start within the first 4 MB")
        head = head[:first]
        # the first part holds the head itself: parts are [0, cut 1), [cut 1, cut 2), ...
        cuts = [0]
        at = first + part_bytes
        while at < size:
            fh.seek(at)
            window = fh.read(_CHUNK)
            m = opener.search(window)
            if m is None:
                break
            cuts.append(at + m.start() + 1)
            at = cuts[-1] + part_bytes
    # the ancestors, from the head: the elements opened and not closed before the first record
    parser = etree.XMLPullParser(events=("start", "end"), resolve_entities=False, no_network=True,
                                 load_dtd=False, remove_comments=True)
    stack: list[str] = []
    try:
        parser.feed(head)
        for event, elem in parser.read_events():
            if event == "start":
                stack.append(elem.prefix + ":" + etree.QName(elem).localname if elem.prefix
                             else etree.QName(elem).localname)
            else:
                stack.pop()
    except etree.XMLSyntaxError:
        raise SplitUnsafe("the prolog does not parse") from None
    if not all(name.isascii() for name in stack):
        raise SplitUnsafe("an ancestor's name is not ASCII")  # its end tag's bytes would depend on the encoding
    tail = b"".join(f"</{name}>".encode("ascii") for name in reversed(stack))
    return cuts, head, tail


def _parse_part(path: str, source: Source, start: int, end: int, head: bytes, tail: bytes,
                first: bool) -> tuple[list[pa.Table], list[Problem], int, int]:
    """One part, in a worker process: its batches and problems (lines counted from the
    part's first line), its record count and its newlines."""
    with open(path, "rb") as fh:
        fh.seek(start)
        body = fh.read(end - start)
    document = head + body + tail
    head_lines = head.count(b"\n")
    result = ReadResult()
    try:
        batches = list(_records(io.BytesIO(document), Path(path).name, source, result,
                                lambda: record_start_lines(io.BytesIO(document), source.xml.record_tag),
                                check_table=first, first_line=1 - head_lines))
    except FileRejected as exc:
        # a refusal (of the part, or of the file: its <table>, its syntax) is the one-process
        # read's to make, with that read's message
        raise SplitUnsafe(str(exc)) from None
    return batches, result.problems, result.records, body.count(b"\n")
