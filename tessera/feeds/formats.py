"""Writing a feed's rows as a file, one function per format, each published atomically
(:func:`tessera.feeds.files.published`) and deterministic: the same rows give the same
bytes, so a day exported twice gives byte-identical files.

CSV, JSON lines and Parquet are written by the engine (``COPY``). XLSX and XML have no
engine writer, so the engine renders each row's markup (escaped, typed) as one string
and Python only joins those strings into the file, a batch at a time: no value becomes a
Python object. (openpyxl and lxml, a Python object per cell, wrote 4k and 21k rows/s;
a 1 M-row feed has to be written in under 30 s.)

Formula neutralisation (RELIABILITY.md rule 9): text starting with ``= + - @``, tab or
carriage return is prefixed with ``'`` in XLSX always and in CSV when the feed is for
spreadsheets; Parquet, JSON lines and XML keep every value exactly (a phone keeps its +).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from xml.sax.saxutils import escape

import pyarrow as pa

from tessera.engine import Engine, SqlStep
from tessera.feeds.files import published, sha256_file

EXTENSIONS = {"csv": "csv", "jsonl": "jsonl", "parquet": "parquet", "xlsx": "xlsx", "xml": "xml"}
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_STARTS_SQL = "'=', '+', '-', '@', chr(9), chr(13)"
_BATCH = 65_536
# a fixed time on every entry of the XLSX archive: the same rows give the same bytes
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_XLSX_MAX_ROWS = 1_048_575  # one sheet, below its header row
_QUOTE = "'"
# the control characters XML 1.0 cannot carry, and everything XML text must escape: a
# value is searched once and rewritten only if it needs it (measured on 3 M values: a
# guarded regexp_replace 1.8 s, unguarded 2.5 s, translate() of the 29 characters 20 s)
_CONTROL_RE = "'[\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F]'"
_NEEDS_ESCAPE_RE = "'[\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F&<>\\r]'"


@dataclass(frozen=True)
class FileStats:
    file: str
    rows: int
    sha256: str


def schema_of(engine: Engine, step: SqlStep) -> pa.Schema:
    """The columns and types a step returns, without running it over the data."""
    return engine.arrow(SqlStep(step.name + ".schema", f"SELECT * FROM ({step.sql}) LIMIT 0",
                                step.params)).schema


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def neutralised_sql(expr: str) -> str:
    """SQL: text that a spreadsheet would run as a formula, prefixed with ``'``."""
    return (f"CASE WHEN left({expr}, 1) IN ({_STARTS_SQL}) "
            f"THEN {_QUOTE * 4} || {expr} ELSE {expr} END")


def neutralised_step(step: SqlStep, schema: pa.Schema) -> SqlStep:
    """The step with every text column's formula-looking values neutralised."""
    cols = [f"{neutralised_sql(_q(f.name))} AS {_q(f.name)}" if _is_text(f.type) else _q(f.name)
            for f in schema]
    return SqlStep(step.name + ".neutralised", f"SELECT {', '.join(cols)} FROM ({step.sql})",
                   step.params)


def neutralise(value):
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def write_feed_file(engine: Engine, step: SqlStep, path: Path, fmt: str, *,
                    csv_dialect=None, xml_names=None, for_spreadsheet: bool = False) -> FileStats:
    """Write the rows of ``step`` (in its order) to ``path`` in ``fmt``, atomically."""
    with published(path) as tmp:
        if fmt == "csv":
            schema = schema_of(engine, step)
            src = neutralised_step(step, schema) if for_spreadsheet else step
            d = csv_dialect
            rows = engine.copy_to(src, tmp, "csv", csv={
                "delimiter": d.delimiter if d else ",", "quote": d.quote if d else '"',
                "header": d.header if d else True})
        elif fmt == "jsonl":
            rows = engine.copy_to(step, tmp, "json")
        elif fmt == "parquet":
            rows = engine.copy_to(step, tmp, "parquet")
        elif fmt == "xlsx":
            rows = _write_xlsx(engine, step, tmp)
        elif fmt == "xml":
            root = xml_names.root if xml_names else "records"
            record = xml_names.record if xml_names else "record"
            rows = _write_xml(engine, step, tmp, root, record)
        else:
            raise ValueError(f"unknown feed format {fmt!r}")
    return FileStats(path.name, int(rows), sha256_file(path))


def xml_text_sql(expr: str) -> str:
    """SQL: a value as XML text. ``& < >`` escaped, a carriage return as ``&#13;`` (so
    that a parser gives it back), and the control characters XML 1.0 cannot carry at
    all replaced by U+FFFD. A value needing none of it (most) is only searched once."""
    v = f"CAST({expr} AS VARCHAR)"
    out = f"regexp_replace({v}, {_CONTROL_RE}, '\ufffd', 'g')"
    for a, b in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;")):
        out = f"replace({out}, '{a}', '{b}')"
    out = f"replace({out}, chr(13), '&#13;')"
    return f"CASE WHEN regexp_matches({v}, {_NEEDS_ESCAPE_RE}) THEN {out} ELSE {v} END"


def _rendered(engine: Engine, step: SqlStep, expr: str, name: str) -> Iterator[list[str]]:
    """The step's rows rendered by ``expr`` (over its columns), a batch at a time."""
    for batch in engine.arrow_batches(SqlStep(name, f"SELECT {expr} AS x FROM ({step.sql})",
                                              step.params), _BATCH):
        yield batch.column(0).to_pylist()


