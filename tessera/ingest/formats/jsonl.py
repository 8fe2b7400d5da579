"""JSON lines (also API snapshots and push files): DuckDB's landing and the exact reader."""

from __future__ import annotations

import json
import mmap
import re
from pathlib import Path
from typing import Iterator

import duckdb
import numpy as np
import pyarrow as pa

from tessera.engine.warehouse import sql_literal
from tessera.settings import Source
from tessera.ingest.formats.common import (
    not_a_refusal, BATCH_ROWS, Landing, Problem, ReadResult, _batch, _keeps_insertion_order, _positions,
    _register_lines, has_controls,
)


class _DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


class _NonFinite(ValueError):
    """A JSON number that is NaN or +/-Infinity: no field of a contract can hold one."""


def _unique_pairs(pairs: list) -> dict:
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKey(key)
        obj[key] = value
    return obj


def _non_finite(name: str):
    raise _NonFinite(name)


def parse_record(text: str, line: int, source: Source) -> tuple[dict | None, Problem | None]:
    """One line as a JSON object, or the problem that refuses it (never quoting a value).

    Stricter than ``json.loads``: a key given twice in one object (Python keeps the
    last, DuckDB the first: the record would depend on the reader), ``NaN`` and
    ``Infinity`` (not JSON; they would be stored as the text ``nan``) and nesting too
    deep for the parser (RecursionError) refuse the record, not the file.
    """
    try:
        obj = json.loads(text, object_pairs_hook=_unique_pairs, parse_constant=_non_finite)
    except json.JSONDecodeError as exc:
        return None, Problem(line, "*", f"not valid JSON ({exc.msg})")
    except _DuplicateKey as exc:
        fields = [c for c, src in source.columns.items() if src.split(".")[-1] == exc.key]
        return None, Problem(line, fields[0] if fields else "*",
                             f"key '{exc.key[:64]}' given twice in one record")
    except _NonFinite:
        return None, Problem(line, "*", "a non-finite number (NaN or Infinity) is not JSON")
    except RecursionError:
        return None, Problem(line, "*", "JSON nested too deeply")
    if not isinstance(obj, dict):
        return None, Problem(line, "*", "a JSON object is expected")
    return obj, None

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


def _is_number(obj: dict, path: str) -> bool:
    """Whether the value at ``path`` is a JSON number or boolean (not text)."""
    cur = obj
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return False
        cur = cur[part]
    return isinstance(cur, (int, float))  # bool is an int


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
            # NaN and Infinity are not JSON, but DuckDB reads them as numbers: a file that
            # may hold one takes the exact reader, which refuses those records.
            if mm.find(b"NaN") >= 0 or mm.find(b"Infinity") >= 0:
                return None
            # Control characters reach a value raw or as an escape (\u0000, \b, \f).
            controls = (has_controls(arr, "utf-8") or mm.find(b"\\u") >= 0
                        or mm.find(b"\\b") >= 0 or mm.find(b"\\f") >= 0)
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
        # _numbers lists the fields given as JSON numbers or booleans (the loader refuses
        # them for text fields: a postcode 184 has lost its zeros); json_type is only
        # asked where the text looks like a number. _dupkeys flags an object giving a
        # key twice (DuckDB keeps the first, Python the last): Python words the reject.
        number_kinds = ", ".join(
            f"CASE WHEN regexp_full_match(\"{canon}\", '-?[0-9][0-9.eE+-]*|true|false') "
            f"AND json_type(json, {sql_literal(path_of(src))}) <> 'VARCHAR' THEN {sql_literal(canon)} END"
            for canon, src in wanted.items())
        con.execute(
            "CREATE TEMP TABLE _land AS SELECT * EXCLUDE (json, _keys), "
            f"nullif(concat_ws(',', {number_kinds}), '') AS _numbers, "
            "coalesce(len(_keys) <> list_unique(_keys), false) AS _dupkeys FROM (SELECT "
            + ", ".join(f"json_extract_string(json, {sql_literal(path_of(src))}) AS \"{canon}\""
                        for canon, src in wanted.items())
            + ", json_type(json) IS NOT DISTINCT FROM 'OBJECT' AS _object, "
            "CASE WHEN json_type(json) = 'OBJECT' THEN json_keys(json) END AS _keys, json "
            "FROM read_json(?, format = 'newline_delimited', records = false, "
            "columns = {'json': 'JSON'}, ignore_errors = true))", [str(path)])
        found = con.execute("SELECT count(*) FROM _land").fetchall()[0][0]
        odd = [r[0] for r in con.execute(
            "SELECT rowid FROM _land WHERE NOT _object OR _dupkeys ORDER BY rowid").fetchall()]
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
                obj, problem = parse_record(text, int(lines[k]), source)
                if problem is None:  # Python reads what DuckDB did not: its call
                    con.execute("DROP TABLE IF EXISTS _land")
                    return None
                problems.append(problem)
        con.execute("DELETE FROM _land WHERE NOT _object OR _dupkeys")
    _register_lines(con, lines)  # by position in the file: the deleted rows leave gaps
    landing = Landing(con, int(found), True, problems, controls=controls, numbers=True)
    return landing


def read_jsonl(path: Path, source: Source, result: ReadResult) -> Iterator[pa.Table]:
    wanted = source.columns
    columns: dict[str, list] = {c: [] for c in wanted}
    lines: list[int] = []
    kinds: list[str | None] = []
    result.numbers = True
    with open(path, encoding="utf-8-sig", errors="strict") as fh:
        for lineno, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            result.records += 1
            obj, problem = parse_record(text, lineno, source)
            if problem is not None:
                result.problems.append(problem)
                continue
            for canon, src in wanted.items():
                columns[canon].append(_json_path(obj, src))
            kinds.append(",".join(c for c, src in wanted.items() if _is_number(obj, src)) or None)
            lines.append(lineno)
            if len(lines) >= BATCH_ROWS:
                yield _batch(columns, lines, kinds)
                columns = {c: [] for c in wanted}
                lines, kinds = [], []
    if lines:
        yield _batch(columns, lines, kinds)
