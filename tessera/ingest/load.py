"""Load one source's new landing files into ``raw.<source>``, with rejects and a report.

Per file, in this order:
1. fingerprint the bytes and check the declared encoding (one streaming pass);
2. skip it if the same bytes were loaded before (``ops.file_ledger``);
3. stream records into a temporary table of strings;
4. type and validate every field against the entity contract in one SQL statement;
5. in ONE transaction: append new and changed record versions to ``raw.<source>``,
   write rejects, the ledger row and the import report. A crash leaves the file
   unloaded, and the next run loads it whole: never half a file.

Accepted + rejected must equal the records found in the file, or the file is failed.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from tessera.contracts import SQL_TYPES, FieldSpec
from tessera.engine.warehouse import sql_literal as _lit
from tessera.engine.warehouse import transaction, unordered
from tessera.ingest.api import ApiFailed, fetch_records, write_snapshot
from tessera.ingest.formats.common import not_a_refusal
from tessera.ingest.formats import (
    READERS,
    FileRejected,
    ReadResult,
    SplitUnsafe,
    check_encoding,
    encoding_checked_by_duckdb,
    encoding_of,
    fingerprint,
    open_csv_landing,
    open_jsonl_landing,
    read_xml_parallel,
    xml_workers,
)
from tessera.ingest.lookups import KEY_TABLES, register_settings
from tessera.ingest.scrub import erasures_owed, finish_erasures, scrub_landing_files
from tessera.ingest.vat import vat_reason_sql
from tessera.privacy import suppression as privacy
from tessera.settings import Deployment, Source
from tessera.vocabulary import source_fields

# Internationalised addresses (RFC 6531: "lucía@...", "börner@...") are valid mail;
# rejecting them would drop whole contacts of people with accented names.
_EMAIL_RE = r"^[\p{L}\p{N}._%+'-]+@[\p{L}\p{N}-]+(\.[\p{L}\p{N}-]+)*\.\p{L}{2,}$"
# Every kind of blank that CRMs leave around values (tabs, NBSP), not only spaces.
# Measured on duckdb 2.0: this regular expression is faster than trim(x, characters).
_TRIM_RE = r"^[\s\x{00a0}]+|[\s\x{00a0}]+$"
# The same blanks (RE2's \s is tab, LF, FF, CR and space) as code points, for the test
# that sends only a value with a blank at an edge through the replacement.
_BLANK_CODES = "(9, 10, 12, 13, 32, 160)"


def _trimmed(column: str) -> str:
    """A value without the blanks at its edges, NULL when nothing else is left.

    Nearly no value has such a blank: the replacement runs only where the first code point
    is one (``ord``) or the value ends with one (an end-anchored expression, which reads no
    further than the search does). At 2 M events: 1.5 s -> 0.7 s, a third of the contract
    check of a 50 M-event file.
    """
    c = f"\"{column}\""
    return (f"nullif(CASE WHEN ord({c}) IN {_BLANK_CODES} OR regexp_matches({c}, '[\\s\\x{{00a0}}]$') "
            f"THEN regexp_replace({c}, {_lit(_TRIM_RE)}, '', 'g') ELSE {c} END, '')")


_TRUE = ("1", "true", "t", "yes", "y", "si", "sì", "tak")
_FALSE = ("0", "false", "f", "no", "n", "nie")


_REPORT_COLS = ("source, file, batch_id, status, records, new, updated, unchanged, rejected, "
                "sha256, message, loaded_at, suppressed")


@dataclass
class FileOutcome:
    file: str
    status: str
    records: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    suppressed: int = 0
    message: str | None = None


@dataclass
class SourceOutcome:
    source: str
    files: list[FileOutcome] = field(default_factory=list)

    def total(self, attr: str) -> int:
        return sum(getattr(f, attr) for f in self.files)


def raw_table_ddl(deployment: Deployment, source: Source) -> str:
    cols = [f"{name} {SQL_TYPES[spec.type]}" for name, spec in source_fields(deployment, source).items()]
    cols += [
        "_record_hash UBIGINT", "_file VARCHAR", "_line BIGINT", "_file_seq BIGINT",
        "_batch_id VARCHAR", "_loaded_at TIMESTAMP",
    ]
    return f"CREATE TABLE IF NOT EXISTS raw.{source.name} (\n  " + ",\n  ".join(cols) + "\n)"


# A value of every contract type through DuckDB's hash(): when an upgrade of DuckDB
# changes the function, this changes too, and the stored record hashes are recomputed.
_HASH_PROBE = ("hash('tessera', 1::BIGINT, 1.5::DECIMAL(18,2), DATE '2000-01-01', "
               "TIMESTAMP '2000-01-01 12:30:00', true, NULL::VARCHAR)")


def record_hash_sql(fields: list[str], exprs: dict[str, str] | None = None) -> str:
    """The record's content hash: DuckDB's 64-bit ``hash()`` over its stored values.

    Over the typed values in contract order, source_record_id aside, exactly as
    ``raw`` stores them, so that it can be recomputed from ``raw`` alone
    (``ensure_record_hashes``). It only tells a record's versions apart (a 64-bit
    collision between two versions of one id is out of reach); md5 over the values
    cast to text cost a quarter of checking a clean file and twice the bytes to store.
    """
    args = [(exprs or {}).get(f, f'"{f}"') for f in fields if f != "source_record_id"]
    return f"hash({', '.join(args) or 'NULL'})"


def ensure_record_hashes(con: duckdb.DuckDBPyConnection, deployment: Deployment) -> None:
    """Recompute ``raw``'s record hashes when they were made another way.

    Warehouses written before the hash was ``record_hash_sql`` keep md5 text; a DuckDB
    upgrade may change ``hash()``. Either way the next load would see every record as
    updated and store it again: recompute them from the stored values first, once
    (the probe in ``ops.warehouse_info`` says which hash the stored ones are).
    """
    probe = str(con.execute(f"SELECT {_HASH_PROBE}").fetchall()[0][0])
    stored = con.execute("SELECT value FROM ops.warehouse_info WHERE key = 'record_hash'").fetchall()
    if stored and stored[0][0] == probe:
        return
    tables = {r[0]: r[1] for r in con.execute(
        "SELECT table_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'raw' AND column_name = '_record_hash'").fetchall()}
    with transaction(con):
        for source in deployment.sources:
            if source.name not in tables:
                continue
            ensure_raw_table(con, deployment, source)
            expr = record_hash_sql(list(source_fields(deployment, source)))
            if tables[source.name] != "UBIGINT":
                con.execute(f"ALTER TABLE raw.{source.name} ALTER _record_hash TYPE UBIGINT USING {expr}")
            else:
                con.execute(f"UPDATE raw.{source.name} SET _record_hash = {expr}")
        con.execute("DELETE FROM ops.warehouse_info WHERE key = 'record_hash'")
        con.execute("INSERT INTO ops.warehouse_info VALUES ('record_hash', ?)", [probe])


def ensure_raw_table(con: duckdb.DuckDBPyConnection, deployment: Deployment, source: Source) -> None:
    con.execute(raw_table_ddl(deployment, source))
    # Extended properties added to the configuration later become new columns.
    have = {r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema='raw' AND table_name=?",
        [source.name]).fetchall()}
    for name, spec in source_fields(deployment, source).items():
        if name not in have:
            con.execute(f"ALTER TABLE raw.{source.name} ADD COLUMN {name} {SQL_TYPES[spec.type]}")


# Line references between the Sendero <sincronizza> tables: a micro line names its
# macro, a product (or service) names its macro and micro line. (entity, field) -> level.
LINE_REFERENCES = {("product_line", "macro_id"): "macro", ("product", "line_macro_id"): "macro",
                   ("product", "line_micro_id"): "micro",
                   ("service_line", "macro_id"): "macro", ("service", "line_macro_id"): "macro",
                   ("service", "line_micro_id"): "micro"}
# The entity whose records the references of an entity point at.
LINE_ENTITY = {"product": "product_line", "product_line": "product_line",
               "service": "service_line", "service_line": "service_line"}


def line_reference_sources(deployment: Deployment, source: Source) -> list[Source]:
    """The line sources whose loaded records ``source``'s references point at.

    A micro-line source (one that maps ``macro_id``) refers to the macro-line sources;
    a product (service) source to every product-line (service-line) source. Ingestion
    loads those first.
    """
    if not any((source.entity, f) in LINE_REFERENCES for f in source.columns):
        return []
    lines = [s for s in deployment.sources_of(LINE_ENTITY[source.entity]) if s.name != source.name]
    if source.entity in ("product_line", "service_line"):
        lines = [s for s in lines if "macro_id" not in s.columns]
    return lines


def register_line_references(con: duckdb.DuckDBPyConnection, deployment: Deployment,
                             source: Source) -> dict[str, str]:
    """Temp tables of the known macro and micro lines; ``{field: level}`` to check.

    Known lines are the latest version of every record in the raw tables of the
    deployment's line sources of the same kind (macro: no ``macro_id``; micro: with
    one). A deployment without such line sources checks nothing (nothing to check
    against).
    """
    fields = {f: LINE_REFERENCES[(source.entity, f)] for f in source.columns
              if (source.entity, f) in LINE_REFERENCES}
    line_sources = deployment.sources_of(LINE_ENTITY.get(source.entity, ""))
    if not fields or not line_sources:
        return {}
    parts = []
    for s in line_sources:
        ensure_raw_table(con, deployment, s)
        parts.append(f"SELECT source_record_id, macro_id, _file_seq, _line FROM raw.{s.name}")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _ref_lines AS
        SELECT source_record_id AS id, macro_id AS macro FROM ({' UNION ALL '.join(parts)})
        QUALIFY row_number() OVER (PARTITION BY source_record_id, macro_id IS NULL
                                   ORDER BY _file_seq DESC, _line DESC) = 1""")
    return fields


