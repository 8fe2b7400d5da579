"""The Spark implementation of the :class:`~tessera.engine.base.Engine` seam.

Why it looks the way it does:

* **SQL**: every step is DuckDB SQL (the reference dialect). Its parameters are bound as
  literals on the parsed tree (sqlglot nodes, never values formatted into text), table
  names are pointed at the engine's views, the DuckDB-only functions of
  :data:`~tessera.engine.dialect.SPARK_EQUIVALENTS` become their Spark templates or the
  UDFs of :mod:`tessera.engine.spark_functions`, and sqlglot writes the rest as Spark SQL
  (:func:`tessera.engine.portability.to_spark`).
* **Tables**: plain Parquet, one directory per version of a table under the warehouse
  location (``<warehouse>/<schema>/<table>/v-<id>``). A write makes a new version and
  then switches the catalog to it; the catalog is one small JSON file replaced with
  ``os.replace``, so a step that fails leaves the previous version in force, and a reader
  never sees half a table. Plain Parquet has no DELETE or UPDATE: those statements are
  rewritten as "the table minus / with the changed rows", written as a new version.
  ``together()`` stages the new versions and switches them all with one catalog write.
* **Names**: Spark's temporary views cannot be schema-qualified, so ``marketing.rfm_scores``
  is the view ``marketing__rfm_scores`` over the current version's files; TEMP tables are
  Parquet-backed views of the session; ``information_schema.tables`` / ``.columns`` are
  views of the catalog (stages ask them which optional columns exist).

The catalog lives with the data, so a second engine (or a later run) over the same
warehouse location sees the same tables. Old versions stay on disk until :meth:`vacuum`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import datetime as dt

import sqlglot
from sqlglot import exp
from sqlglot.dialects.duckdb import DuckDB
from sqlglot.tokens import TokenType

from tessera.engine.base import Engine, FileFormat
from tessera.engine.dialect import SPARK_EQUIVALENTS
from tessera.engine.portability import to_spark
from tessera.engine.spark_functions import strftime_to_java
from tessera.engine.spark_udfs import register_udfs
from tessera.engine.steps import SqlStep

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

# Session settings the engine relies on: DuckDB's TIMESTAMP has no time zone (Spark's
# TIMESTAMP_NTZ), and times are read and written in UTC.
REQUIRED_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.timestampType": "TIMESTAMP_NTZ",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
}

_MARK = "tsr_fn_"  # mapped DuckDB functions, marked until sqlglot has written Spark SQL
_PARAM = "tsr_p"
_CATALOG = "_tessera_catalog.json"


# A local Spark's driver is its only executor; Spark's own default heap (1 GB) fails on
# real data. Without a configured ``spark.driver.memory`` a local master gets this share
# of the machine: the whole daily job at 1 M contacts ran out of a 4 GB heap in
# recommendations (bench/README.md), and DuckDB's default is the same share.
LOCAL_DRIVER_MEMORY_SHARE = 0.25


def session_conf(master: str, conf: Mapping[str, str] | None = None) -> dict:
    """The session's settings: the engine's, ``conf`` over them, and for a local master
    without one, ``spark.driver.memory`` at :data:`LOCAL_DRIVER_MEMORY_SHARE` of the
    machine (at least 1 GB). A cluster's driver is sized where it is submitted."""
    out = {"spark.ui.showConsoleProgress": "false", "spark.pyspark.python": sys.executable,
           **REQUIRED_CONF, **dict(conf or {})}
    if master.startswith("local") and "spark.driver.memory" not in out:
        from tessera.engine.warehouse import physical_memory

        out["spark.driver.memory"] = f"{max(1024, int(physical_memory() * LOCAL_DRIVER_MEMORY_SHARE) // 1024 ** 2)}m"
    return out


def spark_session(master: str = "local[*]", app_name: str = "tessera",
                  conf: Mapping[str, str] | None = None) -> SparkSession:
    """A Spark session with the settings the engine needs (``conf`` adds to them; see
    :func:`session_conf`)."""
    from pyspark.sql import SparkSession

    # the UDFs' Python workers run this interpreter (pandas, rapidfuzz), not the first
    # python3 on PATH (SparkContext reads the variable when it starts)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in session_conf(master, conf).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


