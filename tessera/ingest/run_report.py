"""What one run's ingestion did, per file: the Dagster UI's import report and rejects.

Counts, file names, fields, reasons and line numbers only: a reason never carries the
refused value (ops.rejects), so nothing here is personal data.
"""

from __future__ import annotations

import duckdb

FILE_COLUMNS = ("source", "file", "status", "records", "new", "updated", "unchanged", "rejected", "suppressed")


def run_files(con: duckdb.DuckDBPyConnection, batch_id: str) -> list[dict]:
    """Every file the run looked at, with its counts (``ops.import_report``)."""
    rows = con.execute(f"""SELECT {', '.join(FILE_COLUMNS)} FROM ops.import_report
                           WHERE batch_id = ? ORDER BY source, file""", [batch_id]).fetchall()
    return [dict(zip(FILE_COLUMNS, r)) for r in rows]


def top_reject_reasons(con: duckdb.DuckDBPyConnection, batch_id: str, limit: int = 20,
                       lines: int = 5) -> list[dict]:
    """The run's most frequent (source, file, field, reason), with the rejected records and
    the first ``lines`` line numbers where it happened, so an analyst can open the file."""
    rows = con.execute(r"""
        SELECT source, file, field, regexp_replace(reason, ' \(line [0-9]+\)$', '') AS reason,
               count(*) AS records, list(DISTINCT line ORDER BY line) FILTER (WHERE line IS NOT NULL)
        FROM ops.rejects WHERE batch_id = ?
        GROUP BY ALL ORDER BY records DESC, source, file, field, reason LIMIT ?""",
                       [batch_id, limit]).fetchall()
    return [{"source": s, "file": f, "field": fi, "reason": r, "records": int(n),
             "lines": [int(x) for x in (ls or [])[:lines]]} for s, f, fi, r, n, ls in rows]


def files_markdown(files: list[dict]) -> str:
    head = "| " + " | ".join(FILE_COLUMNS) + " |\n|" + "---|" * len(FILE_COLUMNS)
    return "\n".join([head] + ["| " + " | ".join(str(f[c]) for c in FILE_COLUMNS) + " |" for f in files])


def reasons_markdown(reasons: list[dict]) -> str:
    head = "| source | file | field | reason | records | first lines |\n|---|---|---|---|---:|---|"
    return "\n".join([head] + [
        f"| {r['source']} | {r['file']} | {r['field']} | {r['reason'].replace('|', '/')} | {r['records']} | "
        f"{', '.join(map(str, r['lines']))} |" for r in reasons])