def _line_reference_checks(name: str, level: str, source: Source) -> list[str]:
    v = f"\"{name}\""
    kind = "service" if source.entity.startswith("service") else "product"
    if level == "macro":
        return [f"WHEN {v} NOT IN (SELECT id FROM _ref_lines WHERE macro IS NULL) "
                f"THEN 'not a known macro {kind} line (no such macro line loaded)'"]
    checks = [f"WHEN {v} NOT IN (SELECT id FROM _ref_lines WHERE macro IS NOT NULL) "
              f"THEN 'not a known micro {kind} line (no such micro line loaded)'"]
    if "line_macro_id" in source.columns:
        checks.append(
            f"WHEN \"line_macro_id\" IS NOT NULL AND \"line_macro_id\" IS DISTINCT FROM "
            f"(SELECT any_value(macro) FROM _ref_lines r WHERE r.id = {v} AND r.macro IS NOT NULL) "
            f"THEN 'micro {kind} line does not belong to the record''s line_macro_id'")
    return checks


# Control characters other than tab, LF and CR (C0, DEL and the C1 range): never part of
# a name or an address, and a NUL byte truncates text in the tools downstream.
_CONTROL_RE = r"[\x{00}-\x{08}\x{0B}\x{0C}\x{0E}-\x{1F}\x{7F}-\x{9F}]"


def _exact_as_number(name: str) -> bool:
    """Text fields that a number gives exactly: ids and references (a JSON id 184)."""
    return name == "source_record_id" or name.endswith(("_id", "_ref"))


# A character or entity reference left as text (``&xxe;``, ``&#233;``): in CSV and JSON
# nothing expands it, and in XML it is what a doubly escaped ``&amp;xxe;`` leaves; either
# way the stored name would not be the person's.
_ENTITY_RE = r"&(?:[A-Za-z_][A-Za-z0-9._-]*|#[0-9]+|#[xX][0-9A-Fa-f]+);"


def _date_bound(value: str | None, today: dt.date | None) -> str | None:
    """``today`` is the run's date, passed in: the database's own clock (``current_date``,
    in its time zone) is neither the run's nor reproducible when a day is re-run."""
    if value is None:
        return None
    if value == "today":
        return f"DATE '{today.isoformat()}'" if today else "current_date"
    return f"DATE {_lit(value)}"


