"""Dagster assets and checks, one module per CDP stage.

Each module exposes ``build(deployment) -> (assets, checks)``; ``pipelines/definitions``
loads every module of this package, so nothing is listed by hand. Asset key = table:
the key prefix is the DuckDB schema (layer), the group is the stage.
"""
