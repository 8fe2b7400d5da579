"""Writing a feed's rows as a file, one function per format, each published atomically
(:func:`tessera.feeds.files.published`) and deterministic: the same rows give the same
bytes, so a day exported twice gives byte-identical files.

CSV, JSON lines and Parquet are written by the engine (``COPY``): no row becomes a Python
object. XLSX and XML have no engine writer; they stream the engine's Arrow result one
record batch at a time (openpyxl's write-only workbook, lxml's incremental writer).

Formula neutralisation (RELIABILITY.md rule 9): text starting with ``= + - @``, tab or
carriage return is prefixed with ``'`` in XLSX always and in CSV when the feed is for
spreadsheets; Parquet, JSON lines and XML keep every value exactly (a phone keeps its +).
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from lxml import etree
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell

from tessera.engine import Engine, SqlStep
from tessera.feeds.files import published, sha256_file

EXTENSIONS = {"csv": "csv", "jsonl": "jsonl", "parquet": "parquet", "xlsx": "xlsx", "xml": "xml"}
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_BATCH = 65_536
# XML 1.0 cannot carry these characters at all; they become U+FFFD in an XML feed.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
# a fixed time inside the XLSX archive and its properties, so that the bytes are the
# same on every run (openpyxl stamps "now" in both)
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class FileStats:
    file: str
    rows: int
    sha256: str


def schema_of(engine: Engine, step: SqlStep) -> pa.Schema:
    """The columns and types a step returns, without running it over the data."""
    return engine.arrow(SqlStep(step.name + ".schema", f"SELECT * FROM ({step.sql}) LIMIT 0",
                                step.params)).schema


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def neutralised_step(step: SqlStep, schema: pa.Schema) -> SqlStep:
    """The step with every text column's formula-looking values prefixed with ``'``."""
    starts = ", ".join(["'='", "'+'", "'-'", "'@'", "chr(9)", "chr(13)"])
    cols = []
    for f in schema:
        q = '"' + f.name.replace('"', '""') + '"'
        cols.append(f"CASE WHEN left({q}, 1) IN ({starts}) THEN '''' || {q} ELSE {q} END AS {q}"
                    if _is_text(f.type) else q)
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
            rows = _write_xlsx(engine.arrow(step), tmp)
        elif fmt == "xml":
            root = xml_names.root if xml_names else "records"
            record = xml_names.record if xml_names else "record"
            rows = _write_xml(engine.arrow(step), tmp, root, record)
        else:
            raise ValueError(f"unknown feed format {fmt!r}")
    return FileStats(path.name, int(rows), sha256_file(path))


def _write_xlsx(table: pa.Table, tmp: Path) -> int:
    if table.num_rows > 1_048_575:
        raise ValueError(f"{table.num_rows} rows do not fit one XLSX sheet (1,048,575 at most)")
    wb = Workbook(write_only=True)
    stamp = dt.datetime(2000, 1, 1)
    wb.properties.created = stamp
    wb.properties.modified = stamp
    ws = wb.create_sheet("feed")
    ws.append([_text_cell(ws, name) for name in table.column_names])
    for batch in table.to_batches(_BATCH):
        for row in zip(*(c.to_pylist() for c in batch.columns)):
            ws.append([_xlsx_cell(ws, v) for v in row])
    raw = tmp.with_name(tmp.name + ".raw")
    try:
        wb.save(raw)
        _rezip_fixed(raw, tmp, stamp)
    finally:
        raw.unlink(missing_ok=True)
    return table.num_rows


def _text_cell(ws, value: str) -> WriteOnlyCell:
    # a text cell stays text: openpyxl would store "=..." as a formula otherwise
    cell = WriteOnlyCell(ws, value=value)
    cell.data_type = "s"
    return cell


def _xlsx_cell(ws, v):
    if isinstance(v, str):
        return _text_cell(ws, neutralise(v))
    if isinstance(v, decimal.Decimal):
        return float(v)
    if isinstance(v, dt.datetime) and v.tzinfo is not None:
        return v.replace(tzinfo=None)
    if isinstance(v, (list, dict)):
        return _text_cell(ws, str(v))
    return v


def _rezip_fixed(src: Path, dst: Path, stamp: dt.datetime) -> None:
    """Copy an XLSX archive entry by entry with a fixed time on every entry (and the
    save time openpyxl wrote into the core properties replaced by ``stamp``)."""
    when = stamp.strftime("%Y-%m-%dT%H:%M:%SZ").encode()
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename == "docProps/core.xml":
                data = re.sub(rb"(<dcterms:(?:created|modified)[^>]*>)[^<]*(</dcterms:)",
                              rb"\g<1>" + when + rb"\g<2>", data)
            out = zipfile.ZipInfo(info.filename, date_time=_ZIP_TIME)
            out.compress_type = zipfile.ZIP_DEFLATED
            out.external_attr = 0o600 << 16
            zout.writestr(out, data)


def _xml_text(v) -> str:
    if isinstance(v, bool):
        text = "true" if v else "false"
    elif isinstance(v, (dt.date, dt.datetime)):
        text = v.isoformat()
    else:
        text = str(v)
    return _XML_INVALID.sub("\ufffd", text)


def _write_xml(table: pa.Table, tmp: Path, root: str, record: str) -> int:
    names = table.column_names
    with etree.xmlfile(str(tmp), encoding="utf-8") as xf:
        xf.write_declaration()
        with xf.element(root):
            xf.write("\n")
            for batch in table.to_batches(_BATCH):
                for row in zip(*(c.to_pylist() for c in batch.columns)):
                    el = etree.Element(record)
                    for name, v in zip(names, row):
                        if v is not None:
                            etree.SubElement(el, name).text = _xml_text(v)
                    el.tail = "\n"
                    xf.write(el)
    return table.num_rows