@dataclass
class _Entry:
    """One catalog entry: a table (``path`` of its current version, relative to the
    warehouse so that a copied warehouse works, and its Spark schema as JSON) or a view
    (its DuckDB SQL, bound)."""

    kind: str  # "table" | "view"
    path: str = ""
    schema: str = ""
    sql: str = ""
    ddl: str = ""  # the DuckDB CREATE TABLE that made it (constraints), for the hand-over

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v}


@dataclass
class _Staged:
    changes: dict[str, _Entry | None] = field(default_factory=dict)


class SparkEngine:
    """An Engine over one Spark session and one warehouse location (local path or any
    Hadoop file system Spark can write; the catalog file needs a local path today)."""

    dialect = "spark"

    def __init__(self, spark: SparkSession, warehouse: str | Path,
                 hmac_key: str | None = None) -> None:
        self.spark = spark
        for key, value in REQUIRED_CONF.items():
            spark.conf.set(key, value)
        self.warehouse = Path(warehouse)
        self.warehouse.mkdir(parents=True, exist_ok=True)
        self._temp_dir = self.warehouse / "temp" / uuid.uuid4().hex[:12]
        self._catalog: dict[str, _Entry] = self._load_catalog()
        self._staged: _Staged | None = None
        self._temps: dict[str, str] = {}  # temp name -> its parquet path ("" for arrow)
        register_udfs(spark, hmac_key)
        self._refresh_views()

    # ---- the Engine seam -------------------------------------------------------------

    def run(self, *steps: SqlStep) -> None:
        for step in steps:
            for tree in self._parse(step):
                self._execute(tree)

    def rows(self, step: SqlStep) -> list[tuple]:
        return [tuple(r) for r in self._query(step).collect()]

    def scalar(self, step: SqlStep) -> Any:
        rows = self._query(step).take(1)
        return rows[0][0] if rows else None

    def columns(self, step: SqlStep) -> dict[str, list]:
        return self.arrow(step).to_pydict()

    def arrow(self, step: SqlStep) -> pa.Table:
        return self._query(step).toArrow()

    def replace_table(self, table: str, step: SqlStep) -> int:
        return self._write(table, self._query(step))

    def overwrite(self, table: str, step: SqlStep) -> int:
        with self.together():
            return self._write(table, self._conform(table, self._query(step)))

    def replace_partition(self, table: str, partition: Mapping[str, Any], step: SqlStep) -> int:
        from pyspark.sql import functions as F

        new = self._conform(table, self._query(step))
        old = self.spark.table(self._view(table))
        cond = None
        for column, value in partition.items():
            c = F.col(f"`{column}`") == F.lit(value)
            cond = c if cond is None else cond & c
        kept = old.filter(~F.coalesce(cond, F.lit(False))) if cond is not None else old.limit(0)
        kept_rows = kept.count()
        return self._write(table, kept.unionByName(new)) - kept_rows

    def append(self, table: str, step: SqlStep) -> int:
        new = self._conform(table, self._query(step))
        old = self._read(table)
        entry = self._entry(table) if table not in self._temps else None
        before = self._count_dir(self.warehouse / entry.path) if entry and entry.kind == "table" \
            else old.count()
        return self._write(table, old.unionByName(new)) - before

    @contextmanager
    def together(self) -> Iterator[Engine]:
        if self._staged is not None:  # already inside: the outer block is the unit
            yield self
            return
        self._staged = _Staged()
        try:
            yield self
        except BaseException:
            staged, self._staged = self._staged, None
            self._refresh_views(staged.changes)  # back to the committed versions
            raise
        staged, self._staged = self._staged, None
        self._commit(staged.changes)

    def register_arrow(self, name: str, table: pa.Table) -> None:
        df = self.spark.createDataFrame(table) if table.num_rows else self.spark.createDataFrame(
            [], schema=_arrow_schema_ddl(table))
        df.createOrReplaceTempView(name)
        self._temps[name] = ""

    def define_keyed_hash(self, key: str) -> None:
        if not key:
            raise ValueError("the suppression key is empty; set TESSERA_SUPPRESSION_KEY")
        register_udfs(self.spark, key)

    def unregister(self, name: str) -> None:
        self._drop_temp(name)

    def copy_to(self, step: SqlStep, path: Path, fmt: FileFormat) -> int:
        """One file at ``path`` (as DuckDB's COPY writes), written beside it and renamed."""
        df = self._query(step)
        tmp = Path(str(path) + f".spark-{uuid.uuid4().hex[:8]}")
        writer = df.coalesce(1).write.mode("error")
        {"csv": lambda: writer.option("header", True).csv(str(tmp)),
         "parquet": lambda: writer.parquet(str(tmp)),
         "json": lambda: writer.json(str(tmp))}[fmt]()
        parts = [p for p in sorted(tmp.iterdir()) if p.name.startswith("part-")]
        if parts:
            os.replace(parts[0], path)
        else:  # no rows: Spark writes no CSV/JSON part; the file still exists, as on DuckDB
            path.write_text(",".join(df.columns) + "\n" if fmt == "csv" else "", encoding="utf-8")
        shutil.rmtree(tmp, ignore_errors=True)
        return self._count_dir(None, df)

    def table_exists(self, schema: str, table: str) -> bool:
        return self._entry(f"{schema}.{table}") is not None

    def load_arrow(self, name: str, table: pa.Table) -> int:
        """``name`` becomes the rows of an Arrow table, written as Parquet by pyarrow: no
        Spark job, which is what a hand-over of many small tables spends its time on.
        The file has the Spark types that ``createDataFrame`` would give the table."""
        import pyarrow.parquet as pq
        from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema

        table = table.cast(_signed(table.schema))  # Spark has no unsigned integers
        schema = from_arrow_schema(table.schema)
        try:
            table = table.cast(to_arrow_schema(schema))
        except (ValueError, TypeError, NotImplementedError):  # e.g. unsigned: Spark's way
            self.register_arrow("_tsr_load", table)
            try:
                return self.replace_table(name, SqlStep("load", "SELECT * FROM _tsr_load"))
            finally:
                self.unregister("_tsr_load")
        schema_name, _, short = name.partition(".")
        path = self.warehouse / schema_name / short / f"v-{uuid.uuid4().hex}"
        path.mkdir(parents=True)
        pq.write_table(table, path / "part-00000.parquet")
        old = self._entry(name)
        self._set(name, _Entry("table", path=str(path.relative_to(self.warehouse)),
                               schema=schema.json(), ddl=old.ddl if old else ""))
        return table.num_rows

    def versions(self) -> dict[str, tuple[str, str, str]]:
        """Each committed table or view: (kind, its version's path or its SQL, its DuckDB
        DDL). Two calls around a step tell which names the step replaced or dropped."""
        return {name: (e.kind, e.path or e.sql, e.ddl) for name, e in self._catalog.items()}

    # ---- housekeeping ------------------------------------------------------------------

    def vacuum(self) -> int:
        """Delete table versions the catalog no longer points at; returns how many."""
        live = {(self.warehouse / e.path).resolve() for e in self._catalog.values()
                if e.kind == "table"}
        gone = 0
        for version in self.warehouse.glob("*/*/v-*"):
            if version.resolve() not in live:
                shutil.rmtree(version, ignore_errors=True)
                gone += 1
        return gone

    def close(self) -> None:
        for name in list(self._temps):
            self._drop_temp(name)
        shutil.rmtree(self._temp_dir, ignore_errors=True)

    # ---- SQL -----------------------------------------------------------------------------

    def _parse(self, step: SqlStep) -> list[exp.Expression]:
        sql, params = _named(step.sql, step.params)
        trees = [t for t in sqlglot.parse(sql, read="duckdb") if t is not None]
        return [_bind(t, params) for t in trees]

    def _query(self, step: SqlStep) -> DataFrame:
        trees = self._parse(step)
        if len(trees) != 1:
            raise ValueError(f"step {step.name} must be one query")
        return self.spark.sql(self._spark_sql(trees[0]))

    def _spark_sql(self, tree: exp.Expression) -> str:
        """A bound DuckDB statement as Spark SQL over the engine's views."""
        tree = _mark_mapped(self._point_tables(tree.copy()))
        spark_tree = sqlglot.parse_one(to_spark(tree), read="spark")
        return _expand_mapped(spark_tree).sql("spark")

    def _point_tables(self, tree: exp.Expression) -> exp.Expression:
        for table in list(tree.find_all(exp.Table)):
            if not table.args.get("db"):
                continue
            name = f"{table.args['db'].name}.{table.name}"
            alias = table.args.get("alias")
            new = exp.Table(this=exp.to_identifier(_view_name(name)))
            new.set("alias", alias.copy() if alias
                    else exp.TableAlias(this=exp.to_identifier(table.name)))
            table.replace(new)
        return tree

    def _execute(self, tree: exp.Expression) -> None:
        if isinstance(tree, exp.Create):
            self._create(tree)
        elif isinstance(tree, exp.Drop):
            self._drop(tree)
        elif isinstance(tree, exp.Insert):
            self._insert(tree)
        elif isinstance(tree, exp.Delete):
            self._delete(tree)
        elif isinstance(tree, exp.Update):
            self._update(tree)
        elif isinstance(tree, (exp.Transaction, exp.Commit, exp.Rollback)):
            raise ValueError("use together() for transactions")
        else:
            self.spark.sql(self._spark_sql(tree)).collect()

    def _create(self, tree: exp.Create) -> None:
        kind = (tree.args.get("kind") or "").upper()
        if kind in ("SCHEMA", "DATABASE"):
            return  # schemas are a naming convention here: <schema>__<table>
        target = tree.this.this if isinstance(tree.this, exp.Schema) else tree.this
        name = _qualified(target)
        temp = bool(tree.args.get("properties") and any(
            isinstance(p, exp.TemporaryProperty) for p in tree.args["properties"].expressions))
        exists = (name in self._temps) if temp else self._entry(name) is not None
        if tree.args.get("exists") and exists:
            return
        if kind == "VIEW":
            self._set(name, _Entry("view", sql=tree.expression.sql("duckdb")))
            return
        if kind != "TABLE":
            raise NotImplementedError(f"CREATE {kind} on the Spark engine")
        if tree.expression is not None:
            df = self.spark.sql(self._spark_sql(tree.expression))
        else:
            df = self.spark.createDataFrame([], schema=_ddl_schema(tree))
        if temp:
            self._write_temp(name, df)
        else:
            self._write(name, df, ddl="" if tree.expression is not None else tree.sql("duckdb"))

    def _drop(self, tree: exp.Drop) -> None:
        for table in tree.args.get("tables") or [tree.this]:
            name = _qualified(table)
            if name in self._temps:
                self._drop_temp(name)
            elif self._entry(name) is not None:
                self._set(name, None)
            elif not tree.args.get("exists"):
                raise ValueError(f"no table {name}")

    def _insert(self, tree: exp.Insert) -> None:
        target = tree.this
        columns = None
        if isinstance(target, exp.Schema):
            columns = [c.name for c in target.expressions]
            target = target.this
        name = _qualified(target)
        if tree.args.get("conflict") or tree.args.get("alternative"):
            raise NotImplementedError("INSERT OR REPLACE / ON CONFLICT on the Spark engine")
        df = self.spark.sql(self._spark_sql(tree.expression))
        if columns is not None:
            from pyspark.sql import functions as F

            schema = self._schema(name)
            df = df.toDF(*columns)
            df = df.select([F.col(f"`{f.name}`") if f.name in columns else F.lit(None).alias(f.name)
                            for f in schema])
        new = self._conform(name, df)
        self._write(name, self._read(name).unionByName(new))

    def _delete(self, tree: exp.Delete) -> None:
        name = _qualified(tree.this)
        where = tree.args.get("where")
        keep = exp.select("*").from_(tree.this.copy())
        if where is not None:
            keep = keep.where(exp.not_(exp.Coalesce(this=exp.paren(where.this.copy()),
                                                    expressions=[exp.false()])))
        else:
            keep = keep.where(exp.false())
        self._write(name, self._conform(name, self.spark.sql(self._spark_sql(keep))))

    def _update(self, tree: exp.Update) -> None:
        name = _qualified(tree.this)
        if tree.args.get("from_"):
            return self._update_from(tree, name)
        where = tree.args.get("where")
        hit = exp.Coalesce(this=exp.paren(where.this.copy()), expressions=[exp.false()]) \
            if where is not None else exp.true()
        sets = {eq.this.name: eq.expression for eq in tree.expressions}
        cols = [exp.alias_(exp.Case(ifs=[exp.If(this=hit.copy(), true=sets[f.name].copy())],
                                    default=exp.column(f.name, quoted=True)), f.name, quoted=True)
                if f.name in sets else exp.column(f.name, quoted=True) for f in self._schema(name)]
        sel = exp.select(*cols).from_(tree.this.copy())
        self._write(name, self._conform(name, self.spark.sql(self._spark_sql(sel))))

    def _update_from(self, tree: exp.Update, name: str) -> None:
        """``UPDATE t SET c = s.x FROM s WHERE ...``: each row of ``t`` with a match takes the
        values of one matching row (DuckDB: an arbitrary one; here the first by row id)."""
        from pyspark.sql import functions as F

        schema = self._schema(name)
        alias = tree.this.alias_or_name
        base_name = f"tsr_upd_{uuid.uuid4().hex[:8]}"
        base = self._read(name).withColumn("__tsr_rid", F.monotonically_increasing_id())
        self._write_temp(base_name, base)  # the row ids, fixed once
        try:
            sets = {eq.this.name: eq.expression for eq in tree.expressions}
            from_ = tree.args["from_"].copy()
            sel = exp.select(exp.column("__tsr_rid", table=alias),
                             *[exp.alias_(e.copy(), f"__tsr_set_{c}") for c, e in sets.items()])
            sel = sel.from_(exp.Table(this=exp.to_identifier(base_name),
                                      alias=exp.TableAlias(this=exp.to_identifier(alias))))
            sel = sel.join(from_.this, join_type="cross")
            for join in tree.args.get("joins") or []:
                sel = sel.join(join.copy())
            if tree.args.get("where") is not None:
                sel = sel.where(tree.args["where"].this.copy())
            matched = self.spark.sql(self._spark_sql(sel))
            firsts = matched.groupBy("__tsr_rid").agg(
                *[F.first(f"__tsr_set_{c}").alias(f"__tsr_set_{c}") for c in sets],
                F.lit(True).alias("__tsr_hit"))
            b = self.spark.table(base_name)
            joined = b.join(firsts, "__tsr_rid", "left")
            out = joined.select([
                F.when(F.col("__tsr_hit"), F.col(f"__tsr_set_{f.name}"))
                .otherwise(F.col(f"`{f.name}`"))
                .alias(f.name) if f.name in sets else F.col(f"`{f.name}`") for f in schema])
            self._write(name, self._conform(name, out))
        finally:
            self._drop_temp(base_name)

    # ---- tables ----------------------------------------------------------------------------

    def _entry(self, name: str) -> _Entry | None:
        if self._staged is not None and name in self._staged.changes:
            return self._staged.changes[name]
        return self._catalog.get(name)

    def _view(self, name: str) -> str:
        return name if name in self._temps else _view_name(name)

    def _read(self, name: str) -> DataFrame:
        return self.spark.table(self._view(name))

    def _schema(self, name: str):
        return self._read(name).schema

    def _conform(self, name: str, df: DataFrame) -> DataFrame:
        """The rows of ``df`` under the table's column names and types, by position (as an
        INSERT casts them on DuckDB)."""
        from pyspark.sql import functions as F

        schema = self._schema(name)
        if len(df.columns) != len(schema):
            raise ValueError(f"{name} has {len(schema)} columns, "
                             f"the step selects {len(df.columns)}")
        df = df.toDF(*[f"_c{i}" for i in range(len(df.columns))])
        return df.select([F.col(f"_c{i}").cast(f.dataType).alias(f.name)
                          for i, f in enumerate(schema)])

    def _write(self, name: str, df: DataFrame, ddl: str = "") -> int:
        """A new version of ``name`` with the rows of ``df``, switched in (or staged)."""
        if name in self._temps:
            return self._write_temp(name, df)
        schema_name, _, table = name.partition(".")
        if not table:
            raise ValueError(f"table {name} needs a schema (or CREATE TEMP TABLE)")
        path = self.warehouse / schema_name / table / f"v-{uuid.uuid4().hex}"
        df.write.mode("error").parquet(str(path))
        old = self._entry(name)
        self._set(name, _Entry("table", path=str(path.relative_to(self.warehouse)),
                               schema=df.schema.json(), ddl=ddl or (old.ddl if old else "")))
        return self._count_dir(path)

    def _write_temp(self, name: str, df: DataFrame) -> int:
        # not "_x-...": Spark skips a path whose name starts with "_" as hidden
        path = self._temp_dir / f"t-{name}-{uuid.uuid4().hex[:8]}"
        df.write.mode("error").parquet(str(path))
        old = self._temps.get(name)
        self.spark.read.schema(df.schema).parquet(str(path)).createOrReplaceTempView(name)
        self._temps[name] = str(path)
        if old:
            shutil.rmtree(old, ignore_errors=True)
        return self._count_dir(path)

    def _drop_temp(self, name: str) -> None:
        path = self._temps.pop(name, None)
        self.spark.catalog.dropTempView(name)
        if path:
            shutil.rmtree(path, ignore_errors=True)

    def _count_dir(self, path: Path | None, df: DataFrame | None = None) -> int:
        """Rows written: from the Parquet footers (no Spark job), or by counting ``df``."""
        if path is None:
            return df.count()
        import pyarrow.parquet as pq

        return sum(pq.ParquetFile(f).metadata.num_rows for f in Path(path).glob("part-*.parquet"))

    def _set(self, name: str, entry: _Entry | None) -> None:
        if self._staged is not None:
            self._staged.changes[name] = entry
            self._register(name, entry)
            self._register_information_schema()
        else:
            self._commit({name: entry})

    def _commit(self, changes: dict[str, _Entry | None]) -> None:
        if not changes:
            return
        catalog = dict(self._catalog)
        for name, entry in changes.items():
            if entry is None:
                catalog.pop(name, None)
            else:
                catalog[name] = entry
        tmp = self.warehouse / f"{_CATALOG}.{uuid.uuid4().hex[:8]}"
        tmp.write_text(json.dumps({k: v.to_json() for k, v in sorted(catalog.items())}, indent=1))
        os.replace(tmp, self.warehouse / _CATALOG)  # the switch: one atomic rename
        self._catalog = catalog
        self._refresh_views(changes)

    def _load_catalog(self) -> dict[str, _Entry]:
        path = self.warehouse / _CATALOG
        if not path.exists():
            return {}
        return {k: _Entry(**v) for k, v in json.loads(path.read_text()).items()}

    def _refresh_views(self, names: Mapping[str, Any] | None = None) -> None:
        views = []
        for name in (names if names is not None else self._catalog):
            entry = self._entry(name)
            if entry is not None and entry.kind == "view":
                views.append(name)
            else:
                self._register(name, entry)
        # views are SQL over other names: re-registered after every switch, after the tables
        views += [n for n, e in self._catalog.items() if e.kind == "view" and n not in views]
        self._register_views(views)
        self._register_information_schema()

    def _register_views(self, views: list[str]) -> None:
        """Views after the tables, and a view over another view after it: a fresh session
        (the next run's process) knows none of the names, so the catalog's order, which is
        the order the stages first wrote them, is not enough."""
        from pyspark.errors import AnalysisException

        pending = list(views)
        while pending:
            failed = []
            for name in pending:
                try:
                    self._register(name, self._entry(name))
                except AnalysisException:
                    failed.append(name)
            if len(failed) == len(pending):
                self._register(failed[0], self._entry(failed[0]))  # raises the error itself
            pending = failed

    def _register(self, name: str, entry: _Entry | None) -> None:
        from pyspark.sql.types import StructType

        view = _view_name(name)
        if entry is None:
            self.spark.catalog.dropTempView(view)
        elif entry.kind == "table":
            schema = StructType.fromJson(json.loads(entry.schema))
            self.spark.read.schema(schema).parquet(str(self.warehouse / entry.path)) \
                .createOrReplaceTempView(view)
        else:
            tree = sqlglot.parse_one(entry.sql, read="duckdb")
            self.spark.sql(f"CREATE OR REPLACE TEMP VIEW `{view}` AS {self._spark_sql(tree)}")

    def _register_information_schema(self) -> None:
        names = set(self._catalog) | (set(self._staged.changes) if self._staged else set())
        tables, columns = [], []
        for name in sorted(names):
            entry = self._entry(name)
            if entry is None:
                continue
            schema_name, _, table = name.partition(".")
            tables.append((schema_name, table, "BASE TABLE" if entry.kind == "table" else "VIEW"))
            if entry.kind == "table":
                fields = json.loads(entry.schema)["fields"]
                columns += [(schema_name, table, f["name"], i + 1, _duck_type(f["type"]))
                            for i, f in enumerate(fields)]
        self.spark.createDataFrame(
            tables, "table_schema STRING, table_name STRING, table_type STRING") \
            .createOrReplaceTempView(_view_name("information_schema.tables"))
        self.spark.createDataFrame(
            columns, "table_schema STRING, table_name STRING, column_name STRING, "
            "ordinal_position INT, data_type STRING") \
            .createOrReplaceTempView(_view_name("information_schema.columns"))


