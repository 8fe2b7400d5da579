"""JSON lines (also API snapshots and push files): DuckDB's landing and the exact reader."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import duckdb
import numpy as np
import pyarrow as pa

from tessera.engine.warehouse import sql_literal
from tessera.settings import Source
from tessera.ingest.formats.common import (
    not_a_refusal, BATCH_ROWS, Landing, Problem, ReadResult, _batch, _keeps_insertion_order,
    _positions, _register_lines, has_controls,
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


_BLOCK = 16 << 20


@dataclass
class _LineScan:
    """What one pass over a JSON lines file found, without holding the file in memory."""

    size: int
    nl: np.ndarray       # the newlines' byte offsets
    odd: np.ndarray      # physical lines (0-based) that do not open with "{"
    controls: bool       # a value may hold a control character (raw or escaped)

    @property
    def lines(self) -> int:
        return int(self.nl.size) + (1 if self.nl.size == 0 or int(self.nl[-1]) < self.size - 1 else 0)

    def span(self, k: int) -> tuple[int, int]:
        start = 0 if k == 0 else int(self.nl[k - 1]) + 1
        return start, (int(self.nl[k]) if k < self.nl.size else self.size)


def _followed_by(part: np.ndarray, at: np.ndarray, tail: bytes) -> bool:
    """Whether any position in ``at`` is followed by the bytes ``tail``."""
    at = at[at + len(tail) < part.size]
    hit = np.ones(at.size, dtype=bool)
    for j, byte in enumerate(tail, 1):
        hit &= part[at + j] == byte
    return bool(hit.any())


def _escaped_controls(part: np.ndarray) -> bool:
    """Whether a JSON escape may decode to a control character (``\\u``, ``\\b``, ``\\f``)."""
    slash = _positions(part, ord("\\"))
    slash = slash[slash + 1 < part.size]
    return bool(slash.size and np.isin(part[slash + 1], (ord("u"), ord("b"), ord("f"))).any())


def _scan_lines(path: Path) -> _LineScan | None:
    """One pass over the file in blocks of whole lines, or None where DuckDB's reader may
    not read it as Python does (the exact reader takes the file then).

    A file of 50 M events is 12 GB: mapping it whole put every page in the process's
    resident set (13 GB peak at the reference scale), and each check read all of it
    again. Here every check is a byte comparison per block, held in one reused buffer:
    the newlines, lone CRs (a line end for Python, not for DuckDB), ``NaN`` and
    ``Infinity`` (not JSON, but numbers to DuckDB: the exact reader refuses them), and
    the control characters that may reach a value raw or escaped (``\\u``, ``\\b``,
    ``\\f``). Returns None for an empty file and one with a byte order mark.
    """
    size = path.stat().st_size
    if size == 0:
        return None
    buf = bytearray(_BLOCK)
    nls, odds = [], []
    controls = False
    offset = lines_before = keep = 0
    with open(path, "rb", buffering=0) as fh:
        while True:
            filled = keep
            while filled < len(buf) and (n := fh.readinto(memoryview(buf)[filled:])):
                filled += n
            eof = filled < len(buf)
            if offset == 0 and buf[:3] == b"\xef\xbb\xbf":
                return None
            cut = filled if eof else buf.rfind(b"\n", 0, filled) + 1
            if cut == 0 and not eof:  # one line longer than the block: a larger block
                buf.extend(bytes(len(buf)))
                keep = filled
                continue
            part = np.frombuffer(buf, dtype=np.uint8, count=cut)
            nl = _positions(part, 10)
            starts = np.concatenate(([0], nl + 1))
            starts = starts[starts < cut]
            odd = np.flatnonzero(part[starts] != ord("{"))
            if odd.size:
                odds.append(odd + lines_before)
            lines_before += starts.size
            nls.append(nl + offset)
            crs = _positions(part, 13)
            if crs.size and (int(crs[-1]) + 1 >= cut or np.any(part[crs + 1] != 10)):
                return None
            if _followed_by(part, _positions(part, ord("N")), b"aN") or _followed_by(
                    part, _positions(part, ord("I")), b"nfinity"):
                return None
            if not controls:
                controls = (has_controls(part, "utf-8", line_ends=nl.size + crs.size)
                            or _escaped_controls(part))
            del part
            keep = filled - cut
            buf[:keep] = buf[cut:filled]
            offset += cut
            if eof and keep == 0:
                break
    return _LineScan(size, np.concatenate(nls) if nls else np.empty(0, np.int64),
                     np.concatenate(odds) if odds else np.empty(0, np.int64), controls)


_JSON_KEY = re.compile(r"^[^\"\\]+$")


def _first_keys(path: Path) -> list[str] | None:
    """The keys of the file's first line, in order, when it is an object with distinct keys
    (else None): the shape most records of a file share."""
    with open(path, "rb") as fh:
        line = fh.readline(1 << 20)
    try:
        pairs = json.loads(line, object_pairs_hook=lambda p: p)
    except (ValueError, RecursionError):
        return None
    if not isinstance(pairs, list) or not pairs or not all(isinstance(p, tuple) for p in pairs):
        return None
    keys = [k for k, _ in pairs]
    return keys if len(set(keys)) == len(keys) else None


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
    scan = _scan_lines(path)
    if scan is None:
        return None
    # Most lines open with "{": only the others are looked at, one by one.
    blank = []
    with open(path, "rb") as fh:
        for k in scan.odd.tolist():
            start, end = scan.span(k)
            fh.seek(start)
            text = fh.read(end - start)
            if not text:
                blank.append(k)               # an empty line: no record
            elif text.decode("utf-8", "replace").strip():
                pass                          # a record for Python: DuckDB reads it too
            elif text.strip(b" \t\r"):
                return None                   # blank to Python, not to JSON (NBSP)
            else:
                blank.append(k)
    # The physical line of each record; None while they are simply 1..n (no blank line).
    lines = np.delete(np.arange(1, scan.lines + 1, dtype=np.int64), blank) if blank else None
    records = scan.lines - len(blank)

    def span_of_record(k: int) -> tuple[int, int]:
        return scan.span(int(lines[k]) - 1 if lines is not None else k)

    def line_of_record(k: int) -> int:
        return int(lines[k]) if lines is not None else k + 1

    def path_of(src: str) -> str:
        return "$." + ".".join('"' + part + '"' for part in src.split("."))

    # A key given twice: counted by list_unique (a hash of every key of every record, a
    # third of the landing at 50 M events) only for the records whose keys are not, in
    # order, the first record's (when those are distinct): in a file of one shape, none.
    first = _first_keys(path)
    dupkeys = "len(_keys) <> list_unique(_keys)"
    if first:
        dupkeys = (f"CASE WHEN _keys = [{', '.join(sql_literal(k) for k in first)}]::VARCHAR[] "
                   f"THEN false ELSE {dupkeys} END")

    con.execute("DROP TABLE IF EXISTS _land")
    try:
        # ignore_errors gives a line DuckDB cannot parse a NULL row in its place (it
        # never drops one with records = false): the row count is checked against the
        # scan, and every such line is parsed again by Python to word its reject.
        # _numbers lists the fields given as JSON numbers or booleans (the loader refuses
        # them for text fields: a postcode 184 has lost its zeros); json_type is only
        # asked where the text looks like a number. _dupkeys flags an object giving a
        # key twice (DuckDB keeps the first, Python the last): Python words the reject.
        # The first code point (a digit, '-', 't' or 'f') before the expression: nearly
        # every text value fails there.
        number_kinds = ", ".join(
            f"CASE WHEN (ord(\"{canon}\") BETWEEN 48 AND 57 OR ord(\"{canon}\") IN (45, 102, 116)) "
            f"AND regexp_full_match(\"{canon}\", '-?[0-9][0-9.eE+-]*|true|false') "
            f"AND json_type(json, {sql_literal(path_of(src))}) <> 'VARCHAR' THEN {sql_literal(canon)} END"
            for canon, src in wanted.items())
        con.execute(
            "CREATE TEMP TABLE _land AS SELECT * EXCLUDE (json, _keys), "
            f"nullif(concat_ws(',', {number_kinds}), '') AS _numbers, "
            f"coalesce({dupkeys}, false) AS _dupkeys FROM (SELECT "
            + ", ".join(f"_values[{i}] AS \"{canon}\"" for i, canon in enumerate(wanted, 1))
            + ", _object, _keys, json FROM (SELECT "
            # One list of paths: the line is parsed once for all fields (one call per
            # field parsed it once per field: twice the time at 50 M events).
            f"json_extract_string(json, [{', '.join(sql_literal(path_of(src)) for src in wanted.values())}]) AS _values"
            + ", json_type(json) IS NOT DISTINCT FROM 'OBJECT' AS _object, "
            "CASE WHEN json_type(json) = 'OBJECT' THEN json_keys(json) END AS _keys, json "
            "FROM read_json(?, format = 'newline_delimited', records = false, "
            "columns = {'json': 'JSON'}, ignore_errors = true)))", [str(path)])
        found = con.execute("SELECT count(*) FROM _land").fetchall()[0][0]
        odd = [r[0] for r in con.execute(
            "SELECT rowid FROM _land WHERE NOT _object OR _dupkeys ORDER BY rowid").fetchall()]
    except duckdb.Error as exc:
        if not_a_refusal(exc):
            raise  # a full disk or a broken connection is not the file's fault
        con.execute("DROP TABLE IF EXISTS _land")
        return None
    if found != records:
        con.execute("DROP TABLE IF EXISTS _land")
        return None
    problems = []
    if odd:
        with open(path, "rb") as fh:
            for k in odd:
                start, end = span_of_record(k)
                fh.seek(start)
                text = fh.read(end - start).decode("utf-8")
                obj, problem = parse_record(text, line_of_record(k), source)
                if problem is None:  # Python reads what DuckDB did not: its call
                    con.execute("DROP TABLE IF EXISTS _land")
                    return None
                problems.append(problem)
        con.execute("DELETE FROM _land WHERE NOT _object OR _dupkeys")
    landing = Landing(con, int(found), True, problems, controls=scan.controls, numbers=True)
    if lines is None:
        # Record k is line k + 1: no 50 M-row join with a line table (rowids keep their
        # place when the refused rows are deleted).
        landing.relation = "(SELECT *, rowid AS _rowid, rowid + 1 AS _line FROM _land)"
    else:
        _register_lines(con, lines)  # by position in the file: the deleted rows leave gaps
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
