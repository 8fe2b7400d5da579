"""The hand-over between the DuckDB warehouse and a Spark warehouse, around one stage.

Why a hand-over and not Spark end to end: ingestion (one file at a time, type checks,
quarantine), the Dagster asset checks, the metadata and the stages not yet on Spark read
and write the DuckDB warehouse. With ``engine: spark`` each stage on the seam runs on
Spark between two hand-overs:

* **in**: every table of the schemas the stages read (``raw``, ``staging``, ``core``,
  ``marts``, ``marketing``, ``ops``, ``predictions``, ``views``, ``recommendations``, ``exports``) that changed in DuckDB since it was last handed
  over is copied into the Spark warehouse (a fingerprint per table, count and a sum of
  row hashes computed by DuckDB, says whether it changed; an unchanged table is not
  copied again);
* **the stage** runs on the Spark engine (its SQL, its writes: new Parquet versions);
* **out**: every table the stage replaced (its catalog entry points at a new version) is
  copied back into DuckDB in one transaction, keeping the DuckDB table's definition
  (a table new to DuckDB is created with the DDL the stage ran on Spark); views and drops
  follow. A stage that fails hands nothing back.

So the DuckDB warehouse stays the system of record that everything else reads, and the
Spark warehouse holds the same tables as Parquet. The copies are the price: at a scale
where they matter, the remaining stages move to Spark (ARCHITECTURE.md, "Spark").
"""

from __future__ import annotations

import json
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import duckdb

from tessera.engine.steps import SqlStep
from tessera.engine.warehouse import transaction

# raw too: consent reads the import flags of every record version (raw.<source>)
# views: the view nodes' golden records (view cards); recommendations: the lists a feed
# reads; exports: the feeds' delivered state, deliveries and erasure notices (the diff's
# base, read on Spark)
HANDED_SCHEMAS = ("raw", "staging", "core", "marts", "marketing", "ops", "predictions", "views",
                  "recommendations", "exports")
_MEMO = "_tessera_handover.json"


def _fingerprint(con: duckdb.DuckDBPyConnection, name: str) -> str:
    cols = con.execute("SELECT string_agg(column_name || ' ' || data_type, ',' ORDER BY "
                       "ordinal_position) FROM information_schema.columns WHERE table_schema = ? "
                       "AND table_name = ?", name.split(".")).fetchall()[0][0]
    # fetchall, not fetchone: DuckDB 2 refuses register() beside an unfinished result
    rows, digest = con.execute(f"SELECT count(*), coalesce(sum(hash(t)), 0) FROM {name} t").fetchall()[0]
    return f"{rows}:{digest}:{cols}"


def _duck_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    marks = ", ".join("?" for _ in HANDED_SCHEMAS)
    return [f"{s}.{t}" for s, t in con.execute(
        f"SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema IN "
        f"({marks}) AND table_catalog = current_database() ORDER BY 1, 2",
        list(HANDED_SCHEMAS)).fetchall()]


class Handover:
    """The memo of what the Spark warehouse holds of DuckDB's tables (a JSON file beside
    its catalog, so a later run copies only what changed since)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, engine) -> None:
        self.con = con
        self.engine = engine
        self.path = Path(engine.warehouse) / _MEMO
        self.memo: dict[str, str] = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.copied_in: list[str] = []
        self.copied_out: list[str] = []

    def _save(self) -> None:
        tmp = self.path.with_name(f"{_MEMO}.{uuid.uuid4().hex[:8]}")
        tmp.write_text(json.dumps(self.memo, indent=1, sort_keys=True))
        os.replace(tmp, self.path)

    def hand_in(self) -> None:
        with self.engine.together():  # one catalog switch for all the copies
            for name in _duck_tables(self.con):
                fp = _fingerprint(self.con, name)
                if self.memo.get(name) == fp and self.engine.table_exists(*name.split(".")):
                    continue
                self.engine.load_arrow(name, self.con.execute(f"SELECT * FROM {name}").to_arrow_table())
                self.memo[name] = fp
                self.copied_in.append(name)
        self._save()

    def hand_out(self, before: dict[str, tuple[str, str, str]]) -> None:
        after = self.engine.versions()
        changed = sorted(n for n, v in after.items() if before.get(n) != v)
        dropped = sorted(n for n in before if n not in after)
        with transaction(self.con):
            for name in dropped:
                kind = before[name][0]
                self.con.execute(f"DROP {'VIEW' if kind == 'view' else 'TABLE'} IF EXISTS {name}")
                self.memo.pop(name, None)
            for name in changed:  # tables first: a view may read them
                kind, _, ddl = after[name]
                if kind == "table":
                    self._table_out(name, ddl)
            views = [n for n in changed if after[n][0] == "view"]
            while views:  # a view over another view after it (a failed statement would
                # abort the transaction, so the order is worked out, not tried)
                ready = [v for v in views if not any(o != v and o in after[v][1] for o in views)]
                for name in ready or views:
                    self.con.execute(f"CREATE OR REPLACE VIEW {name} AS {after[name][1]}")
                views = [v for v in views if v not in (ready or views)]
        for name in changed:
            if after[name][0] == "table":
                self.memo[name] = _fingerprint(self.con, name)
        self.copied_out = changed
        self._save()

    def _table_out(self, name: str, ddl: str) -> None:
        schema, table = name.split(".")
        exists = self.con.execute("SELECT count(*) FROM information_schema.tables WHERE "
                                  "table_schema = ? AND table_name = ? AND table_catalog = "
                                  "current_database()", [schema, table]).fetchall()[0][0]
        data = self.engine.arrow(SqlStep("handover.out", f"SELECT * FROM {name}"))
        self.con.register("_tsr_handover", data)
        try:
            if not exists:
                self.con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
                if ddl:
                    self.con.execute(ddl)
                else:
                    self.con.execute(f"CREATE TABLE {name} AS FROM _tsr_handover LIMIT 0")
            self.con.execute(f"DELETE FROM {name}")
            self.con.execute(f"INSERT INTO {name} BY NAME SELECT * FROM _tsr_handover")
        finally:
            self.con.unregister("_tsr_handover")


@contextmanager
def on_spark(con: duckdb.DuckDBPyConnection, engine) -> Iterator[object]:
    """Run the block's stage on ``engine`` (a SparkEngine) between the two hand-overs."""
    handover = Handover(con, engine)
    handover.hand_in()
    before = engine.versions()
    yield engine
    handover.hand_out(before)