def _typed_and_reason(name: str, spec: FieldSpec, source: Source, params: list,
                      settings: dict[str, str] | None = None,
                      line_refs: dict[str, str] | None = None,
                      controls: bool = True, numbers: bool = False,
                      cells: dict[str, str] | None = None,
                      today: dt.date | None = None) -> tuple[str, str]:
    """SQL for the typed value of one field and for the reason it fails (NULL when fine)."""
    # The value was trimmed of every kind of blank (tabs, NBSP) once, in the inner
    # projection of build_validation_sql; empty means missing.
    v = f"\"{name}\""
    fmt = source.format_of(name, spec.type)
    if spec.type == "string":
        typed = v
    elif spec.type == "integer":
        typed = f"TRY_CAST({v} AS BIGINT)"
    elif spec.type == "decimal":
        inner = f"replace({v}, ',', '.')" if source.decimal_separator == "," else v
        typed = f"TRY_CAST({inner} AS DECIMAL(18,2))"
    elif spec.type in ("date", "timestamp"):
        # Workbook date cells arrive as ISO text (formats.xlsx.xlsx_cell_text); text cells
        # still follow the source's declared format.
        fmts = _lit(fmt) if source.format != "xlsx" else (
            f"[{_lit(fmt)}, '%Y-%m-%d', '%Y-%m-%d %H:%M:%S']")
        typed = f"CAST(try_strptime({v}, {fmts}) AS {spec.type.upper()})"
    elif spec.type == "boolean":
        typed = (f"CASE WHEN lower({v}) IN {_TRUE} THEN TRUE "
                 f"WHEN lower({v}) IN {_FALSE} THEN FALSE END")
    else:  # pragma: no cover - contracts are validated
        raise ValueError(spec.type)

    checks: list[str] = []
    if spec.required:
        checks.append(f"WHEN {v} IS NULL THEN 'required field is empty'")
    else:
        checks.append(f"WHEN {v} IS NULL THEN NULL")
    # Size and control characters first: the reason names the real problem (a NUL byte
    # inside a date is not "not a date"), and never the value. strlen is bytes.
    limit = source.max_field_kb * 1024
    checks.append(f"WHEN strlen({v}) > {limit} THEN "
                  f"{_lit(f'value longer than {source.max_field_kb} KiB (the source' + chr(39) + 's max_field_kb)')}")
    if controls:
        checks.append(f"WHEN regexp_matches({v}, {_lit(_CONTROL_RE)}) THEN "
                      "'contains a control character (only tab and line breaks are allowed)'")
    if spec.type == "string":
        # contains() first: the regular expression then runs on the rare values with '&'.
        checks.append(f"WHEN contains({v}, '&') AND regexp_matches({v}, {_lit(_ENTITY_RE)}) THEN "
                      "'contains an entity reference such as &name; (deliver the character itself)'")
        # What a spreadsheet or a dataframe writes for a missing number: not a value.
        checks.append(f"WHEN {v} IN ('NaN', 'nan') THEN "
                      "'NaN (a missing-value marker) is not a value; leave the field empty'")
    if numbers and spec.type == "string" and not _exact_as_number(name):
        text = ("a number where text is expected (leading zeros or a sign may be lost; "
                "deliver it as text)")
        cell = (cells or {}).get(name)
        said = (f"{_lit(text[:-1] + '; cell ' + cell)} || _line || ')'" if cell else _lit(text))
        checks.append(f"WHEN _numbers IS NOT NULL AND contains(',' || _numbers || ',', {_lit(',' + name + ',')}) "
                      f"THEN {said}")
    view = (settings or {}).get(name)
    if view is not None:
        # An unknown label is "not a known ..." rather than "not an integer": the value
        # is meant as a label or id of the table, and the table is what it misses.
        table, level = spec.lookup.split(".", 1)
        words = table.replace("_", " ")
        checks.append(f"WHEN ({typed}) IS NULL OR ({typed}) NOT IN (SELECT id FROM {view}) "
                      f"THEN {_lit(f'not a known {words} {level} (id or label)')}")
    if spec.type != "string":
        excel = " or an Excel date" if source.format == "xlsx" else ""
        label = {"integer": "an integer", "decimal": "a number", "boolean": "a yes/no value",
                 "date": f"a date in format {fmt}{excel}",
                 "timestamp": f"a timestamp in format {fmt}{excel}"}[spec.type]
        checks.append(f"WHEN ({typed}) IS NULL THEN {_lit('not ' + label)}")
    if spec.type in ("date", "timestamp"):
        bounds = source.date_range_of(name)
        low, high = _date_bound(bounds.min, today), _date_bound(bounds.max, today)
        if low:
            checks.append(f"WHEN CAST(({typed}) AS DATE) < {low} THEN "
                          f"{_lit('implausible date: before ' + bounds.min)}")
        if high:
            checks.append(f"WHEN CAST(({typed}) AS DATE) > {high} THEN "
                          f"{_lit('implausible date: after ' + ('today' if bounds.max == 'today' else bounds.max))}")
    if spec.format == "email":
        checks.append(f"WHEN NOT regexp_full_match({v}, {_lit(_EMAIL_RE)}) THEN 'not a valid e-mail address'")
    elif spec.format == "phone":
        checks.append(
            f"WHEN NOT regexp_full_match({v}, '^[+(0-9][0-9 ()./+-]{{4,24}}$') "
            # 6 to 15 digits, as a second expression: counting them with regexp_replace
            # cost more than every other check of a contact together.
            f"OR NOT regexp_full_match({v}, '^[^0-9]*(?:[0-9][^0-9]*){{6,15}}$') "
            "THEN 'not a valid phone number'"
        )
    elif spec.format == "vat":
        checks.append(f"WHEN ({vat_reason_sql(v)}) IS NOT NULL THEN {vat_reason_sql(v)}")
    elif spec.format == "country":
        checks.append(f"WHEN NOT regexp_full_match({v}, '^[A-Za-z]{{2}}$') THEN 'not an ISO 3166-1 alpha-2 country code'")
    if view is not None:
        if level == "micro" and spec.parent and spec.parent in source.columns:
            parent = f"TRY_CAST(\"{spec.parent}\" AS BIGINT)"
            checks.append(
                f"WHEN {parent} IS NOT NULL AND {parent} IS DISTINCT FROM "
                f"(SELECT any_value(macro) FROM {view} k WHERE k.id = ({typed})) "
                f"THEN {_lit(f'{words} micro does not belong to the record' + chr(39) + f's {spec.parent}')}")
    if line_refs and name in line_refs:
        checks.extend(_line_reference_checks(name, line_refs[name], source))
    if spec.allowed is not None:
        allowed = ", ".join("'" + a.replace("'", "''") + "'" for a in spec.allowed)
        checks.append(f"WHEN {v} NOT IN ({allowed}) THEN {_lit('value not allowed (allowed: ' + ', '.join(spec.allowed) + ')')}")
    reason = "CASE " + " ".join(checks) + " END"
    return typed, reason