# ---- binding, names, mapped functions -------------------------------------------------------

def _named(sql: str, params) -> tuple[str, dict[str, Any]]:
    """``?`` placeholders renamed ``$tsr_p<i>`` (found by the tokenizer, so never inside a
    string or comment), and the parameters as one mapping."""
    if not params:
        return sql, {}
    if isinstance(params, Mapping):
        return sql, dict(params)
    out, last, values = [], 0, {}
    i = 0
    for token in DuckDB().tokenize(sql):
        if token.token_type == TokenType.PLACEHOLDER and token.text == "?":
            out.append(sql[last:token.start])
            out.append(f"${_PARAM}{i}")
            values[f"{_PARAM}{i}"] = params[i]
            last = token.end + 1
            i += 1
    out.append(sql[last:])
    if i != len(params):
        raise ValueError(f"{i} placeholders for {len(params)} parameters")
    return "".join(out), values


def _bind(tree: exp.Expression, params: Mapping[str, Any]) -> exp.Expression:
    for node in list(tree.find_all(exp.Placeholder)):
        key = node.name
        if key not in params:
            raise KeyError(f"parameter ${key} is not bound")
        node.replace(_literal(params[key]))
    return tree


def _literal(value: Any) -> exp.Expression:
    """A Python value as a typed SQL literal node."""
    if value is None:
        return exp.null()
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, (int, Decimal)):
        return exp.Literal.number(str(value))
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return exp.cast(exp.Literal.string(str(value)), "DOUBLE")
        return exp.cast(exp.Literal.number(repr(value)), "DOUBLE")
    if isinstance(value, str):
        return exp.Literal.string(value)
    if isinstance(value, dt.datetime):
        return exp.cast(exp.Literal.string(value.isoformat(sep=" ")), "TIMESTAMP")
    if isinstance(value, dt.date):
        return exp.cast(exp.Literal.string(value.isoformat()), "DATE")
    if isinstance(value, (list, tuple)):
        return exp.Array(expressions=[_literal(v) for v in value])
    raise TypeError(f"cannot bind a {type(value).__name__} parameter")


