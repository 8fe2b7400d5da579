"""The ``udf:`` names of :data:`tessera.engine.dialect.SPARK_EQUIVALENTS` as pandas UDFs.

Why a module without ``from __future__ import annotations``: PySpark reads the
``pd.Series`` type hints at registration to pick the UDF kind, and needs them as
objects. Each UDF takes one Arrow batch per call; the work itself is
:mod:`tessera.engine.spark_functions` (checked against DuckDB in tests/spark/).
"""

import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import DoubleType, StringType

from tessera.engine import spark_functions as fns


def _values(s: pd.Series) -> list:
    return [v if isinstance(v, str) else None for v in s.astype(object)]


@pandas_udf(StringType())
def tessera_strip_accents(s: pd.Series) -> pd.Series:
    return pd.Series(fns.strip_accents_many(_values(s)), dtype=object)


@pandas_udf(DoubleType())
def tessera_jaro_winkler(a: pd.Series, b: pd.Series) -> pd.Series:
    return pd.Series(fns.jaro_winkler_many(_values(a), _values(b)))


@pandas_udf(StringType())
def strftime_to_java(s: pd.Series) -> pd.Series:
    return pd.Series([None if v is None else fns.strftime_to_java(v) for v in _values(s)], dtype=object)


def _hmac_udf(key: str):
    @pandas_udf(StringType())
    def tessera_hmac(s: pd.Series) -> pd.Series:
        return pd.Series([fns.suppression_hmac(key, v) for v in _values(s)], dtype=object)

    return tessera_hmac


def register_udfs(spark: SparkSession, hmac_key: str | None) -> None:
    spark.udf.register("tessera_strip_accents", tessera_strip_accents)
    spark.udf.register("tessera_jaro_winkler", tessera_jaro_winkler)
    spark.udf.register("strftime_to_java", strftime_to_java)
    if hmac_key:  # without a key, a step that needs the HMAC fails on the missing function
        spark.udf.register("tessera_hmac", _hmac_udf(hmac_key))
