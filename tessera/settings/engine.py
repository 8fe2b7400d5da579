"""Engine settings: which engine runs the stages on the seam, and the Spark session's.

Why a per-deployment switch and not a per-stage one: the point of the seam is that a data
engineer moves a deployment from DuckDB to Spark in one line and gets the same tables; the
stages that are not on Spark yet say so in docs/ARCHITECTURE.md, not in configuration.
"""

from __future__ import annotations

from typing import Literal

from tessera.settings.base import _Strict


class SparkSettings(_Strict):
    """``spark:`` in tessera.yaml (read only when ``engine: spark``).

    ``TESSERA_SPARK_MASTER`` and ``TESSERA_SPARK_WAREHOUSE``, when set, override ``master``
    and ``warehouse`` (bound as ``dg.EnvVar``, so a cluster's URL stays out of the YAML)."""

    master: str = "local[*]"            # local[*], spark://host:7077, yarn, ...
    warehouse: str | None = None        # default: <TESSERA_HOME>/spark_warehouse
    conf: dict[str, str | int | float | bool] = {}  # extra Spark conf (spark.sql.shuffle.partitions: 8)


EngineName = Literal["duckdb", "spark"]
