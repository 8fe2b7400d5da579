"""Faults as an operator meets them, through the real CLI in subprocesses: a run killed
with SIGKILL at known points, then run again; two daily runs started together.

Deterministic points: ``TESSERA_TEST_HOLD`` makes every warehouse connection of a run
wait while a file exists (the run then holds its turn and the pool slot of its first
step); a kill in the export step waits for that step's start event in run storage.
Waits are bounded; nothing asserts on durations.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from pipelines import runs
from tessera.sampledata.generator import generate
from tests.conftest import AS_OF, DEMO_CONFIG, PROJECT_ROOT

RUN_TIMEOUT_S = 900
# Tables that log each run (one row per batch), not data: a killed run may leave its rows.
# the change log of core.events and the linkage check's state log each build and check too
PER_RUN_TABLES = {"ops.expectation_results", "history.runs", "ops.staging_check_verdicts", "ops.events_changes",
                  "ops.events_check_state"}


@pytest.fixture(scope="module")
def landing(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fault_sample") / "landing"
    generate(root, contacts=30, seed=3, as_of=AS_OF)
    return root


def new_home(tmp_path_factory, landing: Path, name: str) -> Path:
    home = tmp_path_factory.mktemp(name)
    shutil.copytree(landing, home / "landing")
    return home


def start_run(home: Path, tag: str, hold: Path | None = None, **extra: str) -> subprocess.Popen:
    env = {**os.environ, "TESSERA_HOME": str(home), "TESSERA_CONFIG": str(DEMO_CONFIG),
           "DAGSTER_HOME": str(home / "dagster_home"), "TESSERA_SUPPRESSION_KEY": "fault-test-key"}
    for var in ("TESSERA_WAREHOUSE", "TESSERA_LANDING", "TESSERA_FEEDS", "TESSERA_TEST_HOLD"):
        env.pop(var, None)
    if hold is not None:
        env["TESSERA_TEST_HOLD"] = str(hold)
    env.update(extra)
    out = open(home / f"{tag}.out", "w")
    err = open(home / f"{tag}.err", "w")
    return subprocess.Popen([sys.executable, "-c", "import sys; from tessera.cli import main; sys.exit(main())",
                             "run", "--date", AS_OF.isoformat()],
                            cwd=PROJECT_ROOT, env=env, stdout=out, stderr=err)


def wait_for(predicate, what: str, timeout: float = RUN_TIMEOUT_S, procs=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        for p in procs:
            assert p.poll() is None, f"process ended (rc {p.returncode}) before {what}"
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def kill9(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)


def instance_of(home: Path) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(str(home / "dagster_home"))


def run_ids(home: Path) -> list[str]:
    if not (home / "dagster_home" / "dagster.yaml").exists():
        return []
    with instance_of(home) as inst:
        return [r.run_id for r in reversed(inst.get_runs())]  # oldest first


def table_counts(warehouse: Path) -> dict[str, int]:
    """Rows per table, except the tables that log each run."""
    from tessera.engine.warehouse import connect

    con = connect(warehouse, read_only=True)
    try:
        tables = con.execute("SELECT table_schema, table_name FROM information_schema.tables "
                             "WHERE table_type = 'BASE TABLE' ORDER BY 1, 2").fetchall()
        counts = {f"{s}.{t}": con.execute(f'SELECT count(*) FROM "{s}"."{t}"').fetchone()[0]
                  for s, t in tables if f"{s}.{t}" not in PER_RUN_TABLES}
        # a version table appears, empty, on the first day its input exists (the segment
        # overrides only from a second completed run on): its absence is not a lost row
        return {k: n for k, n in counts.items() if n or not k.startswith("history.")}
    finally:
        con.close()


def step_started(home: Path, run_id: str, prefix: str) -> bool:
    with instance_of(home) as inst:
        return any(e.step_key and e.step_key.startswith(prefix)
                   for e in inst.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START))


def assert_feeds_whole(home: Path) -> None:
    """Every manifest names a whole file; no temporary file is left in the feed folders."""
    feeds = home / "feeds"
    manifests = list(feeds.glob("*/*.manifest.json"))
    assert manifests
    for m in manifests:
        meta = json.loads(m.read_text())
        if meta.get("file"):
            data = m.parent / meta["file"]
            assert hashlib.sha256(data.read_bytes()).hexdigest() == meta["sha256"]
    assert sorted(p.name for p in feeds.glob("*/.*")) == []


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, landing):
    """Start a run and hold it in its first step, start a second, let the first go."""
    home = new_home(tmp_path_factory, landing, "concurrent")
    hold = home / "hold"
    hold.touch()
    first = start_run(home, "first", hold)
    second = None
    try:
        wait_for(lambda: (home / "hold.reached").exists(), "the first run's first step", procs=[first])
        first_id = run_ids(home)[0]
        second = start_run(home, "second")
        wait_for(lambda: "waiting for the warehouse" in (home / "second.err").read_text(),
                 "the second run to say it waits", procs=[first, second])
        # the second run waits before creating anything; the first holds the duckdb pool
        ids_while_waiting = run_ids(home)
        with instance_of(home) as inst:
            pool_while_waiting = inst.event_log_storage.get_concurrency_info(runs.POOL)
        hold.unlink()
        rc_first = first.wait(timeout=RUN_TIMEOUT_S)
        rc_second = second.wait(timeout=RUN_TIMEOUT_S)
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                kill9(p)
    return {"home": home, "first_id": first_id, "ids_while_waiting": ids_while_waiting,
            "pool_while_waiting": pool_while_waiting, "rc": (rc_first, rc_second),
            "second_err": (home / "second.err").read_text()}


def test_two_concurrent_runs_both_succeed_one_after_the_other(two_runs):
    home, first_id = two_runs["home"], two_runs["first_id"]
    assert two_runs["rc"] == (0, 0), (home / "first.err").read_text()[-2000:] + two_runs["second_err"][-2000:]
    assert two_runs["ids_while_waiting"] == [first_id]
    assert {s.run_id for s in two_runs["pool_while_waiting"].claimed_slots} == {first_id}
    waited = [ln for ln in two_runs["second_err"].splitlines() if "waiting for the warehouse" in ln]
    assert waited and first_id in waited[0]
    assert "Could not set lock" not in two_runs["second_err"]
    ids = run_ids(home)
    assert len(ids) == 2 and ids[0] == first_id
    with instance_of(home) as inst:
        assert [inst.get_run_by_id(i).status for i in ids] == [dg.DagsterRunStatus.SUCCESS] * 2
        first_end = inst.all_logs(ids[0], of_type=dg.DagsterEventType.RUN_SUCCESS)[-1].timestamp
        second_steps = inst.all_logs(ids[1], of_type=dg.DagsterEventType.STEP_START)
        assert second_steps and min(e.timestamp for e in second_steps) >= first_end
        assert inst.event_log_storage.get_concurrency_info(runs.POOL).claimed_slots == []


def test_killed_runs_never_block_the_next_and_leave_the_tables_whole(tmp_path_factory, landing, two_runs):
    home = new_home(tmp_path_factory, landing, "killed")
    # 1. kill -9 inside ingestion: the first step holds the pool slot and the warehouse
    hold = home / "hold"
    hold.touch()
    proc = start_run(home, "kill_ingest", hold)
    try:
        wait_for(lambda: (home / "hold.reached").exists(), "the ingestion step", procs=[proc])
    finally:
        kill9(proc)
    hold.unlink()
    killed_ingest = run_ids(home)[0]
    with instance_of(home) as inst:
        assert inst.get_run_by_id(killed_ingest).status == dg.DagsterRunStatus.STARTED
        assert inst.event_log_storage.get_concurrency_info(runs.POOL).claimed_slots  # stuck

    # 2. kill -9 once an export step has started
    proc = start_run(home, "kill_export")
    try:
        wait_for(lambda: len(run_ids(home)) == 2, "the second run", procs=[proc])
        killed_export = run_ids(home)[1]
        wait_for(lambda: step_started(home, killed_export, "exports__"), "an export step", procs=[proc])
    finally:
        kill9(proc)

    # 3. run again: it closes the dead run, finishes unaided, the tables are as after a clean run
    proc = start_run(home, "rerun")
    try:
        rc = proc.wait(timeout=RUN_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            kill9(proc)
    err = (home / "rerun.err").read_text()
    assert rc == 0, err[-3000:]
    assert f"closed dead run {killed_export}" in err
    with instance_of(home) as inst:
        for run_id in (killed_ingest, killed_export):
            assert inst.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
            failure = inst.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)[-1]
            assert runs.DEAD_RUN_REASON in failure.dagster_event.message
        assert inst.event_log_storage.get_concurrency_info(runs.POOL).claimed_slots == []
    assert table_counts(home / "warehouse.duckdb") == table_counts(two_runs["home"] / "warehouse.duckdb")
    assert_feeds_whole(home)


def test_a_full_warehouse_disk_is_named_and_a_rerun_after_freeing_space_succeeds(
        tmp_path_factory, landing, two_runs, small_fs):
    home = new_home(tmp_path_factory, landing, "full")
    fs = small_fs("3m", "warehouse_fs")  # the warehouse alone outgrows it during ingestion
    warehouse = fs / "warehouse.duckdb"
    proc = start_run(home, "full", TESSERA_WAREHOUSE=str(warehouse))
    rc = proc.wait(timeout=RUN_TIMEOUT_S)
    err = (home / "full.err").read_text()
    assert rc != 0
    named = [ln for ln in err.splitlines() if ln.startswith("step ") and "failed" in ln]
    assert named and "no space left on device for the warehouse" in named[0], err[-3000:]
    assert str(fs) in named[0] and " free" in named[0]
    assert "Current transaction is aborted" not in err

    subprocess.run(["mount", "-o", "remount,size=256m", str(fs)], check=True)  # space freed
    proc = start_run(home, "after", TESSERA_WAREHOUSE=str(warehouse))
    rc = proc.wait(timeout=RUN_TIMEOUT_S)
    assert rc == 0, (home / "after.err").read_text()[-3000:]
    assert table_counts(warehouse) == table_counts(two_runs["home"] / "warehouse.duckdb")