def _view_name(name: str) -> str:
    return name.replace(".", "__")


def _qualified(table: exp.Expression) -> str:
    db = table.args.get("db")
    return f"{db.name}.{table.name}" if db else table.name


def _mark_mapped(tree: exp.Expression) -> exp.Expression:
    """DuckDB functions of SPARK_EQUIVALENTS as opaque calls that sqlglot passes through."""
    from tessera.engine.portability import _name

    for fn in list(tree.find_all(exp.Func)):
        name = _name(fn, "duckdb")
        if name in SPARK_EQUIVALENTS:
            args = [a for a in fn.iter_expressions() if not isinstance(a, exp.DataType)]
            if isinstance(fn, exp.Anonymous):
                args = list(fn.expressions)
            fn.replace(exp.Anonymous(this=_MARK + name, expressions=[a.copy() for a in args]))
    return tree


def _expand_mapped(tree: exp.Expression) -> exp.Expression:
    """The marked calls as their Spark templates, innermost first."""
    def visit(node: exp.Expression) -> None:
        for child in list(node.iter_expressions()):
            visit(child)
        if isinstance(node, exp.Anonymous) and node.name.lower().startswith(_MARK):
            name = node.name.lower()[len(_MARK):]
            node.replace(exp.Var(this=_template(name, list(node.expressions))))
    visit(tree)
    return tree


