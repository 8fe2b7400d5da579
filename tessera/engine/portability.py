"""The portability check: does a step's SQL run on Spark, as transpiled by sqlglot?

A step passes when its DuckDB SQL parses, every function it calls is one sqlglot
translates for Spark, a Spark built-in of the same name and meaning
or one the dialect module maps (:data:`~tessera.engine.dialect.SPARK_EQUIVALENTS`);
after sqlglot translated it for Spark (reporting nothing unsupported), every function
the Spark SQL calls is a Spark built-in (:data:`~tessera.engine.dialect.SPARK_FUNCTIONS`). CI runs it over every step of a real daily run
(tests/core/test_portability.py); ``python -m tessera.engine.portability`` prints the
report for the demo.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlglot
from sqlglot import ErrorLevel, exp

import re

from tessera.engine.dialect import SPARK_EQUIVALENTS, SPARK_FUNCTIONS
from tessera.engine.steps import SqlStep


@dataclass
class Verdict:
    step: str
    problems: list[str] = field(default_factory=list)
    mapped: list[str] = field(default_factory=list)  # functions the Spark engine supplies
    spark_sql: str = ""

    @property
    def passes(self) -> bool:
        return not self.problems


def check(step: SqlStep) -> Verdict:
    verdict = Verdict(step.name)
    try:
        statements = sqlglot.parse(step.sql, read="duckdb")
    except sqlglot.errors.ParseError as exc:
        verdict.problems.append(f"does not parse as DuckDB SQL: {str(exc).splitlines()[0]}")
        return verdict
    for tree in statements:
        if tree is None:
            continue
        mapped = {_name(fn, "duckdb") for fn in tree.find_all(exp.Func)} & set(SPARK_EQUIVALENTS)
        verdict.mapped += sorted(mapped)
        try:
            spark = to_spark(tree)
            spark_tree = sqlglot.parse_one(spark, read="spark")
        except (sqlglot.errors.UnsupportedError, sqlglot.errors.ParseError) as exc:
            verdict.problems.append(f"Spark cannot express it: {str(exc).splitlines()[0]}")
            continue
        verdict.spark_sql += spark + ";\n"
        for fn in spark_tree.find_all(exp.Func):
            name = _name(fn, "spark")
            if name and name not in SPARK_FUNCTIONS and name not in mapped and not (
                    name in _RENAMED and _RENAMED[name] in mapped):
                verdict.problems.append(f"function {name}() has no Spark equivalent "
                                        "(map it in tessera.engine.dialect)")
    verdict.mapped = sorted(set(verdict.mapped))
    return verdict


_LEADING_NAME = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\(")
# DuckDB functions the dialect maps, as sqlglot renames them for Spark
_RENAMED = {"jarowinkler_similarity": "jaro_winkler_similarity"}
# AND / OR are Func subclasses in sqlglot 30 whose SQL starts with their left operand:
# `regexp_full_match(a, b) AND c` would read as a call of regexp_full_match
_NOT_FUNCTIONS = (exp.Cast, exp.TryCast, exp.Case, exp.If, exp.Connector)


def to_spark(tree: exp.Expression) -> str:
    """One DuckDB statement in Spark SQL, as sqlglot writes it after our fix-ups.

    The fix-ups are the spellings sqlglot 30 gets wrong for Spark: DuckDB's list overlap
    (``list_has_any``, ``&&``) comes out as ``&&``, which Spark does not parse, instead of
    ``arrays_overlap``.
    """
    tree = tree.copy().transform(
        lambda node: exp.Anonymous(this="arrays_overlap", expressions=[node.this, node.expression])
        if isinstance(node, exp.ArrayOverlaps) else node)
    tree = tree.transform(_ordered_list)
    return sqlglot.transpile(tree.sql("duckdb"), read="duckdb", write="spark",
                             unsupported_level=ErrorLevel.RAISE)[0]


def _ordered_list(node: exp.Expression) -> exp.Expression:
    """DuckDB's ``list(x ORDER BY k)``: sqlglot drops the ORDER BY for Spark, whose
    ``collect_list`` has no order, so a list column would come out in any order. Spark
    sorts it instead: ``array_sort`` of the values when they are the keys, else of
    ``(k, ..., x)`` structs, then takes ``x`` (``reverse`` for a descending order)."""
    if not (isinstance(node, exp.ArrayAgg) and isinstance(node.this, exp.Order)):
        return node
    order = node.this
    keys = order.expressions
    if len({bool(k.args.get("desc")) for k in keys}) > 1:
        raise sqlglot.errors.UnsupportedError("list(... ORDER BY) mixing ASC and DESC")
    desc = bool(keys[0].args.get("desc"))
    value = order.this
    distinct = isinstance(value, exp.Distinct)
    if distinct:
        value = value.expressions[0]
    if [k.this for k in keys] == [value]:
        agg = exp.Anonymous(this="collect_set" if distinct else "collect_list", expressions=[value.copy()])
        out = exp.Anonymous(this="array_sort", expressions=[agg])
    elif distinct:
        raise sqlglot.errors.UnsupportedError("list(DISTINCT x ORDER BY another key)")
    else:
        fields = []
        for i, k in enumerate(keys):
            fields += [exp.Literal.string(f"k{i}"), k.this.copy()]
        fields += [exp.Literal.string("v"), value.copy()]
        pairs = exp.Anonymous(this="collect_list", expressions=[exp.Anonymous(this="named_struct",
                                                                             expressions=fields)])
        sorted_ = exp.Anonymous(this="array_sort", expressions=[pairs])
        out = exp.Anonymous(this="transform", expressions=[sorted_, exp.Lambda(
            this=exp.Dot(this=exp.column("s"), expression=exp.to_identifier("v")),
            expressions=[exp.to_identifier("s")])])
    return exp.Anonymous(this="reverse", expressions=[out]) if desc else out


def _name(fn: exp.Func, dialect: str) -> str | None:
    """The function's name as the SQL spells it, lower-case (None for syntax like CAST)."""
    if isinstance(fn, exp.Anonymous):
        return fn.name.lower()
    if isinstance(fn, _NOT_FUNCTIONS):
        return None
    m = _LEADING_NAME.match(fn.sql(dialect))
    name = m.group(1).lower() if m else None
    return None if name in ("cast", "try_cast") else name  # syntax a function renders to


def report(steps: list[SqlStep]) -> tuple[list[Verdict], str]:
    """Verdicts per step and a one-paragraph summary (counts, failing steps)."""
    verdicts = [check(s) for s in steps]
    ok = sum(v.passes for v in verdicts)
    lines = [f"{ok} of {len(verdicts)} steps transpile to Spark SQL"]
    mapped = sorted({m for v in verdicts for m in v.mapped})
    if mapped:
        lines.append(f"functions the Spark engine must supply: {', '.join(mapped)}")
    for v in verdicts:
        for p in v.problems:
            lines.append(f"  FAIL {v.step}: {p}")
    return verdicts, "\n".join(lines)
