"""The one Definitions object: built by loading every module of ``assets``.

This is the only place where the environment is read (TESSERA_CONFIG, TESSERA_HOME and
the per-path overrides, resolved by ``tessera.settings.paths``, which the command line
shares); asset bodies receive resources and never branch on it.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from pathlib import Path

import dagster as dg

import assets as assets_pkg
from pipelines.jobs import daily_job
from pipelines.progress import progress_logger
from pipelines.schedules import daily_schedule
from pipelines.sensors import build_landing_sensor, dead_runs_sensor
from resources import (ApiCredentials, FeedStore, LandingZone, PrivacySettings, resource_key,
                       spark_resource, warehouse_resource)
from tessera.settings import Deployment
from tessera.deployment import load_deployment
from tessera.settings.paths import tessera_paths


def load_stage_modules():
    for info in sorted(pkgutil.iter_modules(assets_pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{assets_pkg.__name__}.{info.name}")
        if hasattr(module, "build") or hasattr(module, "build_last"):
            yield module


def build_assets(deployment: Deployment) -> tuple[list, list]:
    """Every asset and asset check of every stage module, for one deployment. A module
    with ``build_last(deployment, keys)`` instead of ``build`` is built after the others,
    with their asset keys (an asset that must run at the end of the day, after them)."""
    all_assets, all_checks = [], []
    modules = list(load_stage_modules())
    for module in [m for m in modules if hasattr(m, "build")]:
        a, c = module.build(deployment)
        all_assets.extend(a)
        all_checks.extend(c)
    upstream = [key for a in all_assets for key in a.keys]
    for module in [m for m in modules if not hasattr(m, "build")]:
        a, c = module.build_last(deployment, upstream)
        all_assets.extend(a)
        all_checks.extend(c)
    return all_assets, all_checks


def build_resources(warehouse: Path, landing: Path, feeds: Path,
                    memory_limit: str | None = None, deployment: Deployment | None = None,
                    hold_file: str | None = None) -> dict:
    resources = {
        # an explicit memory_limit (a benchmark's) wins over the deployment's warehouse: settings
        "warehouse": warehouse_resource(
            str(warehouse), memory_limit or (deployment.warehouse.memory_limit if deployment else None),
            hold_file, deployment.warehouse.temp_directory if deployment else None),
        "landing": LandingZone(root=str(landing)),
        "feeds": FeedStore(root=str(feeds)),
        "privacy": PrivacySettings(suppression_key=dg.EnvVar("TESSERA_SUPPRESSION_KEY")),
        # engine: spark runs the stages on the seam on Spark (resources/spark.py)
        "spark": spark_resource(deployment, str(Path(warehouse).parent / "spark_warehouse")),
    }
    # API tokens: only the environment variable's name is stored (dg.EnvVar).
    for source in (deployment.sources if deployment else []):
        if source.format == "api":
            env = source.api.token_env
            resources[resource_key(source.name)] = (
                ApiCredentials(token=dg.EnvVar(env)) if env else ApiCredentials())
    return resources


def build_definitions(deployment: Deployment, warehouse: Path, landing: Path, feeds: Path,
                      memory_limit: str | None = None, hold_file: str | None = None) -> dg.Definitions:
    all_assets, all_checks = build_assets(deployment)
    return dg.Definitions(
        assets=all_assets,
        asset_checks=all_checks,
        jobs=[daily_job],
        schedules=[daily_schedule],
        sensors=[build_landing_sensor(deployment, landing), dead_runs_sensor],
        # console: Dagster's default; progress: named by `tessera run`'s run config only
        loggers={"console": dg.colored_console_logger, "progress": progress_logger},
        resources=build_resources(warehouse, landing, feeds, memory_limit, deployment, hold_file),
    )


def defs_from_env() -> dg.Definitions:
    paths = tessera_paths()
    deployment = load_deployment(paths["config"])
    # TESSERA_TEST_HOLD: a test hook that pauses every warehouse connection (resources/warehouse.py)
    # TESSERA_MEMORY_LIMIT / TESSERA_TEMP_DIRECTORY are read where limits resolve
    # (tessera.engine.warehouse.warehouse_limits), over tessera.yaml's warehouse: settings
    return build_definitions(deployment, paths["warehouse"], paths["landing"], paths["feeds"],
                             None, os.environ.get("TESSERA_TEST_HOLD"))


defs = defs_from_env()