def _template(name: str, args: list[exp.Expression]) -> str:
    """Spark SQL text of one mapped function over its (already Spark) argument nodes."""
    if name == "try_strptime" and isinstance(args[1], exp.Array):
        each = [_template(name, [args[0], f]) for f in args[1].expressions]
        return "coalesce(" + ", ".join(each) + ")"
    template = SPARK_EQUIVALENTS[name]
    if template.startswith("udf:") and "(" not in template:
        template = template + "({args})"
    folded = re.sub(r"udf:strftime_to_java\(\{(\d)\}\)",
                    lambda m: _java_pattern(args[int(m.group(1))], parsing=name.startswith("try_")),
                    template)
    text = folded.replace("udf:", "").replace("{args}", ", ".join(a.sql("spark") for a in args))
    return re.sub(r"\{(\d)\}", lambda m: args[int(m.group(1))].sql("spark"), text)


def _java_pattern(arg: exp.Expression, parsing: bool) -> str:
    if isinstance(arg, exp.Literal) and arg.is_string:
        return exp.Literal.string(strftime_to_java(arg.this, parsing)).sql("spark")
    return f"strftime_to_java({arg.sql('spark')})"


def _ddl_schema(tree: exp.Create) -> str:
    """The column definitions of a CREATE TABLE as a Spark DDL schema (constraints dropped:
    Parquet keeps types, not constraints)."""
    spark_tree = sqlglot.parse_one(to_spark(tree), read="spark")
    cols = []
    for col in spark_tree.find_all(exp.ColumnDef):
        cols.append(f"`{col.name}` {col.args['kind'].sql('spark')}")
    return ", ".join(cols)


