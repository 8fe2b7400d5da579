"""Snapshot of the Definitions: a renamed asset, group or check shows up as a diff.

Update after an intended change with: TESSERA_UPDATE_SNAPSHOTS=1 make test
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.conftest import DEMO_CONFIG, PipelineEnv

SNAPSHOT = Path(__file__).parent / "snapshots" / "definitions.json"


def _snapshot(tmp_path) -> dict:
    defs = PipelineEnv(tmp_path, DEMO_CONFIG).definitions()
    repo = defs.get_repository_def()
    graph = repo.asset_graph
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "partitioned": node.partitions_def is not None,
            "deps": sorted(p.to_user_string() for p in node.parent_keys),
        }
    checks = sorted(
        f"{ck.asset_key.to_user_string()}:{ck.name}:{'blocking' if graph.get(ck).blocking else 'non-blocking'}"
        for ck in graph.asset_check_keys)
    return {
        "assets": assets,
        "checks": checks,
        "jobs": sorted(j.name for j in repo.get_all_jobs() if not j.name.startswith("__")),
        "schedules": sorted(s.name for s in repo.schedule_defs),
        "sensors": sorted(s.name for s in repo.sensor_defs),
    }


def test_definitions_match_snapshot(tmp_path):
    current = _snapshot(tmp_path)
    if os.environ.get("TESSERA_UPDATE_SNAPSHOTS") or not SNAPSHOT.exists():
        SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    assert current == json.loads(SNAPSHOT.read_text())


def test_every_layer_has_a_check(tmp_path):
    snap = _snapshot(tmp_path)
    checked_layers = {c.split("/")[0] for c in snap["checks"]}
    layers = {k.split("/")[0] for k in snap["assets"]}
    assert layers <= checked_layers, layers - checked_layers


def test_asset_key_prefix_is_a_warehouse_layer(tmp_path):
    from tessera.engine.warehouse import LAYERS

    for key in _snapshot(tmp_path)["assets"]:
        assert key.split("/")[0] in LAYERS


def test_schedule_is_off_by_default(tmp_path):
    import dagster as dg

    defs = PipelineEnv(tmp_path, DEMO_CONFIG).definitions()
    sched = defs.resolve_schedule_def("daily_schedule")
    assert sched.default_status == dg.DefaultScheduleStatus.STOPPED


def test_every_step_of_the_daily_job_is_in_the_duckdb_pool(tmp_path):
    """DuckDB allows one writer: every step of daily_job (assets and asset checks alike)
    opens the warehouse, so every one must be in the pool of 1 (a check outside it hit
    "Could not set lock on file" while another run wrote)."""
    from assets._common import POOL

    job = PipelineEnv(tmp_path, DEMO_CONFIG).definitions().resolve_job_def("daily_job")
    plan_steps = [node.definition for node in job.graph.nodes]
    assert len(plan_steps) > 50
    outside = sorted(d.name for d in plan_steps if d.pool != POOL)
    assert outside == []
