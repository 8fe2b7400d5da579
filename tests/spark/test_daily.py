"""The daily job with ``engine: spark``: the same generated sample through the whole
chain, the stages on the seam on local Spark (hand-over before and after each), and the
key tables compared row for row with the all-DuckDB run of the same sample.

Columns holding the wall-clock time of a run (or its Dagster run id) differ between two
runs on any engine and are left out."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.conftest import AS_OF, DEMO_CONFIG, PipelineEnv
from tests.spark.conftest import differences

# Opt-in (TESSERA_SPARK_DAILY=1): a run takes ~20 minutes on the shared 2-core machine.
# Its run of 2026-12-06 found identity, lineage, orders and events identical, consent short
# of raw.* (handed over since) and the B2B registry's count(DISTINCT) OVER refused by Spark
# (its assets are back on DuckDB); the next run stopped on a UBIGINT column of raw.*
# (handled since, not re-run); see docs/ARCHITECTURE.md. Its run of 2026-12-06 17:05 UTC, with
# the contact card and the companies on Spark too, passed in 19 min 18 s (load 10-20). Its run
# of 2026-12-07 06:17 UTC (every stage of the sixth increment, ORDER_AVG in exact cents, the
# 43 key tables and the feed files) passed in 24 min 17 s at nice 19 beside a benchmark.
pytestmark = [
    pytest.mark.spark,
    pytest.mark.skipif(not os.environ.get("TESSERA_SPARK_DAILY"),
                       reason="opt-in: TESSERA_SPARK_DAILY=1 (about 20 minutes; see the comment)"),
]

def _demo_feeds():
    from tessera.deployment import load_deployment

    return load_deployment(DEMO_CONFIG).feeds


# table -> columns left out (the run's clock and id)
KEY_TABLES = {
    "core.customer_sources": ("resolved_at",),
    "core.identity_links": ("linked_at",),
    "core.merge_log": ("run_id", "logged_at"),
    "core.refused_merges": ("refused_at",),
    "core.customers": ("updated_at", "golden_built_at"),
    "core.customer_field_lineage": ("decided_at",),
    "core.orders": (),
    "marts.contact_cards": ("golden_built_at",),
    "marketing.rfm_scores": (),
    "marketing.scores": (),
    "marketing.score_actions": (),
    "marketing.stages": (),
    "marketing.stage_history": (),
    "marketing.funnel_daily": (),
    "marketing.segment_members": (),
    "marketing.segment_history": (),
    "marketing.static_segment_base": (),
    "marketing.stage_runs": (),
    "ops.segment_runs": ("built_at",),
    "core.consent_events": ("occurred_at",),  # an import flag dates from its load
    "core.consents": ("since",),  # from an import flag: its load time
    "core.events": (),
    "core.company_sources": ("resolved_at",),
    "core.companies": ("golden_built_at",),
    "core.company_field_lineage": ("decided_at",),
    "core.company_contacts": (),
    # issue 17, fifth increment: predictions, recommendations, the potential registry and
    # the feeds' selection and diffs run on Spark in the daily job too
    "predictions.customer_predictions": (),
    "predictions.accuracy": (),
    "predictions.model_parameters": (),
    "recommendations.contact_products": (),
    "recommendations.evaluation": (),
    "recommendations.unknown_products": (),
    "core.potential_companies": ("registered_at",),
    "marts.coworkers": (),
    "exports.feed_files": (),  # the files' names, rows and SHA-256: byte-identical files
    "exports.feed_deliveries": ("file", "written_at"),
    **{f"exports.{f.name}": () for f in _demo_feeds()},  # the stored state, digests included
}


@pytest.fixture(scope="module")
def spark_run(spark, duck_daily, tmp_path_factory):
    """The same sample through the daily job with ``engine: spark`` in tessera.yaml."""
    from tessera.sampledata.generator import generate

    root = tmp_path_factory.mktemp("spark_daily")
    config = root / "config"
    shutil.copytree(DEMO_CONFIG, config)
    with (config / "tessera.yaml").open("a", encoding="utf-8") as f:
        f.write(f"\nengine: spark\nspark:\n  master: local[2]\n  warehouse: {root / 'spark_wh'}\n"
                "  conf: {spark.sql.shuffle.partitions: 2}\n")
    env = PipelineEnv(root / "run", config=config)
    generate(env.landing, contacts=150, seed=7, as_of=AS_OF)
    result = env.run_daily()
    assert result.success, [e.message for e in result.all_events if e.is_failure][:3]
    return env, root / "spark_wh"


def test_the_daily_job_on_spark_gives_the_duckdb_tables(duck_daily, spark_run):
    from tessera.engine import DuckDBEngine

    env, _ = spark_run
    duck = duck_daily.connect()
    on_spark = env.connect()
    try:
        diff = differences(DuckDBEngine(duck), DuckDBEngine(on_spark), KEY_TABLES)
        sizes = {t: on_spark.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in KEY_TABLES}
    finally:
        duck.close()
        on_spark.close()
    assert diff == {}
    assert sizes["core.customers"] > 0 and sizes["marketing.segment_members"] > 0


def test_the_stages_ran_on_spark(spark_run):
    """The Spark warehouse holds the stages' outputs (Parquet versions in its catalog) and
    the hand-over memo: the rows did go through Spark, not around it."""
    import json

    _, warehouse = spark_run
    catalog = json.loads((warehouse / "_tessera_catalog.json").read_text())
    for table in ("core.customer_sources", "core.customers", "core.orders", "core.companies",
                  "core.company_contacts", "marts.contact_cards",
                  "marketing.rfm_scores", "marketing.scores", "marketing.stages",
                  "marketing.segment_members", "predictions.customer_predictions",
                  "recommendations.contact_products", "core.potential_companies"):
        assert catalog[table]["path"].startswith(table.replace(".", "/") + "/v-"), table
    assert (warehouse / "_tessera_handover.json").exists()