def build_validation_sql(deployment: Deployment, source: Source,
                         settings: dict[str, str] | None = None,
                         line_refs: dict[str, str] | None = None,
                         trim: bool = True, relation: str = "_land",
                         soft: frozenset[str] = frozenset(),
                         controls: bool = True, numbers: bool = False,
                         cells: dict[str, str] | None = None,
                         today: dt.date | None = None) -> tuple[str, list]:
    """One SELECT over ``relation`` giving typed columns, per-field reasons and a record hash.

    ``relation`` has the mapped fields as strings, ``_line`` and ``_rowid``, the record's
    position in the file: records are told apart by it (several may share a line) and
    the later of two with one id wins. Numbering them here with ``row_number() OVER ()``
    cost more than all the typing and checking together (a window over the whole file
    runs on one thread). ``trim=False`` when the reader proved that no value has blanks
    at its edges. ``soft`` fields (``invalid_values: drop_value``) come out NULL where
    their value failed its check, as ``raw`` stores them; the reason stays.
    """
    fields = source_fields(deployment, source)
    mapped = [f for f in fields if f in source.columns]
    params: list = []
    select_typed, select_reason = [], []
    for name in fields:
        if name in mapped:
            typed, reason = _typed_and_reason(name, fields[name], source, params, settings,
                                              line_refs, controls, numbers, cells, today)
            select_typed.append(f"{typed} AS \"{name}\"")
            select_reason.append(f"{reason} AS \"_r_{name}\"")
        elif name == "source_record_id":
            continue
        else:
            select_typed.append(f"CAST(NULL AS {SQL_TYPES[fields[name].type]}) AS \"{name}\"")
    if "source_record_id" not in mapped:
        # Sources without a natural id (bounces, unsubscribes): the content is the id.
        cols = ", ".join(f"coalesce(CAST(\"{c}\" AS VARCHAR), '')" for c in mapped)
        select_typed.insert(0, f"md5(concat_ws('|', {cols})) AS source_record_id")
    order = [c for c in fields]
    inner = ",\n  ".join(select_typed + select_reason + ["_line", "_rowid"])
    trimmed = "SELECT " + ", ".join(
        [(f"{_trimmed(c)} AS \"{c}\"" if trim
          else f"nullif(\"{c}\", '') AS \"{c}\"")
         for c in mapped] + ["_line", "_rowid"] + (["_numbers"] if numbers else [])) + f" FROM {relation}"
    outer = {c: f'CASE WHEN "_r_{c}" IS NULL THEN "{c}" END' for c in soft if c in mapped}
    sql = (
        f"SELECT {', '.join(outer.get(c, chr(34) + c + chr(34)) + ' AS ' + chr(34) + c + chr(34) for c in order)}, "
        f"{', '.join(chr(34) + '_r_' + c + chr(34) for c in mapped) or 'NULL AS _r_none'}, _line, _rowid, "
        f"{record_hash_sql(order, outer)} AS _record_hash\n"
        f"FROM (SELECT\n  {inner}\nFROM ({trimmed}))"
    )
    return sql, params


def _folded(expr: str) -> str:
    """How labels are compared with lookup keys: case, outer blanks and inner runs folded."""
    return f"lower(trim(regexp_replace({expr}, '\\s+', ' ', 'g')))"


def mapped_relation(con, deployment: Deployment, source: Source,
                    base: str) -> tuple[str, list[str], dict[str, str]]:
    """``base`` with the source's labels replaced by the deployment's codes and ids.

    In order: the source's own ``value_map`` (a purchased list names its sectors its own
    way, "Pensioni"; the configuration maps each label explicitly onto a label or id of
    the deployment's table, so that no near-duplicate values appear), then countries and
    provinces to ISO codes and siglas, then settings labels to ids. Each step is a LEFT
    JOIN on a key table of unique keys, as nested SELECTs: the statement that validates
    the records reads the file once, with nothing updated in place. What no key matches
    is left as it is, for the lookup and the contract to judge.

    Returns the relation's SQL, the names registered on ``con`` (to unregister once the
    statement has run) and the settings views ``{field: view}`` the checks refer to.
    """
    rel, registered = base, []
    spec = source_fields(deployment, source)

    def join(column: str, keys: str, value: str) -> None:
        nonlocal rel
        n = len(registered) + 1
        rel = (f'(SELECT s.* REPLACE (coalesce(m{n}.{value}, s."{column}") AS "{column}") '
               f'FROM {rel} s LEFT JOIN {keys} m{n} ON m{n}.key = {_folded(f"s.{chr(34)}{column}{chr(34)}")})')

    for i, (column, mapping) in enumerate((source.value_map or {}).items()):
        folded = {" ".join(k.strip().lower().split()): str(v) for k, v in mapping.items()}
        name = f"_value_map_{i}"
        con.register(name, pa.table({"key": pa.array(list(folded), pa.string()),
                                     "value": pa.array(list(folded.values()), pa.string())}))
        registered.append(name)
        join(column, name, "value")
    refs = {f: spec[f].lookup for f in source.columns if f in spec and spec[f].lookup}
    for column, kind in refs.items():
        if kind in KEY_TABLES:
            name = f"_lookup_{kind}"
            if name not in registered:
                con.register(name, KEY_TABLES[kind]())
                registered.append(name)
            join(column, name, "code")
    settings = register_settings(con, deployment, {f: k for f, k in refs.items() if "." in k})
    registered.extend(settings.values())
    for column, view in settings.items():
        join(column, f"(SELECT key, CAST(min(id) AS VARCHAR) AS id FROM {view} GROUP BY key)", "id")
    return rel, registered, settings