def _write_xml(engine: Engine, step: SqlStep, tmp: Path, root: str, record: str) -> int:
    # element names are validated XML names (tessera.settings.feeds)
    schema = schema_of(engine, step)
    parts = [f"coalesce('<{f.name}>' || {xml_text_sql(_q(f.name))} || '</{f.name}>', '')"
             for f in schema]
    expr = " || ".join([f"'<{record}>'", *parts, f"'</{record}>'"])
    rows = 0
    with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(f'<?xml version="1.0" encoding="UTF-8"?>\n<{root}>\n')
        for chunk in _rendered(engine, step, expr, step.name + ".xml"):
            fh.write("\n".join(chunk))
            fh.write("\n")
            rows += len(chunk)
        fh.write(f"</{root}>\n")
    return rows


_XML_HEAD = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
_RELS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_XLSX_PARTS = {
    "[Content_Types].xml": (
        _XML_HEAD + '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-'
        'officedocument.spreadsheetml.sheet.main+xml"/>'
        '<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-'
        'officedocument.spreadsheetml.worksheet+xml"/>'
        '<Override PartName="/xl/styles.xml" ContentType="application/vnd.openxmlformats-'
        'officedocument.spreadsheetml.styles+xml"/></Types>'),
    "_rels/.rels": (
        _XML_HEAD + '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        f'<Relationship Id="rId1" Type="{_RELS}/officeDocument" Target="xl/workbook.xml"/>'
        '</Relationships>'),
    "xl/workbook.xml": (
        _XML_HEAD + '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
        f'xmlns:r="{_RELS}"><sheets><sheet name="feed" sheetId="1" r:id="rId1"/></sheets></workbook>'),
    "xl/_rels/workbook.xml.rels": (
        _XML_HEAD + '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        f'<Relationship Id="rId1" Type="{_RELS}/worksheet" Target="worksheets/sheet1.xml"/>'
        f'<Relationship Id="rId2" Type="{_RELS}/styles" Target="styles.xml"/></Relationships>'),
    # cell styles: 0 general, 1 a date (built-in format 14), 2 a date and time (22)
    "xl/styles.xml": (
        _XML_HEAD + '<styleSheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
        '<fonts count="1"><font><sz val="11"/><name val="Calibri"/></font></fonts>'
        '<fills count="2"><fill><patternFill patternType="none"/></fill>'
        '<fill><patternFill patternType="gray125"/></fill></fills>'
        '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
        '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
        '<cellXfs count="3"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>'
        '<xf numFmtId="14" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/>'
        '<xf numFmtId="22" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/>'
        '</cellXfs><cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/>'
        '</cellStyles></styleSheet>'),
}


def _xlsx_cell_sql(name: str, t: pa.DataType) -> str:
    """SQL: one column's cell markup (NULL for a NULL value). Text is always an
    inline string, never a formula, and formula-looking text is neutralised."""
    q = _q(name)
    if pa.types.is_boolean(t):
        return f"""'<c t="b"><v>' || CASE WHEN {q} THEN '1' ELSE '0' END || '</v></c>'"""
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return f"""'<c><v>' || CAST({q} AS VARCHAR) || '</v></c>'"""
    if pa.types.is_date(t):
        return (f"""'<c s="1"><v>' || CAST(date_diff('day', DATE '1899-12-30', {q}) AS VARCHAR)"""
                """ || '</v></c>'""")
    if pa.types.is_timestamp(t):
        return (f"""'<c s="2"><v>' || CAST(epoch(CAST({q} AS TIMESTAMP)) / 86400.0 + 25569 """
                """AS VARCHAR) || '</v></c>'""")
    text = neutralised_sql(f"CAST({q} AS VARCHAR)")
    return (f"""'<c t="inlineStr"><is><t xml:space="preserve">' || {xml_text_sql(text)}"""
            """ || '</t></is></c>'""")


def _write_xlsx(engine: Engine, step: SqlStep, tmp: Path) -> int:
    schema = schema_of(engine, step)
    header = "".join(f'<c t="inlineStr"><is><t xml:space="preserve">{escape(f.name)}</t></is></c>'
                     for f in schema)
    # cells carry no reference, so a NULL is an empty cell that keeps the columns in place
    cells = " || ".join(f"coalesce({_xlsx_cell_sql(f.name, f.type)}, '<c/>')" for f in schema)
    rows = 0
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, text in _XLSX_PARTS.items():
            zf.writestr(_zip_info(name), text.encode("utf-8"))
        with zf.open(_zip_info("xl/worksheets/sheet1.xml"), "w", force_zip64=True) as raw:
            raw.write((_XML_HEAD + '<worksheet xmlns="http://schemas.openxmlformats.org/'
                       'spreadsheetml/2006/main"><sheetData>').encode("utf-8"))
            raw.write(f"<row>{header}</row>".encode("utf-8"))
            for chunk in _rendered(engine, step, cells or "''", step.name + ".xlsx"):
                if rows + len(chunk) > _XLSX_MAX_ROWS:
                    raise ValueError(f"more than {_XLSX_MAX_ROWS} rows do not fit one XLSX sheet")
                # rows carry no reference either: they follow each other from row 2
                raw.write(("<row>" + "</row><row>".join(chunk) + "</row>").encode("utf-8"))
                rows += len(chunk)
            raw.write(b"</sheetData></worksheet>")
    return rows


def _zip_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o600 << 16
    return info
