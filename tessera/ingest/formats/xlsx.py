"""XLSX workbooks with openpyxl in read-only mode, after the archive is checked."""

from __future__ import annotations

import datetime as dt
import re
import warnings
import zipfile
from pathlib import Path
from typing import Iterator

import pyarrow as pa
from openpyxl.utils import get_column_letter

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
    if any(n.lower().endswith("vbaproject.bin") for n in names):
        raise FileRejected(f"{path.name}: a macro-enabled workbook (.xlsm, with a VBA project) "
                           "is refused; save it as a plain .xlsx; nothing loaded")
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


EXCEL_ERROR_CODES = frozenset({"#NULL!", "#DIV/0!", "#VALUE!", "#REF!", "#NAME?", "#NUM!", "#N/A",
                               "#GETTING_DATA", "#SPILL!", "#CALC!", "#FIELD!", "#BLOCKED!",
                               "#CONNECT!", "#BUSY!", "#UNKNOWN!"})


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
        # Named only when it is one of Excel's own codes: an error cell of a hand-made or
        # broken file may hold any text, and that text is not ours to repeat.
        code = f" ({value})" if value in EXCEL_ERROR_CODES else ""
        return None, f"cell holds an Excel error{code}"
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


_ZEROS = re.compile(r"^0+$")


def _is_number_cell(cell) -> bool:
    value = getattr(cell, "value", None)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _zero_padded(cell) -> str | None:
    """The text a zero-padded number format shows (``00000``: 184 -> ``00184``), or None.

    Only whole numbers under a format of zeros alone: that text is exactly what the
    person typing saw, so it is recovered; any other format cannot say what was lost.
    """
    fmt = str(getattr(cell, "number_format", "") or "")
    value = cell.value
    if not _ZEROS.match(fmt) or value < 0 or (isinstance(value, float) and not value.is_integer()):
        return None
    return str(int(value)).zfill(len(fmt))


def sniff_workbook(path: Path) -> None:
    """Refuse a file named .xlsx that is something else, from its content, with the reason.

    An OLE2 compound file is an encrypted workbook (its ``EncryptedPackage`` stream) or
    a legacy Excel 97-2003 (BIFF) one; HTML and CSV text are often saved as .xlsx by
    other tools; a macro-enabled workbook (.xlsm) carries a VBA project.
    """
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        if "EncryptedPackage".encode("utf-16-le") in head or "EncryptionInfo".encode("utf-16-le") in head:
            raise FileRejected(f"{path.name}: the workbook is encrypted (password-protected); "
                               "save it without a password; nothing loaded")
        raise FileRejected(f"{path.name}: a legacy Excel 97-2003 (.xls, BIFF) workbook, not XLSX; "
                           "save it as .xlsx; nothing loaded")
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<table", b"<?xml")) or b"<html" in text[:1024]:
        raise FileRejected(f"{path.name}: an HTML (or XML) file saved as .xlsx, not a workbook; "
                           "nothing loaded")
    if b"\x00" not in head:
        raise FileRejected(f"{path.name}: not an XLSX workbook (a text file, such as CSV, "
                           "saved as .xlsx); nothing loaded")


def _open_sheet(path: Path, layout):
    import openpyxl

    sniff_workbook(path)
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
        # Number cells in text fields are refused by the loader naming the cell.
        result.numbers = True
        result.cells = {canon: get_column_letter(i + 1) for canon, i in index.items()}
        kinds: list[str | None] = []
        width = len(header)
        columns: dict[str, list] = {c: [] for c in wanted}
        lines: list[int] = []
        for offset, row in enumerate(ws.iter_rows(min_row=layout.header_row + 1, max_col=width)):
            rowno = layout.header_row + 1 + offset
            if all(getattr(c, "value", None) is None for c in row):
                continue  # blank row
            result.records += 1
            texts, problems, given_as_numbers = {}, [], []
            for canon, i in index.items():
                cell = row[i] if i < len(row) else None
                text, problem = xlsx_cell_text(cell) if cell is not None else (None, None)
                if problem:
                    problems.append(Problem(rowno, canon, problem))
                elif text is not None and _is_number_cell(cell):
                    padded = _zero_padded(cell)
                    if padded is not None:
                        text = padded      # 184 shown as 00184 by its format: exact
                    else:
                        given_as_numbers.append(canon)
                texts[canon] = text
            if problems:
                result.problems.extend(problems)
                continue
            for canon in wanted:
                columns[canon].append(texts[canon])
            lines.append(rowno)
            kinds.append(",".join(given_as_numbers) or None)
            if len(lines) >= BATCH_ROWS:
                yield _batch(columns, lines, kinds)
                columns = {c: [] for c in wanted}
                lines, kinds = [], []
        if lines:
            yield _batch(columns, lines, kinds)
    finally:
        wb.close()
