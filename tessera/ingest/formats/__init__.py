"""Streaming readers, one module per format, for landing files: CSV, XML (Sendero layouts), JSON lines, XLSX.

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

from tessera.ingest.formats.common import (
    BATCH_ROWS, FileRejected, Landing, Problem, ReadResult, check_encoding,
    encoding_checked_by_duckdb, encoding_of, fingerprint,
)
from tessera.ingest.formats.csv import (
    csv_record_lines, csv_records, has_edge_blanks, open_csv_landing, read_csv,
    read_csv_python, scan_csv,
)
from tessera.ingest.formats.jsonl import open_jsonl_landing, read_jsonl
from tessera.ingest.formats.xlsx import check_workbook_archive, read_xlsx, xlsx_cell_text
from tessera.ingest.formats.xml import SplitUnsafe, read_xml, read_xml_parallel, record_start_lines, xml_workers

# An api source is pulled into a JSON lines snapshot first (tessera.ingest.api).
READERS = {"csv": read_csv, "xml": read_xml, "jsonl": read_jsonl, "xlsx": read_xlsx,
           "api": read_jsonl, "push": read_jsonl}

__all__ = [
    "BATCH_ROWS", "FileRejected", "Landing", "Problem", "READERS", "ReadResult",
    "check_encoding", "check_workbook_archive", "csv_record_lines", "csv_records",
    "encoding_checked_by_duckdb", "encoding_of", "fingerprint", "has_edge_blanks",
    "open_csv_landing", "open_jsonl_landing", "read_csv", "read_csv_python", "read_jsonl",
    "read_xlsx", "read_xml", "read_xml_parallel", "record_start_lines", "scan_csv", "SplitUnsafe",
    "xlsx_cell_text", "xml_workers",
]
