"""The Spark resource: which engine the stages on the seam run on, and its session.

``engine: duckdb`` (the default): :meth:`SparkEngineResource.stage_engine` hands the stage
the DuckDB connection, as before. ``engine: spark``: one Spark session per process
(``getOrCreate``: the in-process executor's assets share it), a Spark engine over the
configured warehouse location, and the hand-over of :mod:`tessera.engine.handover`
around the stage. The master URL and the warehouse can come from the environment
(``dg.EnvVar``), the suppression key always does.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import dagster as dg

from tessera.engine import Engine, as_engine


class SparkEngineResource(dg.ConfigurableResource):
    enabled: bool = False
    master: str = "local[*]"
    warehouse: str = ""
    conf: dict[str, str] = {}
    suppression_key: str | None = None

    @contextmanager
    def stage_engine(self, con) -> Iterator[Engine]:
        """The engine a stage on the seam runs on; on Spark, the stage's tables are
        handed over before and after (a failing stage hands nothing back)."""
        if not self.enabled:
            yield as_engine(con)
            return
        from tessera.engine.handover import on_spark
        from tessera.engine.spark_engine import SparkEngine, spark_session

        session = spark_session(self.master, app_name="tessera", conf={
            "spark.ui.showConsoleProgress": "false", **self.conf})
        engine = SparkEngine(session, self.warehouse, hmac_key=self.suppression_key)
        try:
            with on_spark(con, engine) as spark_engine:
                yield spark_engine
        finally:
            engine.close()


def spark_resource(deployment, home_warehouse: str) -> SparkEngineResource:
    """The resource of a deployment: disabled unless ``engine: spark``."""
    import os

    if deployment is None or deployment.engine != "spark":
        return SparkEngineResource()
    spark = deployment.spark
    master = (dg.EnvVar("TESSERA_SPARK_MASTER") if os.environ.get("TESSERA_SPARK_MASTER")
              else spark.master)
    warehouse = (dg.EnvVar("TESSERA_SPARK_WAREHOUSE") if os.environ.get("TESSERA_SPARK_WAREHOUSE")
                 else str(Path(home_warehouse).parent / spark.warehouse) if spark.warehouse
                 else home_warehouse)  # a relative path is relative to the Tessera home
    return SparkEngineResource(enabled=True, master=master, warehouse=warehouse,
                               conf={k: str(v).lower() if isinstance(v, bool) else str(v)
                                     for k, v in spark.conf.items()},
                               suppression_key=dg.EnvVar("TESSERA_SUPPRESSION_KEY"))