_DUCK_TYPES = {"string": "VARCHAR", "long": "BIGINT", "integer": "INTEGER", "short": "SMALLINT",
               "byte": "TINYINT", "double": "DOUBLE", "float": "FLOAT", "boolean": "BOOLEAN",
               "date": "DATE", "timestamp_ntz": "TIMESTAMP",
               "timestamp": "TIMESTAMP WITH TIME ZONE",
               "binary": "BLOB"}


def _duck_type(t) -> str:
    if isinstance(t, dict):
        return "VARCHAR[]" if t.get("type") == "array" else t.get("type", "").upper()
    return _DUCK_TYPES.get(t, t.upper())  # decimal(18,2) -> DECIMAL(18,2)


def _signed(schema: pa.Schema) -> pa.Schema:
    """Unsigned integer columns (DuckDB's UBIGINT hashes) as the signed type that holds
    every value, as Spark reads Parquet's unsigned ones (UINT64: DECIMAL(20,0))."""
    import pyarrow as pa

    wider = {pa.uint8(): pa.int16(), pa.uint16(): pa.int32(), pa.uint32(): pa.int64(),
             pa.uint64(): pa.decimal128(20, 0)}
    return pa.schema([f.with_type(wider.get(f.type, f.type)) for f in schema])


def _arrow_schema_ddl(table: pa.Table) -> str:
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(table.schema).simpleString()[len("struct<"):-1]
