"""The page reads the published snapshot only: every table its reads name must be one the
daily job publishes, or the page would silently show an empty tab."""

from __future__ import annotations

import re
from pathlib import Path

import tessera.web.queries as queries
from tessera.card.search import SEARCH_TABLE
from tessera.web.snapshot import READ_SCHEMAS, READ_TABLES, SOFT_DELETED, snapshot_root

SCHEMAS = ("core", "marts", "marketing", "ops", "staging", "predictions", "recommendations")


def test_every_table_the_page_reads_is_published():
    text = Path(queries.__file__).read_text(encoding="utf-8")
    named = set(re.findall(rf"\b((?:{'|'.join(SCHEMAS)})\.[a-z_]+)\b", text))
    named = {t for t in named if t.split(".")[0] not in READ_SCHEMAS}
    # ops.bulk_edits is read only on a warehouse with no snapshot (published as its outcome)
    missing = named - set(READ_TABLES) - {SOFT_DELETED, "ops.bulk_edits", SEARCH_TABLE}
    assert missing == set()
    assert SEARCH_TABLE in READ_TABLES


def test_the_snapshot_lives_beside_its_warehouse():
    assert snapshot_root("/data/a/warehouse.duckdb") == Path("/data/a/warehouse.web")


def test_day_kept_tables_publish_their_latest_day_and_no_sql_views(tmp_path):
    """The lists keep a week of days and the page shows a person's latest: only the
    latest day is copied (a week's copy grew the snapshot sevenfold), and the SQL views
    over the lists (another select of the same rows) are not copied at all."""
    import duckdb
    import pyarrow.parquet as pq

    from tessera.engine import as_engine
    from tessera.web.snapshot import publish

    wh = tmp_path / "warehouse.duckdb"
    con = duckdb.connect(str(wh))
    con.execute("CREATE SCHEMA recommendations; CREATE SCHEMA predictions")
    con.execute("""CREATE TABLE recommendations.contact_products AS
        SELECT * FROM (VALUES (DATE '2026-11-01', 'combined', 2, 1, 'p1', 1.0),
                              (DATE '2026-11-02', 'combined', 2, 1, 'p2', 1.0),
                              (DATE '2026-11-02', 'combined', 1, 1, 'p3', 1.0))
        AS t(as_of_date, kind, customer_id, rank, product_id, score)""")
    con.execute("""CREATE VIEW recommendations.combined AS SELECT * FROM recommendations.contact_products
        WHERE as_of_date = (SELECT max(as_of_date) FROM recommendations.contact_products)""")
    con.execute("""CREATE TABLE recommendations.evaluation AS
        SELECT * FROM (VALUES (DATE '2026-11-01', 0.5), (DATE '2026-11-02', 0.6)) AS t(as_of_date, ndcg)""")
    con.execute("""CREATE TABLE predictions.customer_predictions AS
        SELECT * FROM (VALUES (DATE '2026-11-01', 1, 1), (DATE '2026-11-02', 1, 2)) AS t(as_of_date, customer_id, p)""")
    con.execute("""CREATE TABLE recommendations.model_pairs AS
        SELECT * FROM (VALUES (DATE '2026-11-01', 'bought_together', 'p1', 'p2', 1.0)) AS t(trained_on, kind, a, b, score)""")
    out = publish(as_engine(con), wh)
    con.close()
    folder = Path(out["folder"])
    # the stored model is not the page's
    assert not (folder / "recommendations.model_pairs.parquet").exists()
    lists = pq.read_table(folder / "recommendations.contact_products.parquet").to_pylist()
    assert [(r["customer_id"], r["product_id"]) for r in lists] == [(1, "p3"), (2, "p2")]
    assert [r["p"] for r in pq.read_table(folder / "predictions.customer_predictions.parquet").to_pylist()] == [2]
    # not person rows: every day stays (the page picks the latest itself)
    assert pq.read_table(folder / "recommendations.evaluation.parquet").num_rows == 2
    assert not (folder / "recommendations.combined.parquet").exists()
