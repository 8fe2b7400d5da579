"""Batch expectations on every staging table, materialised with Dagster over real files.

A blocking expectation that fails stops identity resolution in the same run; a reported
one is recorded and lets the run go on. Thresholds come from tessera.yaml.
"""

from __future__ import annotations

import textwrap

import dagster as dg

from pipelines.definitions import build_assets, build_resources
from tessera.deployment import load_deployment
from tessera.engine.warehouse import connect

TESSERA_YAML = """
deployment: test
nodes: [{name: erp}, {name: shop}]
tree:
  priority: [erp, shop]
expectations:
  contact:
    null_rates:
      email: {max_share: 0.25, blocking: true}
  product:
    null_rates:
      description: {max_share: 0.1}
"""

SOURCES_YAML = """
sources:
  - name: erp_people
    entity: contact
    node: erp
    format: csv
    path: "erp/*.csv"
    csv: {delimiter: ",", encoding: utf-8}
    columns: {source_record_id: id, erp_id: id, last_name: last, email: email}
  - name: shop_products
    entity: product
    node: shop
    format: csv
    path: "shop/*.csv"
    csv: {delimiter: ",", encoding: utf-8}
    columns: {source_record_id: id, description: descr}
"""


def _run(tmp_path, people: str):
    config = tmp_path / "config"
    config.mkdir(exist_ok=True)
    (config / "tessera.yaml").write_text(TESSERA_YAML)
    (config / "sources.yaml").write_text(SOURCES_YAML)
    landing = tmp_path / "landing"
    for rel, text in (("erp/people.csv", people),
                      ("shop/products.csv", "id,descr\nP1,Scarpe\nP2,\nP3,\nP4,Borsa\n")):
        (landing / rel).parent.mkdir(parents=True, exist_ok=True)
        (landing / rel).write_text(textwrap.dedent(text))
    assets, checks = build_assets(load_deployment(config))
    selection = dg.AssetSelection.groups("ingestion", "staging", "identity")
    result = dg.materialize([*assets, *checks], selection=selection,
                            resources=build_resources(tmp_path / "wh.duckdb", landing, tmp_path / "feeds"),
                            instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    checks_out = {e.check_name: e.passed
                  for e in result.get_asset_check_evaluations()}
    materialised = {"/".join(e.asset_key.path) for e in result.get_asset_materialization_events()}
    con = connect(tmp_path / "wh.duckdb")
    try:
        rows = con.execute(
            "SELECT table_name, column_name, blocking, success, unexpected_count "
            "FROM ops.expectation_results WHERE expectation = 'expect_column_values_to_not_be_null' "
            "AND column_name <> 'source_record_id' ORDER BY table_name").fetchall()
    finally:
        con.close()
    return checks_out, materialised, rows


def test_a_failed_blocking_expectation_stops_identity(tmp_path):
    checks, materialised, rows = _run(tmp_path, """\
        id,last,email
        E1,Rossi,mario@x.it
        E2,Bianchi,
        E3,Verdi,
        E4,Neri,neri@x.it
        """)
    assert checks["contacts_pass_batch_expectations"] is False
    assert checks["products_pass_batch_expectations"] is True   # its failure is reported only
    assert "staging/contacts" in materialised and "staging/products" in materialised
    assert not any(k.startswith("core/") for k in materialised)  # identity did not run
    assert rows == [("staging.contacts", "email", True, False, 2),
                    ("staging.products", "description", False, False, 2)]


def test_identity_runs_when_the_blocking_expectations_hold(tmp_path):
    checks, materialised, rows = _run(tmp_path, """\
        id,last,email
        E1,Rossi,mario@x.it
        E2,Bianchi,anna@x.it
        E3,Verdi,
        E4,Neri,neri@x.it
        """)
    assert checks["contacts_pass_batch_expectations"] is True
    assert "core/customer_sources" in materialised
    assert rows[0] == ("staging.contacts", "email", True, True, 1)


def test_expectations_run_in_the_warehouse_with_exact_counts():
    """GX's SQL engine on a cursor of the run's connection: row count, nulls (an empty
    string is not null), repeated keys across sources, a mostly-threshold, and a compound
    key with a NULL part not counted as a repeat (the not-null expectation fails on it)."""
    import duckdb

    from tessera.ingest.expectations import entity_expectations, validate
    from tessera.settings import EntityExpectations
    from tessera.settings.sources import NullRate

    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT * FROM (VALUES ('web', '1', 'a@x'), ('web', '1', NULL), "
                "('app', '1', ''), ('web', NULL, 'b@x'), ('web', NULL, NULL), ('app', '2', 'c@x'), "
                "('web', 'Ł', 'e@x'), ('web', 'L', NULL)) AS v(source, source_record_id, email)")
    settings = EntityExpectations(null_rates={"email": NullRate(max_share=0.4)})
    out = validate(con, "SELECT source, source_record_id, email FROM t",
                   entity_expectations("contact", settings, 20))
    got = {(o.expectation, o.column): (o.success, o.element_count, o.unexpected_count) for o in out}
    assert got == {
        ("expect_table_row_count_to_be_between", None): (False, None, None),   # 8 rows, floor 10
        ("expect_column_values_to_not_be_null", "source_record_id"): (False, 8, 2),
        ("expect_compound_columns_to_be_unique", "source,source_record_id"): (False, 8, 2),
        ("expect_column_values_to_not_be_null", "email"): (True, 8, 3),
    }, got
    row_count = next(o for o in out if o.column is None)
    assert row_count.observed_value == 8
