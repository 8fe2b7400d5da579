"""Run management without running the job: executor liveness, closing dead runs and
freeing their pool slots, never touching a live run, and a CLI that waits its turn
without spinning and stops on SIGTERM with nothing claimed."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest

from pipelines import runs
from tests.conftest import AS_OF, DEMO_CONFIG, PROJECT_ROOT


@pytest.fixture()
def instance(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as inst:
        yield inst


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def add_started_run(instance, tags: dict | None, step: str | None = "raw__crm_contacts",
                    run_id: str | None = None, **override: str) -> str:
    run_id = run_id or str(uuid.uuid4())
    tags = {} if tags is None else {**runs.executor_tags(run_id), **override}
    instance.add_run(dg.DagsterRun(job_name="daily_job", run_id=run_id,
                                   status=dg.DagsterRunStatus.STARTED, tags=tags))
    if step:
        instance.event_log_storage.initialize_concurrency_limit_to_default(runs.POOL)
        claim = instance.event_log_storage.claim_concurrency_slot(runs.POOL, run_id, step)
        assert claim.is_claimed
    return run_id


def test_executor_state():
    def state(**tags):
        run_id = "r1"
        return runs.executor_state(dg.DagsterRun(job_name="daily_job", run_id=run_id, tags={
            **runs.executor_tags(run_id), **tags}))

    me = runs.executor_tags("r1")
    assert state() == "alive"
    assert state(**{runs.PID_TAG: str(dead_pid())}) == "gone"
    # the same pid with another start time is another process: the run's executor is gone
    assert state(**{runs.START_TAG: me[runs.START_TAG] + "0"}) == "gone"
    assert state(**{runs.HOST_TAG: socket.gethostname() + "-other"}) == "unknown"
    # tags inherited from a parent run (a re-execution) say nothing about this run
    assert state(**{runs.PID_TAG: str(dead_pid()), runs.RUN_TAG: "parent"}) == "unknown"
    assert runs.executor_state(dg.DagsterRun(job_name="daily_job", run_id="r2")) == "unknown"


def test_dead_run_is_closed_and_its_slot_freed_live_run_untouched(instance):
    dead = add_started_run(instance, {}, **{runs.PID_TAG: str(dead_pid())})
    assert runs.blockers(instance)  # the dead run holds the pool: the next run would wait
    closed = runs.close_dead_runs(instance)
    assert closed == [dead]
    run = instance.get_run_by_id(dead)
    assert run.status == dg.DagsterRunStatus.FAILURE
    failure = instance.all_logs(dead, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert runs.DEAD_RUN_REASON in failure[-1].dagster_event.message
    info = instance.event_log_storage.get_concurrency_info(runs.POOL)
    assert info.claimed_slots == [] and info.pending_steps == []
    assert runs.blockers(instance) == []

    live = add_started_run(instance, {})
    unknown = add_started_run(instance, None, step=None)
    assert runs.close_dead_runs(instance) == []
    assert instance.get_run_by_id(live).status == dg.DagsterRunStatus.STARTED
    assert instance.get_run_by_id(unknown).status == dg.DagsterRunStatus.STARTED
    assert {s.run_id for s in instance.event_log_storage.get_concurrency_info(runs.POOL).claimed_slots} == {live}


def test_dead_runs_sensor_closes_dead_runs(instance):
    from pipelines.sensors import dead_runs_sensor

    dead = add_started_run(instance, {}, **{runs.PID_TAG: str(dead_pid())})
    live = add_started_run(instance, {}, step=None)
    result = dead_runs_sensor(dg.build_sensor_context(instance=instance))
    assert "closed 1 dead run" in result.skip_message
    assert instance.get_run_by_id(dead).status == dg.DagsterRunStatus.FAILURE
    assert instance.get_run_by_id(live).status == dg.DagsterRunStatus.STARTED


def test_slots_of_a_deleted_run_are_freed(instance):
    gone = add_started_run(instance, {})
    instance.run_storage.delete_run(gone)  # run row gone, slot left behind
    assert runs.close_dead_runs(instance) == []
    assert instance.event_log_storage.get_concurrency_info(runs.POOL).claimed_slots == []


def test_cli_waits_for_the_pool_without_spinning_and_stops_on_sigterm(tmp_path, instance):
    """A live run (this test process) holds the duckdb pool: `tessera run` says it waits and
    for whom, sleeps, and SIGTERM ends it promptly with no run created and nothing claimed."""
    holder = add_started_run(instance, {})
    env = {**os.environ, "TESSERA_HOME": str(tmp_path), "TESSERA_CONFIG": str(DEMO_CONFIG),
           "DAGSTER_HOME": instance.root_directory}
    proc = subprocess.Popen([sys.executable, "-m", "tessera.cli", "run", "--date", AS_OF.isoformat()],
                            cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        lines = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            if "waiting for the warehouse" in line:
                break
        assert any(holder in ln and "holds pool 'duckdb'" in ln for ln in lines), lines
        cpu_before = _cpu_seconds(proc.pid)
        time.sleep(3)
        assert _cpu_seconds(proc.pid) - cpu_before < 1.0  # sleeping, not spinning
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM
    assert "nothing was started" in err
    assert [r.run_id for r in instance.get_runs()] == [holder]
    info = instance.event_log_storage.get_concurrency_info(runs.POOL)
    assert {s.run_id for s in info.claimed_slots} == {holder}
    assert {s.run_id for s in info.pending_steps} <= {holder}


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_tessera_runs_lists_and_closes_dead_runs(tmp_path, instance, monkeypatch, capsys):
    from tessera.cli import main

    monkeypatch.setenv("DAGSTER_HOME", instance.root_directory)
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path))
    dead = add_started_run(instance, {}, **{runs.PID_TAG: str(dead_pid())})
    live = add_started_run(instance, {}, step=None)
    assert main(["runs"]) == 0
    out = capsys.readouterr().out
    assert dead in out and "(gone)" in out and "(alive)" in out and "--close-dead" in out
    assert main(["runs", "--close-dead"]) == 0
    out = capsys.readouterr().out
    assert "closed 1 dead run(s)" in out
    assert instance.get_run_by_id(dead).status == dg.DagsterRunStatus.FAILURE
    assert main(["runs", "--close", live]) == 2  # alive: refused
    assert instance.get_run_by_id(live).status == dg.DagsterRunStatus.STARTED


def test_a_busy_warehouse_names_its_holder_and_wait_bounds_the_wait(tmp_path, instance, monkeypatch,
                                                                       capsys):
    """Another process holds the warehouse lock: `--wait 0` stops at once and a bounded
    wait stops after it, both naming the holder's pid and command, with nothing changed."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time, dagster as dg; from pipelines import runs\n"
         "inst = dg.DagsterInstance.from_config(sys.argv[1])\n"
         "runs.hold_warehouse_turn(inst, 'tessera forget')\n"
         "print('held', flush=True); time.sleep(300)", instance.root_directory],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(runs.WarehouseBusy) as busy:
            runs.hold_warehouse_turn(instance, "tessera purge", wait_s=0.3, poll_s=0.1)
        msg = str(busy.value)
        assert msg.startswith("tessera purge: another Tessera process (pid ")
        assert f"pid {holder.pid} on {socket.gethostname()}, `tessera forget`" in msg
        assert "holds the warehouse; gave up after 0.3 s" in msg
        assert str(runs._lock_path(instance)) not in runs._held  # nothing claimed

        monkeypatch.setenv("DAGSTER_HOME", instance.root_directory)
        monkeypatch.setenv("TESSERA_HOME", str(tmp_path))
        monkeypatch.setenv("TESSERA_CONFIG", str(DEMO_CONFIG))
        from tessera.cli import main

        capsys.readouterr()
        assert main(["--wait", "0", "purge", "--yes"]) == runs.BUSY_EXIT == 75
        err = capsys.readouterr().err
        assert f"another Tessera process (pid {holder.pid} on" in err and "`tessera forget`" in err
        assert not (tmp_path / "warehouse.duckdb").exists()  # the purge never opened it
    finally:
        holder.kill()
        holder.wait()
    # the kernel dropped the dead holder's lock: the same bounded wait now gets its turn
    runs.hold_warehouse_turn(instance, "tessera purge", wait_s=0.3, poll_s=0.1)
    assert str(runs._lock_path(instance)) in runs._held
    runs._release_all()
