"""XML (Sendero layouts) with lxml's iterparse: entities, DTD and network off."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import pyarrow as pa
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
                    # The file's value is not repeated (a refused file's text stays out
                    # of logs); the configured one is ours to name.
                    raise FileRejected(
                        f"{path.name}: line {elem.sourceline}: field <table>: the file declares "
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
            f"{path.name}: line {line}: XML is not well-formed ({exc.msg}); nothing loaded"
        ) from None
    if layout.table and table_seen is None:
        raise FileRejected(f"{path.name}: field <table>: no <commons><table> declaration; "
                           f"expected '{layout.table}'; nothing loaded")
    if lines:
        yield _rows_batch(rows, idx, names, lines)