def _stat_key(path: Path) -> tuple[int, int, int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def _known_fingerprint(con, source: str, rel: str, path: Path) -> tuple[str, int] | None:
    """(sha256, size) of the file as last read when its stat has not changed since (a
    change of the bytes moves the change time, which no tool sets back), else None."""
    size, mtime, ctime, inode = _stat_key(path)
    row = con.execute(
        "SELECT sha256 FROM ops.file_stats WHERE source = ? AND file = ? AND bytes = ? AND mtime_ns = ? "
        "AND ctime_ns = ? AND inode = ?", [source, rel, size, mtime, ctime, inode]).fetchone()
    return (row[0], size) if row else None


def _remember_fingerprint(con, source: str, rel: str, path: Path, sha: str) -> None:
    size, mtime, ctime, inode = _stat_key(path)
    with transaction(con):
        con.execute("DELETE FROM ops.file_stats WHERE source = ? AND file = ?", [source, rel])
        con.execute("INSERT INTO ops.file_stats VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [source, rel, size, mtime, ctime, inode, sha])


def _ledger_state(con, source: str, sha: str, rel: str) -> tuple[str, str, str] | None:
    """(first file with these bytes, status of *this* file name, the first one's delivery
    date) or None if never seen."""
    rows = con.execute(
        "SELECT file, status, CAST(loaded_at AS DATE) FROM ops.file_ledger "
        "WHERE source = ? AND sha256 = ? ORDER BY file_seq", [source, sha]).fetchall()
    if not rows:
        return None
    for file, status, _ in rows:
        if file == rel:
            return rows[0][0], status, str(rows[0][2])
    return rows[0][0], "new_name", str(rows[0][2])


def _next_file_seq(con) -> int:
    return int(con.execute("SELECT coalesce(max(file_seq), 0) + 1 FROM ops.file_ledger").fetchone()[0])


def ingest_source(con: duckdb.DuckDBPyConnection, deployment: Deployment, source: Source,
                  landing_dir: Path, batch_id: str, now: dt.datetime | None = None,
                  suppression_key: str | None = None, token: str | None = None,
                  progress: Callable[[str], None] | None = None) -> SourceOutcome:
    """Load the source's new files (or, for an api source, a fresh pull) into raw.

    ``progress`` hears one line as each file starts (its size, its place in the run) and
    one as it ends (status, records, seconds, records/s): file names and counts only.

    With a suppression key, records carrying an identifier under an erasure suppression
    are dropped before anything is stored (not even in rejects). ``token`` is the api
    source's secret, read by the caller from the environment variable the source names;
    it is only ever put in a request header.
    """
    now = now or dt.datetime.now().replace(microsecond=0)
    ensure_raw_table(con, deployment, source)
    ensure_record_hashes(con, deployment)
    privacy.ensure_tables(con)
    if suppression_key:
        privacy.install_hmac(con, suppression_key)
        if erasures_owed(con):  # a forget or purge killed before its files were done
            finish_erasures(con, deployment, landing_dir, suppression_key, only_loaded=True)
    outcome = SourceOutcome(source.name)
    if source.format == "api":
        # Every page is fetched first; a failed pull writes nothing but its report row.
        try:
            records = fetch_records(source.api, token)
        except ApiFailed as exc:
            outcome.files.append(_record_file_failure(
                con, source, f"_api/{source.name}", "", batch_id, now, 0, str(exc)))
            return outcome
        except Exception as exc:  # noqa: BLE001 - never a crash of the run, never the data
            outcome.files.append(_record_file_failure(
                con, source, f"_api/{source.name}", "", batch_id, now, 0,
                f"the pull failed ({type(exc).__name__}); nothing loaded"))
            return outcome
        snapshot = write_snapshot(records, landing_dir, source, now, batch_id)
        files = [snapshot]
    else:
        files = sorted(p for p in landing_dir.glob(source.path) if p.is_file())
    for i, path in enumerate(files, 1):
        rel = str(path.relative_to(landing_dir))
        started = time.perf_counter()
        if progress:
            progress(f"file {i}/{len(files)} {rel} ({_size(path)}) started")
        try:
            outcome.files.append(_ingest_file(con, deployment, source, path, rel, batch_id, now,
                                              bool(suppression_key),
                                              _Steps(progress, f"file {i}/{len(files)}")))
            if progress:
                f, took = outcome.files[-1], time.perf_counter() - started
                progress(f"file {i}/{len(files)} {rel} {f.status} in {took:.1f} s: {f.records} records "
                         f"({f.records / max(took, 1e-3):,.0f}/s), {f.new} new, {f.updated} updated, "
                         f"{f.unchanged} unchanged, {f.rejected} rejected, {f.suppressed} suppressed")
        except Exception as exc:  # noqa: BLE001 - the other files of the run still load
            if not_a_refusal(exc):
                raise  # out of space or a broken warehouse: not this file's fault; stop the run
            # Its transaction rolled back: nothing of it is stored but this failure.
            for t in ("_land", "_checked2", "_bad", "_dups", "_accepted"):
                con.execute(f"DROP TABLE IF EXISTS {t}")
            outcome.files.append(_record_file_failure(
                con, source, rel, "", batch_id, now, 0,
                f"{path.name}: loading failed ({type(exc).__name__}); nothing loaded"))
    resent = {(source.name, f.file) for f in outcome.files if f.suppressed}
    if resent:
        # An erased person re-delivered: dropped above, and cut out of the archived file
        # too, so that the landing folder does not keep what the warehouse refused.
        scrub_landing_files(con, deployment, landing_dir, suppression_key, None, only=resent)
    return outcome


def _size(path: Path) -> str:
    size = path.stat().st_size
    return f"{size / 1024 ** 2:,.1f} MiB" if size >= 1024 ** 2 else f"{size / 1024:,.1f} KiB"


def _summarise_reasons(con, source: str, rel: str, batch_id: str) -> None:
    """Fill ops.import_reject_reasons for one file and run from its rejects (same transaction)."""
    con.execute("DELETE FROM ops.import_reject_reasons WHERE source = ? AND file = ? AND batch_id = ?",
                [source, rel, batch_id])
    con.execute(r"""
        INSERT INTO ops.import_reject_reasons
        SELECT source, file, batch_id, field,
               regexp_replace(reason, ' \(line [0-9]+\)$', '') AS reason,
               count(DISTINCT coalesce(line, -1))
        FROM ops.rejects WHERE source = ? AND file = ? AND batch_id = ?
        GROUP BY ALL ORDER BY field, reason""", [source, rel, batch_id])


def rejected_by_reason(con, source: str, batch_id: str) -> dict[str, int]:
    """``{"field: reason": records}`` over the files of one run: safe for metadata."""
    return {f"{f}: {r}": int(n) for f, r, n in con.execute(
        "SELECT field, reason, sum(records) FROM ops.import_reject_reasons "
        "WHERE source = ? AND batch_id = ? GROUP BY ALL ORDER BY 3 DESC, 1, 2",
        [source, batch_id]).fetchall()}


def _record_file_failure(con, source: Source, rel: str, sha: str, batch_id: str, now,
                         records: int, message: str) -> FileOutcome:
    with transaction(con):
        con.execute("DELETE FROM ops.rejects WHERE source = ? AND file = ?", [source.name, rel])
        con.execute(
            "INSERT INTO ops.rejects VALUES (?, ?, NULL, '*', ?, NULL, ?, ?)",
            [source.name, rel, message, batch_id, now])
        con.execute(
            f"INSERT INTO ops.import_report ({_REPORT_COLS}) VALUES (?, ?, ?, 'failed', ?, 0, 0, 0, ?, ?, ?, ?, 0)",
            [source.name, rel, batch_id, records, records, sha, message, now])
        _summarise_reasons(con, source.name, rel, batch_id)
    return FileOutcome(rel, "failed", records=records, rejected=records, message=message)


class _Steps:
    """Progress inside one file's load: each step as it ends, with its time, and a line
    at most every 30 s while a long file streams through a reader (a 12 GB event file
    was five silent minutes). Counts and times only."""

    EVERY_S = 30.0

    def __init__(self, say: Callable[[str], None] | None = None, name: str = ""):
        self.say, self.name = say, name
        self.last = self.told = time.perf_counter()

    def done(self, what: str) -> None:
        now = time.perf_counter()
        if self.say:
            self.say(f"{self.name} {what} in {now - self.last:.1f} s")
        self.last = self.told = now

    def reading(self, records: int) -> None:
        now = time.perf_counter()
        if self.say and now - self.told >= self.EVERY_S:
            self.say(f"{self.name} reading: {records:,} records so far "
                     f"({records / max(now - self.last, 1e-3):,.0f}/s)")
            self.told = now


def _ingest_file(con, deployment: Deployment, source: Source, path: Path, rel: str,
                 batch_id: str, now, suppress: bool = False,
                 steps: _Steps | None = None) -> FileOutcome:
    steps = steps or _Steps()
    known = _known_fingerprint(con, source.name, rel, path)
    if known is not None:
        # the same bytes as a read that passed the encoding check: the ledger decides
        sha, size = known
    else:
        try:
            # A UTF-8 CSV file is decoded by DuckDB while landing; its own check waits.
            if not encoding_checked_by_duckdb(source):
                check_encoding(path, encoding_of(source))
            sha, size = fingerprint(path)
        except FileRejected as exc:
            return _record_file_failure(con, source, rel, "", batch_id, now, 0, str(exc))
        _remember_fingerprint(con, source.name, rel, path, sha)
    seen = _ledger_state(con, source.name, sha, rel)
    if seen is not None:
        if seen[1] != "new_name":
            return FileOutcome(rel, "already_loaded")
        with transaction(con):
            con.execute("INSERT INTO ops.file_ledger VALUES (?, ?, ?, ?, ?, 'duplicate_file', ?)",
                        [source.name, sha, rel, size, _next_file_seq(con), now])
            con.execute(
                f"INSERT INTO ops.import_report ({_REPORT_COLS}) VALUES (?, ?, ?, 'duplicate_file', 0, 0, 0, 0, 0, ?, ?, ?, 0)",
                [source.name, rel, batch_id, sha,
                 f"same content as {seen[0]}, delivered {seen[2]}; nothing changed", now])
        return FileOutcome(rel, "duplicate_file",
                           message=f"same content as {seen[0]}, delivered {seen[2]}")

    spec = source_fields(deployment, source)
    reason_cols = [f"_r_{f}" for f in spec if f in source.columns]
    # With invalid_values: drop_value, a bad value in an optional field is emptied and
    # reported instead of refusing the whole record (a contact with an impossible birth
    # date is still a contact); required fields and the record id always refuse it.
    soft = set()
    if source.invalid_values == "drop_value":
        soft = {f"_r_{f}" for f, sp in spec.items()
                if f in source.columns and not sp.required and f != "source_record_id"}
    hard_cols = [c for c in reason_cols if c not in soft]
    any_reason = f"coalesce({', '.join(chr(34) + c + chr(34) for c in hard_cols)})" if hard_cols else "NULL"
    line_refs = register_line_references(con, deployment, source)

    def check(relation: str, result: ReadResult) -> None:
        # Mapping, typing and reasons are one statement, materialised once.
        rel, registered, settings = mapped_relation(con, deployment, source, relation)
        try:
            sql, params = build_validation_sql(
                deployment, source, settings, line_refs, trim=result.edge_blanks, relation=rel,
                soft=frozenset(c[3:] for c in soft), controls=result.controls,
                numbers=result.numbers, cells=result.cells, today=now.date())
            # The refusing reasons are only kept for the refused records (_bad): for
            # every record they were a fifth of the statement, and nearly all NULL.
            exclude = f" EXCLUDE ({', '.join(chr(34) + c + chr(34) for c in hard_cols)})" if hard_cols else ""
            with unordered(con):
                con.execute(f"""
                    CREATE OR REPLACE TEMP TABLE _checked2 AS
                    SELECT *{exclude}, {any_reason} IS NULL AS _ok, false AS _dup
                    FROM ({sql})""", params)
                bad = con.execute("SELECT count(*) FROM _checked2 WHERE NOT _ok").fetchall()[0][0]
                con.execute(f"""
                    CREATE OR REPLACE TEMP TABLE _bad AS
                    SELECT _line, _rowid, source_record_id, {', '.join(chr(34) + c + chr(34) for c in reason_cols) or 'NULL AS _r_none'}
                    FROM ({sql})
                    WHERE {'_rowid IN (SELECT _rowid FROM _checked2 WHERE NOT _ok)' if bad else 'false'}""",
                            params)
        finally:
            for name in dict.fromkeys(registered):
                con.unregister(name)

    result = ReadResult()
    try:
        # Clean CSV and JSON lines files are parsed by DuckDB itself into _land; the
        # others (XML, XLSX, and any file DuckDB or the scans refuse) stream through the
        # exact readers as Arrow batches.
        landing = (open_csv_landing(con, path, source) if source.format == "csv" else
                   open_jsonl_landing(con, path, source) if source.format in ("jsonl", "api", "push")
                   else None)
        if landing is not None:
            try:
                result = landing.result()
                steps.done(f"read: {result.records:,} records")
                check(landing.relation, result)
                steps.done("checked")
            finally:
                landing.close()
        else:
            if encoding_checked_by_duckdb(source):
                check_encoding(path, encoding_of(source))
            result = ReadResult()
            fields = list(source.columns)
            con.execute("DROP TABLE IF EXISTS _land")
            con.execute("CREATE TEMP TABLE _land (" + ", ".join(f"\"{f}\" VARCHAR" for f in fields)
                        + ", _line BIGINT, _numbers VARCHAR)")
            def land(batches) -> None:
                for batch in batches:
                    con.register("_batch", batch)
                    con.execute("INSERT INTO _land BY NAME SELECT * FROM _batch")
                    con.unregister("_batch")
                    steps.reading(result.records)

            workers = xml_workers(path, source)
            if workers:
                try:
                    land(read_xml_parallel(path, source, result, workers))
                except SplitUnsafe:
                    # a part that does not parse alone: start again in one process, which
                    # reads the file as it always did (and names its error, if any)
                    con.execute("DELETE FROM _land")
                    result.records, result.problems = 0, []
                    workers = 0
            if not workers:
                land(READERS[source.format](path, source, result))
            steps.done(f"read: {result.records:,} records")
            # _land's row ids follow the insertion order, which is the file's.
            check("(SELECT *, rowid AS _rowid FROM _land)", result)
            steps.done("checked")
    except FileRejected as exc:
        return _record_file_failure(con, source, rel, sha, batch_id, now, result.records, str(exc))
    except Exception as exc:  # noqa: BLE001 - one unreadable file must not stop the others
        if not_a_refusal(exc):
            raise  # out of space or a broken warehouse: not this file's fault; stop the run
        # The exception's text may quote the data (a parser's message): only its type.
        return _record_file_failure(
            con, source, rel, sha, batch_id, now, result.records,
            f"{path.name}: the file could not be read ({type(exc).__name__}); nothing loaded")

    empty_snapshot = source.delivery == "full_snapshot" and not source.allow_empty_snapshot
    if result.records == 0 and empty_snapshot:
        return _record_file_failure(
            con, source, rel, sha, batch_id, now, 0,
            f"{path.name}: a full snapshot with no records (empty or header only) is refused as "
            "suspicious: nothing loaded, nothing deleted; if an empty snapshot can be genuine, "
            f"set allow_empty_snapshot: true on source {source.name}")

    # Within one file a later row for the same id supersedes an earlier one: the ids
    # seen twice are found by a hash aggregate (a window over every row cost half of
    # the ingest at 1 M rows) and only their rows are flagged.
    # ``_rowid`` tells records apart; ``_line`` does not: several XML records (or JSON
    # objects) may share one physical line, a minified file has all of them on line 2.
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _dups AS
        SELECT source_record_id, max(_rowid) AS _keep, arg_max(_line, _rowid) AS _keep_line
        FROM _checked2 WHERE _ok
        GROUP BY source_record_id HAVING count(*) > 1""")
    if con.execute("SELECT count(*) FROM _dups").fetchall()[0][0]:
        con.execute("""
            UPDATE _checked2 SET _dup = true FROM _dups d
            WHERE _checked2._ok AND _checked2.source_record_id = d.source_record_id
              AND _checked2._rowid <> d._keep""")
    raw = f"raw.{source.name}"
    cols = list(source_fields(deployment, source))
    col_list = ", ".join(f"\"{c}\"" for c in cols)
    # Soft fields came out of the check already emptied where their value failed.
    select_list = col_list
    suppressed = 0
    supp_sql = privacy.suppressed_lines_sql(source.entity, set(source.columns)) if suppress else None
    if supp_sql and con.execute(
            "SELECT count(*) FROM ops.suppressions WHERE channel IN ('all', 'events')").fetchone()[0]:
        # Erased people stay erased: their records vanish here, before raw, rejects or report.
        con.execute(f"CREATE OR REPLACE TEMP TABLE _supp AS {supp_sql}")
        suppressed = int(con.execute("SELECT count(*) FROM _supp").fetchone()[0])
        con.execute("DELETE FROM _checked2 WHERE _rowid IN (SELECT _rowid FROM _supp)")
        con.execute("DROP TABLE _supp")
    file_seq = _next_file_seq(con)
    # A derived id is a hash of the record's values (e-mail included): keep it out of rejects.
    rid = "source_record_id" if "source_record_id" in source.columns else "NULL"
    with transaction(con):
        con.execute("DELETE FROM ops.rejects WHERE source = ? AND file = ?", [source.name, rel])
        if result.problems:
            # One set-based insert: a statement per problem cost 2 ms each.
            con.register("_problems", pa.table({
                "line": pa.array([p.line for p in result.problems], pa.int64()),
                "field": pa.array([p.field for p in result.problems], pa.string()),
                "reason": pa.array([p.reason for p in result.problems], pa.string())}))
            con.execute("INSERT INTO ops.rejects SELECT ?, ?, line, field, reason, NULL, ?, ? "
                        "FROM _problems", [source.name, rel, batch_id, now])
            con.unregister("_problems")
        if reason_cols:
            con.execute(f"""
                INSERT INTO ops.rejects
                SELECT ?, ?, _line, substr(field, 4), reason, {rid}, ?, ?
                FROM (UNPIVOT (SELECT _line, source_record_id, {', '.join(chr(34) + c + chr(34) for c in reason_cols)}
                               FROM _bad WHERE _rowid IN (SELECT _rowid FROM _checked2))
                      ON {', '.join(chr(34) + c + chr(34) for c in reason_cols)}
                      INTO NAME field VALUE reason)
                ORDER BY _line, field""", [source.name, rel, batch_id, now])
        if soft:
            soft_list = ", ".join(chr(34) + c + chr(34) for c in sorted(soft))
            con.execute(f"""
                INSERT INTO ops.rejects
                SELECT ?, ?, _line, substr(field, 4), 'value dropped, record kept: ' || reason, {rid}, ?, ?
                FROM (UNPIVOT (SELECT _line, source_record_id, {soft_list} FROM _checked2 WHERE _ok)
                      ON {soft_list} INTO NAME field VALUE reason)
                ORDER BY _line, field""", [source.name, rel, batch_id, now])
        con.execute(f"""
            INSERT INTO ops.rejects
            SELECT ?, ?, c._line, 'source_record_id',
                   'superseded by a later record with the same id in this file (line ' || l._keep_line || ')',
                   {'c.source_record_id' if rid != 'NULL' else 'NULL'}, ?, ?
            FROM _checked2 c JOIN _dups l ON c.source_record_id = l.source_record_id
                                          AND c._rowid <> l._keep
            WHERE c._ok AND c._dup""", [source.name, rel, batch_id, now])
        # New / updated / unchanged against the latest stored version, on narrow rows
        # only (line, id, hash); the wide rows are read once, by the insert. Physical
        # order in raw carries no meaning (_file_seq and _line say where a row came from),
        # so the insert does not sort.
        # A source's first file (the reference scale's 50 M events) has nothing to compare
        # with: every accepted record is new, and the 50 M-row comparison is skipped.
        first_load = not con.execute(f"SELECT count(*) FROM (SELECT 1 FROM {raw} LIMIT 1)").fetchone()[0]
        if first_load:
            counts = {"new": int(con.execute(
                "SELECT count(*) FROM _checked2 WHERE _ok AND NOT _dup").fetchone()[0])}
        else:
            con.execute(f"""
                CREATE OR REPLACE TEMP TABLE _accepted AS
                SELECT a._rowid, CASE WHEN p.source_record_id IS NULL THEN 'new'
                                      WHEN p._record_hash = a._record_hash THEN 'unchanged'
                                      ELSE 'updated' END AS _change
                FROM (SELECT _rowid, source_record_id, _record_hash FROM _checked2
                      WHERE _ok AND NOT _dup) a
                LEFT JOIN (SELECT source_record_id, _record_hash FROM {raw}
                           -- Only this file's ids: the window over all of raw (50 M events
                           -- by the second day) was most of a small file's load.
                           WHERE source_record_id IN (SELECT source_record_id FROM _checked2
                                                      WHERE _ok AND NOT _dup)
                           QUALIFY row_number() OVER (PARTITION BY source_record_id
                                                      ORDER BY _file_seq DESC, _line DESC) = 1) p
                  USING (source_record_id)""")
            counts = dict(con.execute("SELECT _change, count(*) FROM _accepted GROUP BY ALL").fetchall())
        steps.done("compared with the stored versions")
        unchanged = ("AND _rowid NOT IN (SELECT _rowid FROM _accepted WHERE _change = 'unchanged')"
                     if counts.get("unchanged") else "")
        with unordered(con):
            con.execute(f"""
                INSERT INTO {raw} ({col_list}, _record_hash, _file, _line, _file_seq, _batch_id, _loaded_at)
                SELECT {select_list}, _record_hash, ?, _line, ?, ?, ? FROM _checked2
                WHERE _ok AND NOT _dup {unchanged}""", [rel, file_seq, batch_id, now])
        rejected = int(con.execute(
            "SELECT count(*) FROM _checked2 WHERE NOT _ok OR _dup").fetchone()[0]) + len(
            {p.line for p in result.problems})
        accepted = sum(counts.values())
        status, message = "loaded", None
        if result.records == 0:
            status = "empty"
            message = f"{path.name}: no records (empty or header only); nothing changed"
        if accepted + rejected + suppressed != result.records:
            # Should never happen; if it does the file's numbers cannot be trusted.
            raise RuntimeError(
                f"{rel}: reconciliation failed: {accepted} accepted + {rejected} rejected + "
                f"{suppressed} suppressed != "
                f"{result.records} records")
        con.execute("INSERT INTO ops.file_ledger VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [source.name, sha, rel, size, file_seq, status, now])
        _summarise_reasons(con, source.name, rel, batch_id)
        con.execute(
            f"INSERT INTO ops.import_report ({_REPORT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [source.name, rel, batch_id, status, result.records, counts.get("new", 0),
             counts.get("updated", 0), counts.get("unchanged", 0), rejected, sha, message, now,
             suppressed])
    for t in ("_land", "_checked", "_checked2", "_bad", "_dups", "_accepted", "_ref_lines"):
        con.execute(f"DROP TABLE IF EXISTS {t}")
    return FileOutcome(rel, status, records=result.records, new=counts.get("new", 0),
                       updated=counts.get("updated", 0), unchanged=counts.get("unchanged", 0),
                       rejected=rejected, suppressed=suppressed)
