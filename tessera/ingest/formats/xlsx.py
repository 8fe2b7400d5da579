"""XLSX workbooks with openpyxl in read-only mode, after the archive is checked."""

from __future__ import annotations

import datetime as dt
import warnings
import zipfile
from pathlib import Path
from typing import Iterator

import pyarrow as pa

from tessera.settings import Source
from tessera.ingest.formats.common import (
    BATCH_ROWS, FileRejected, Problem, ReadResult, _batch, check_header,
)

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
        check_header(path.name, header, source, where=f"sheet '{layout.sheet}' row {layout.header_row}")
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
