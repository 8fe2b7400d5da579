"""``tessera recommend-csv``: every kind and its back-test on orders (and views) given as CSV.

Why outside the warehouse: an acceptance check on someone else's basket data (orders
with products and dates only) must need no configuration folder and no code. The files
are loaded into a scratch DuckDB shaped like the warehouse tables the stage reads, and
the stage itself runs on it, so the figures are the pipeline's own.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click

from tessera.cli.common import DATE

_ORDERS = """CREATE OR REPLACE TABLE _orders_in AS
    SELECT CAST(customer_id AS VARCHAR) AS customer, CAST(order_id AS VARCHAR) AS order_id,
           CAST(order_date AS DATE) AS order_date, CAST(product_id AS VARCHAR) AS product_id
    FROM read_csv($path, header = true, all_varchar = true)"""
_VIEWS = """CREATE OR REPLACE TABLE _views_in AS
    SELECT CAST(customer_id AS VARCHAR) AS customer, CAST(viewed_at AS TIMESTAMP) AS viewed_at,
           CAST(product_id AS VARCHAR) AS product_id
    FROM read_csv($path, header = true, all_varchar = true)"""
_SHAPE = """
CREATE SCHEMA IF NOT EXISTS staging; CREATE SCHEMA IF NOT EXISTS core; CREATE SCHEMA IF NOT EXISTS marts;
CREATE OR REPLACE TABLE _ids AS
    SELECT customer, row_number() OVER (ORDER BY customer) AS customer_id
    FROM (SELECT customer FROM _orders_in UNION SELECT customer FROM _views_in);
CREATE OR REPLACE TABLE marts.contact_cards AS SELECT customer_id FROM _ids;
CREATE OR REPLACE TABLE staging.products AS
    SELECT DISTINCT product_id AS source_record_id FROM
    (SELECT product_id FROM _orders_in UNION SELECT product_id FROM _views_in);
CREATE OR REPLACE TABLE core.orders AS
    SELECT DISTINCT o.order_id, i.customer_id, o.order_date FROM _orders_in o JOIN _ids i USING (customer);
CREATE OR REPLACE TABLE staging.order_lines AS SELECT order_id, product_id FROM _orders_in;
CREATE OR REPLACE TABLE core.events AS
    SELECT i.customer_id, 'page_view' AS event_type, v.viewed_at AS occurred_at,
           CAST(json_object('product_id', v.product_id) AS VARCHAR) AS properties
    FROM _views_in v JOIN _ids i USING (customer)
"""


def load_csv(con, orders: Path, views: Path | None) -> None:
    """Shape the CSV files as the warehouse tables the recommendations stage reads
    (every customer gets a card; the catalogue is every product the files name)."""
    con.execute(_ORDERS, {"path": str(orders)})
    if views is None:
        con.execute("CREATE OR REPLACE TABLE _views_in "
                    "(customer VARCHAR, viewed_at TIMESTAMP, product_id VARCHAR)")
    else:
        con.execute(_VIEWS, {"path": str(views)})
    for stmt in (s.strip() for s in _SHAPE.split(";")):
        if stmt:
            con.execute(stmt)


@click.command("recommend-csv", short_help="Recommendations and their back-test from CSV files.")
@click.option("--orders", type=click.Path(exists=True, dir_okay=False), required=True,
              help="CSV with header customer_id,order_id,order_date,product_id (one line per product)")
@click.option("--views", type=click.Path(exists=True, dir_okay=False),
              help="optional CSV with header customer_id,viewed_at,product_id")
@click.option("--cutoff", type=DATE, required=True,
              help="first held-out day: purchases from it on are the test set")
@click.option("--settings", "settings_file", type=click.Path(exists=True, dir_okay=False),
              help="a recommendations.yaml (default: the built-in defaults)")
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="folder for recommendations.csv and evaluation.csv")
def recommend_csv(orders: str, views: str | None, cutoff: dt.date, settings_file: str | None,
                  out: str) -> int:
    """Build every kind on the orders before CUTOFF, score them on the orders from CUTOFF
    to the last order day against the best sellers, and write the lists as of the last day."""
    import duckdb

    from tessera.recommendations.daily import build_recommendations
    from tessera.settings.model import _RecommendationsFile
    from tessera.yamlfile import load_yaml

    settings = (_RecommendationsFile.model_validate(load_yaml(Path(settings_file)).data).recommendations
                if settings_file else _RecommendationsFile().recommendations)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(out_dir / "scratch.duckdb"))
    try:
        con.execute("SET temp_directory = ?", [str(out_dir / "tmp")])
        load_csv(con, Path(orders), Path(views) if views else None)
        last = con.execute("SELECT max(order_date) FROM core.orders").fetchone()[0]
        if last is None or last < cutoff:
            raise click.ClickException("no order on or after the cut-off")
        holdout = (last - cutoff).days + 1
        settings = settings.model_copy(update={"evaluation": settings.evaluation.model_copy(
            update={"enabled": True, "holdout_days": holdout})})
        stats = build_recommendations(con, settings, last)
        con.execute(f"""COPY (SELECT p.as_of_date, p.kind, i.customer, p.rank, p.product_id, p.score
            FROM recommendations.contact_products p JOIN _ids i USING (customer_id)
            ORDER BY p.kind, i.customer, p.rank) TO '{out_dir / "recommendations.csv"}' (HEADER)""")
        con.execute(f"""COPY (SELECT * FROM recommendations.evaluation ORDER BY mode, kind)
            TO '{out_dir / "evaluation.csv"}' (HEADER)""")
    finally:
        con.close()
    click.echo(f"trained before {cutoff}, held out {holdout} days to {last}; k={settings.evaluation.k}")
    click.echo(f"{'mode':<10} {'kind':<22} {'contacts':>8} {'hit':>7} {'prec':>7} {'recall':>7} "
               f"{'map':>7} {'ndcg':>7} {'cover':>7}")
    for r in stats["evaluation"]:
        click.echo(f"{r['mode']:<10} {r['kind']:<22} {r['contacts']:>8} {r['hit_rate']:>7.4f} "
                   f"{r['precision_at_k']:>7.4f} {r['recall_at_k']:>7.4f} {r['map_at_k']:>7.4f} "
                   f"{r['ndcg_at_k']:>7.4f} {r['coverage']:>7.4f}")
    click.echo(f"combination weights ({stats['weight_set']}): "
               + ", ".join(f"{k} {w:g}" for k, w in stats["weights"].items()))
    click.echo(f"lists: {stats['rows']} rows for {stats['contacts']} contacts -> {out_dir}")
    return 0


COMMANDS = [recommend_csv]
