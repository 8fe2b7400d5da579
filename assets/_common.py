"""Small helpers shared by the asset modules: metadata every asset reports."""


import threading
import time
from contextlib import contextmanager

import dagster as dg

from tessera.contracts import column_descriptions
from tessera.engine.warehouse import column_schema, count

POOL = "duckdb"  # every asset that writes the warehouse: one writer at a time
DAY_INPUTS = dg.AssetKey(["history", "days"])  # upstream of every partitioned asset


def _compile_dagster_records() -> None:
    """Build each Dagster record the asset bodies construct once, here, at import.

    A Dagster record compiles its checked constructor on its first call and keeps the
    caller's local variables in that function's namespace for the life of the process.
    A first call from an asset body (``dg.MaterializeResult(metadata=table_metadata(con,
    ...))``) kept that run's warehouse connection, and the DuckDB type objects it held,
    alive until the interpreter exited, where nanobind reported them as "leaked
    instances". This frame holds nothing worth keeping.
    """
    dg.MaterializeResult(metadata={"n": dg.MetadataValue.int(0), "x": dg.MetadataValue.float(0.0),
                                   "j": dg.MetadataValue.json({}), "m": dg.MetadataValue.md(""),
                                   "p": dg.MetadataValue.path("."), "b": dg.MetadataValue.bool(True),
                                   "u": dg.MetadataValue.url("http://127.0.0.1"),
                                   "t": dg.MetadataValue.text(""),
                                   "s": dg.TableSchema(columns=[dg.TableColumn(name="c", type="INTEGER")])})


_compile_dagster_records()


def day_inputs(con, day):
    """The engine a partitioned asset of ``day`` runs its stage on: the warehouse as it is
    for the newest recorded day, the day's recorded inputs for an earlier one (a backfill)."""
    from tessera.engine import as_engine
    from tessera.history import day_engine

    return day_engine(as_engine(con), day)


@contextmanager
def day_engine_of(spark, con, day):
    """The engine a partitioned stage of ``day`` runs on. With ``engine: spark``, the
    newest day runs on Spark (the stage between the two hand-overs); a backfill of an
    earlier day runs on DuckDB, because the recorded versions it reads as of its day
    (``history.*``) live in the DuckDB warehouse and are not handed over (copying every
    version of the cards, orders and events into Spark for each stage would cost more
    than the backfill). With ``engine: duckdb``, DuckDB as always."""
    from tessera.engine import as_engine
    from tessera.engine.overlay import OverlayEngine
    from tessera.history import day_engine

    local = day_engine(as_engine(con), day)
    if isinstance(local, OverlayEngine):
        yield local  # a backfill: the as-of overlay over DuckDB
        return
    with spark.stage_engine(con) as engine:
        yield day_engine(engine, day)


def table_metadata(con, schema: str, table: str, seconds: float, extra: dict | None = None,
                   where: str = "", params=None, entity: str | None = None,
                   descriptions: dict[str, str] | None = None) -> dict:
    """Row count, column schema and timing; ``extra`` holds counts only, never personal data.

    Each column is described from the table's published contract, the entity contract of
    its records (``entity``, or guessed from the table's name) and ``descriptions`` (a
    deployment's extended properties), so the UI's column list explains itself."""
    meta = {
        "dagster/row_count": count(con, f"{schema}.{table}", where, params),
        "dagster/column_schema": described_schema(con, schema, table, entity, descriptions),
        "dagster/table_name": f"{schema}.{table}",
        "duration_s": dg.MetadataValue.float(float(seconds)),
    }
    for k, v in (extra or {}).items():
        if isinstance(v, dict):
            meta[k] = dg.MetadataValue.json(v)
        elif isinstance(v, bool):
            meta[k] = dg.MetadataValue.bool(v)
        elif isinstance(v, int):
            meta[k] = dg.MetadataValue.int(v)
        elif isinstance(v, float):
            meta[k] = dg.MetadataValue.float(v)
        else:
            meta[k] = dg.MetadataValue.text(str(v))
    return meta


def described_schema(con, schema: str, table: str, entity: str | None = None,
                     descriptions: dict[str, str] | None = None) -> dg.TableSchema:
    """The table's columns with their types and descriptions (see ``table_metadata``)."""
    described = column_descriptions(f"{schema}.{table}", entity, descriptions)
    return dg.TableSchema(columns=[dg.TableColumn(name=n, type=t, description=described.get(n))
                                   for n, t in column_schema(con, schema, table)])


def published_contract_problems(con, table: str, switched_off: set[str] | frozenset = frozenset()) -> list[str]:
    """What ``table`` lacks of its contract in ``data_contracts/published/``: each missing
    column, or a column whose type is not the promised one. A base property the deployment
    switched off is absent by design, not a problem."""
    from tessera.contracts import published_contracts

    schema, name = table.split(".")
    spec = published_contracts()[table]
    have = dict(column_schema(con, schema, name))
    problems = [f"{c.name}: missing" for c in spec.columns
                if c.name not in have and c.name not in switched_off]
    problems += [f"{c.name}: {have[c.name]} instead of {c.type}" for c in spec.columns
                 if c.name in have and have[c.name] != c.type]
    return problems


def markdown_counts(title: str, rows: list[tuple]) -> dg.MetadataValue:
    """An aggregate preview (counts by a category): safe to show, unlike sample rows."""
    lines = [f"| {title} | count |", "| --- | ---: |"]
    lines += [f"| {k if k is not None else '(empty)'} | {v} |" for k, v in rows]
    return dg.MetadataValue.md("\n".join(lines))


def report_swept_temps(context, stats: dict, meta: dict) -> None:
    """Say how many stale temporaries (left by killed exports) the export removed."""
    files, size = stats.get("stale_temp_files", 0), stats.get("stale_temp_bytes", 0)
    meta["stale_temp_files_removed"] = dg.MetadataValue.int(files)
    meta["stale_temp_bytes_removed"] = dg.MetadataValue.int(size)
    if files:
        context.log.info(f"removed {files} stale temporary file(s), {size} bytes, left by "
                         "killed exports")


HEARTBEAT_S = 20.0


@contextmanager
def heartbeat(context, con, what: str, every_s: float = HEARTBEAT_S):
    """While a long step runs, log every ``every_s`` seconds that it still does, with
    DuckDB's estimate of the running statement's progress: a 1 GB file load is not
    silent for minutes. Counts and percentages only."""
    stop = threading.Event()
    start = time.perf_counter()
    # DuckDB estimates a statement's progress only with its progress bar on (not printed)
    con.execute("SET enable_progress_bar = true; SET enable_progress_bar_print = false")

    def beat() -> None:
        while not stop.wait(every_s):
            try:
                pct = con.query_progress()
            except Exception:  # noqa: BLE001 - a progress estimate is never worth a failure
                pct = -1
            done = f"; current statement about {pct:.0f} % done" if pct is not None and pct >= 0 else ""
            context.log.info(f"{what}: still running after {time.perf_counter() - start:.0f} s{done}")

    thread = threading.Thread(target=beat, name=f"heartbeat {what}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
