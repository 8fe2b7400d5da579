"""CRM annotations: ``core.notes`` and ``core.tasks`` linked to golden customers."""


import dagster as dg
from dagster_duckdb import DuckDBResource

from assets._common import POOL, table_metadata
from resources.spark import SparkEngineResource
from tessera.card.annotations import build_annotations
from tessera.settings import Deployment
from tessera.engine.warehouse import Timer

GROUP = "golden"


def build(deployment: Deployment):
    staged = [dg.AssetKey(["staging", t]) for e, t in (("note", "notes"), ("task", "tasks"))
              if deployment.sources_of(e)]
    if not staged:
        return [], []

    @dg.multi_asset(
        name="core_annotations", group_name=GROUP, pool=POOL,
        specs=[dg.AssetSpec(["core", "notes"], deps=[*staged, dg.AssetKey(["core", "customer_sources"])],
                            kinds={"duckdb"}, group_name=GROUP,
                            description="CRM notes (public or private to their author) with the customer "
                                        "they are about. Free text: never on cards or in feeds."),
               dg.AssetSpec(["core", "tasks"], deps=[*staged, dg.AssetKey(["core", "customer_sources"])],
                            kinds={"duckdb"}, group_name=GROUP,
                            description="CRM tasks with owner, due date, reminder and status, "
                                        "with the customer they are about.")])
    def annotations(warehouse: DuckDBResource, spark: SparkEngineResource):
        timer = Timer()
        with warehouse.get_connection() as con:
            with spark.stage_engine(con) as engine:
                stats = build_annotations(engine, deployment)
            notes = {k: v for k, v in stats.items() if k.startswith("notes")}
            tasks = {k: v for k, v in stats.items() if "tasks" in k}
            yield dg.MaterializeResult(asset_key=["core", "notes"],
                                       metadata=table_metadata(con, "core", "notes", timer.seconds, notes))
            yield dg.MaterializeResult(asset_key=["core", "tasks"],
                                       metadata=table_metadata(con, "core", "tasks", timer.seconds, tasks))

    @dg.asset_check(pool=POOL, asset=dg.AssetKey(["core", "notes"]), name="private_notes_stay_off_cards",
                    description="The contact card counts public notes only; no note text column "
                                "exists on the card.")
    def private_off_cards(warehouse: DuckDBResource):
        with warehouse.get_connection() as con:
            text_cols = con.execute("""SELECT count(*) FROM information_schema.columns
                                       WHERE table_schema = 'marts' AND table_name = 'contact_cards'
                                         AND column_name IN ('body', 'note', 'notes')""").fetchone()[0]
        return dg.AssetCheckResult(passed=text_cols == 0, metadata={"text_columns_on_card": int(text_cols)})

    return [annotations], [private_off_cards]
