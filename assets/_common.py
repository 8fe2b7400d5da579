"""Small helpers shared by the asset modules: metadata every asset reports."""


import dagster as dg

from tessera.engine.warehouse import column_schema, count

POOL = "duckdb"  # every asset that writes the warehouse: one writer at a time


def table_metadata(con, schema: str, table: str, seconds: float, extra: dict | None = None,
                   where: str = "", params=None) -> dict:
    """Row count, column schema and timing; ``extra`` holds counts only, never personal data."""
    cols = column_schema(con, schema, table)
    meta = {
        "dagster/row_count": count(con, f"{schema}.{table}", where, params),
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(name=n, type=t) for n, t in cols]),
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
