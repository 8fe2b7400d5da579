"""Run management: who executes a run, closing dead runs, taking turns at the warehouse.

DuckDB allows one writing process, and every step that opens the warehouse is in the
``duckdb`` pool of 1. Two things used to block that pool for ever:

- A run killed with ``kill -9`` (or a crash, or a reboot) never reports its end: it stays
  ``STARTED`` in run storage with its pool slot claimed. Every run therefore records
  who executes it (host, pid and the process's start time, so a reused pid is not
  mistaken for the run's). A run whose executor is gone is marked failed, with the
  reason, and its pool slots are freed through Dagster's storage calls. This happens
  before every ``tessera run`` and every warehouse command (``hold_warehouse_turn``), in
  ``tessera runs --close-dead``, and every minute in the daemon (``dead_runs_sensor``) for
  runs launched from the UI. A run whose executor is alive, or runs on another host, or
  is not known, is never touched.
- ``tessera run`` executes the job in process, bypassing the run queue, and Dagster's
  in-process wait for a pool slot spins a core and ignores SIGTERM. So a command first
  takes its *turn*: an exclusive lock file in DAGSTER_HOME (released by the kernel when
  the process dies, however it dies), then it waits, saying for which run, until no other
  live run is in progress and no other run holds or awaits the pool. The wait sleeps, and
  SIGTERM or Ctrl-C end it at once with nothing claimed. Runs from the UI and the
  schedule queue behind CLI runs through the run queue (``max_concurrent_runs: 1``
  counts them); the pool still serialises every step if two runs ever overlap.
"""

from __future__ import annotations

import atexit
import datetime as dt
import fcntl
import json
import os
import signal
import socket
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import dagster as dg

POOL = "duckdb"
HOST_TAG = "tessera/executor_host"
PID_TAG = "tessera/executor_pid"
START_TAG = "tessera/executor_start"
# The run the executor tags were written for: a re-executed run inherits its parent's tags
# (auto retries, the UI), and must not be judged by the parent's dead process.
RUN_TAG = "tessera/executor_run"
DEAD_RUN_REASON = "its process ended without reporting: killed or crashed"

# Runs that may be executing: created, launched, running or being cancelled.
ACTIVE_STATUSES = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
                   dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- who executes a run -----------------------------------------------------------------

def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_start(pid: int) -> str | None:
    """``<boot id>:<start time in clock ticks>`` of a live process; None if there is no such
    process (or only its zombie); "" where /proc is not available."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return ""
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):  # a zombie has ended: only its exit status is left
        return None
    return f"{_boot_id()}:{fields[19]}"  # field 22 of proc(5): starttime


def executor_tags(run_id: str) -> dict[str, str]:
    """Run tags naming this process as the executor of run ``run_id``."""
    pid = os.getpid()
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(pid), START_TAG: process_start(pid) or "",
            RUN_TAG: run_id}


def executor_state(run: dg.DagsterRun) -> str:
    """``alive``, ``gone`` or ``unknown`` (no executor recorded for this very run, or
    recorded on another host)."""
    tags = run.tags
    host, pid = tags.get(HOST_TAG), tags.get(PID_TAG)
    if not host or not pid or not pid.isdigit() or tags.get(RUN_TAG) != run.run_id:
        return "unknown"
    if host != socket.gethostname():
        return "unknown"
    recorded = tags.get(START_TAG, "")
    if Path("/proc/self/stat").exists():
        start = process_start(int(pid))
        if start is None:
            return "gone"
        return "alive" if not recorded or not start or start == recorded else "gone"
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return "gone"
    except PermissionError:
        return "alive"  # the process exists, owned by another user
    return "alive"


def record_executor(instance: dg.DagsterInstance, run: dg.DagsterRun) -> None:
    """Tag a run launched elsewhere (the UI, the schedule) with its executing process."""
    if run.tags.get(PID_TAG) != str(os.getpid()) or run.tags.get(RUN_TAG) != run.run_id:
        instance.add_run_tags(run.run_id, executor_tags(run.run_id))


def describe(run: dg.DagsterRun) -> str:
    where = (f"pid {run.tags[PID_TAG]} on {run.tags.get(HOST_TAG, '?')}"
             if run.tags.get(PID_TAG) else "executor not recorded")
    part = f", day {run.tags['dagster/partition']}" if run.tags.get("dagster/partition") else ""
    return f"run {run.run_id} ({run.job_name}{part}, {run.status.value}, {where})"


# --- closing dead runs ------------------------------------------------------------------

def close_run(instance: dg.DagsterInstance, run: dg.DagsterRun, reason: str) -> None:
    """Mark one run failed with ``reason`` and free its pool slots (Dagster's own calls)."""
    instance.report_run_failed(run, reason)
    instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)


def close_dead_runs(instance: dg.DagsterInstance, log: Log | None = None) -> list[str]:
    """Mark failed every active run whose executor is gone, and free the pool slots of
    those runs and of runs that are finished or deleted. Returns the closed run ids."""
    closed = []
    for record in instance.get_run_records(dg.RunsFilter(statuses=ACTIVE_STATUSES)):
        run = record.dagster_run
        if executor_state(run) != "gone":
            continue
        reason = (f"Closed by Tessera: {DEAD_RUN_REASON} (pid {run.tags[PID_TAG]} on "
                  f"{run.tags[HOST_TAG]} no longer runs)")
        close_run(instance, run, reason)
        closed.append(run.run_id)
        if log:
            log(f"closed dead run {run.run_id} ({run.job_name}): {DEAD_RUN_REASON}; "
                f"its pool slots are free")
    storage = instance.event_log_storage
    if storage.supports_global_concurrency_limits:
        for run_id in storage.get_concurrency_run_ids():
            run = instance.get_run_by_id(run_id)
            if run is None or run.is_finished:
                storage.free_concurrency_slots_for_run(run_id)
                if log:
                    log(f"freed the pool slots left by {'deleted' if run is None else 'finished'} "
                        f"run {run_id}")
    return closed


def blockers(instance: dg.DagsterInstance, own_run_id: str | None = None) -> list[str]:
    """What another run holds: active runs, and runs holding or awaiting the pool."""
    found: dict[str, str] = {}
    for record in instance.get_run_records(dg.RunsFilter(statuses=ACTIVE_STATUSES)):
        run = record.dagster_run
        if run.run_id != own_run_id:
            found[run.run_id] = describe(run)
    storage = instance.event_log_storage
    if storage.supports_global_concurrency_limits:
        info = storage.get_concurrency_info(POOL)
        for slot in info.claimed_slots:
            if slot.run_id != own_run_id:
                run = instance.get_run_by_id(slot.run_id)
                found[slot.run_id] = (f"{describe(run) if run else 'run ' + slot.run_id} "
                                      f"holds pool '{POOL}' in step {slot.step_key}")
        for step in info.pending_steps:
            if step.run_id != own_run_id and step.run_id not in found:
                run = instance.get_run_by_id(step.run_id)
                found[step.run_id] = (f"{describe(run) if run else 'run ' + step.run_id} "
                                      f"waits for pool '{POOL}'")
    return [found[k] for k in sorted(found)]


# --- taking turns -----------------------------------------------------------------------

class Stopped(Exception):
    """A signal ended the wait for the warehouse; nothing was claimed."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def _stop_on_signals() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers; the process's own handling stays
        return

    def handler(signum, _frame):
        raise Stopped(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


_held: dict[str, int] = {}  # lock file -> descriptor, held until the process ends


def _lock_path(instance: dg.DagsterInstance) -> Path:
    return Path(instance.root_directory) / "tessera" / "warehouse.lock"


def _release_all() -> None:
    for path, fd in list(_held.items()):
        os.close(fd)  # closing the descriptor drops the lock
        _held.pop(path, None)


atexit.register(_release_all)


class WarehouseBusy(Exception):
    """The wait for the warehouse ran past ``--wait``; the message names the holder."""


def hold_warehouse_turn(instance: dg.DagsterInstance, what: str, run_id: str | None = None,
                        log: Log = _stderr, poll_s: float = 1.0,
                        wait_s: float | None = None) -> None:
    """Close dead runs, then wait (sleeping) until this process alone may use the warehouse,
    and keep that turn until the process ends. ``what`` says who waits (no personal data).

    ``wait_s`` bounds the wait (None: as long as it takes; 0: not at all): past it,
    ``WarehouseBusy`` says who holds the warehouse. Raises ``Stopped`` on SIGTERM or
    Ctrl-C during the wait, with nothing claimed."""
    path = _lock_path(instance)
    if str(path) in _held:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    said: set[str] = set()
    deadline = None if wait_s is None else time.monotonic() + max(0.0, wait_s)
    limit = "Ctrl-C to stop" if wait_s is None else f"for up to {wait_s:g} s; Ctrl-C to stop"

    def give_up(holder: str) -> None:
        if deadline is not None and time.monotonic() >= deadline:
            raise WarehouseBusy(f"{what}: {holder}; gave up after {wait_s:g} s "
                                "(--wait SECONDS waits longer; nothing was changed)")

    try:
        with _stop_on_signals():
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    holder = f"another Tessera process ({_read_holder(path)}) holds the warehouse"
                    give_up(holder)
                    if holder not in said:
                        log(f"{what}: {holder}; waiting for the warehouse ({limit})")
                        said.add(holder)
                    time.sleep(poll_s if deadline is None
                               else max(0.01, min(poll_s, deadline - time.monotonic())))
            while True:
                close_dead_runs(instance, log)
                waiting_for = blockers(instance, run_id)
                if not waiting_for:
                    break
                give_up(f"another Tessera process holds the warehouse: {waiting_for[0]}")
                for b in waiting_for:
                    if b not in said:
                        hint = (" (if its process is gone, close it with `tessera runs --close "
                                "RUN_ID`)" if "executor not recorded" in b else "")
                        log(f"{what}: waiting for the warehouse: {b}{hint} ({limit})")
                        said.add(b)
                time.sleep(poll_s if deadline is None
                           else max(0.01, min(poll_s, deadline - time.monotonic())))
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({
        "what": what, "run_id": run_id, "pid": os.getpid(), "host": socket.gethostname(),
        "since": dt.datetime.now().isoformat(timespec="seconds")}).encode(), 0)
    _held[str(path)] = fd
    if said:
        log(f"{what}: the warehouse is free; going on")


def _read_holder(path: Path) -> str:
    """``pid N on HOST, `command`, since T`` from the lock file (the holder writes it)."""
    try:
        h = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        h = {}
    if not h:
        return "pid unknown: it has just taken the lock"
    run = f" run {h['run_id']}" if h.get("run_id") else ""
    return (f"pid {h.get('pid')} on {h.get('host')}, `{h.get('what', 'tessera')}`{run}, "
            f"since {h.get('since')}")


BUSY_EXIT = 75  # EX_TEMPFAIL: try again later


def execute_daily_in_turn(job: dg.JobDefinition, instance: dg.DagsterInstance, partition_key: str,
                          run_config: dict | None = None, log: Log = _stderr,
                          wait_s: float | None = None):
    """Run a job in process once it is this process's turn, tagged with its executor."""
    run_id = str(uuid.uuid4())
    try:
        hold_warehouse_turn(instance, f"tessera run {partition_key}", run_id, log, wait_s=wait_s)
    except Stopped as exc:
        log(f"stopped by {exc} while waiting for the warehouse; nothing was started")
        raise SystemExit(128 + exc.signum) from None
    except WarehouseBusy as exc:
        log(str(exc))
        raise SystemExit(BUSY_EXIT) from None
    result = job.execute_in_process(partition_key=partition_key, instance=instance,
                                    raise_on_error=False, run_config=run_config, run_id=run_id,
                                    tags=executor_tags(run_id))
    if not result.success:
        for line in failure_lines(result):
            log(line)
    return result


def failure_lines(result) -> list[str]:
    """One line per distinct cause of a failed run: the first failing step and its error
    (the innermost one: for a full disk, which path ran out of space)."""
    causes: dict[str, list[str]] = {}
    for event in result.all_events:
        if not event.is_step_failure or event.step_failure_data.error is None:
            continue
        err = event.step_failure_data.error
        while err.cause is not None:
            err = err.cause
        causes.setdefault(err.message.strip(), []).append(event.step_key)
    return [f"step {steps[0]} failed{f' (and {len(steps) - 1} more)' if len(steps) > 1 else ''}: "
            f"{message}" for message, steps in causes.items()]


def before_warehouse_command(what: str, log: Log = _stderr, wait_s: float | None = None) -> None:
    """For CLI commands that open the warehouse: close dead runs, wait for live ones
    (``wait_s`` at most; past it the command ends with ``BUSY_EXIT``, naming the holder)."""
    instance = dg.DagsterInstance.get()
    try:
        hold_warehouse_turn(instance, what, None, log, wait_s=wait_s)
    except Stopped as exc:
        log(f"stopped by {exc} while waiting for the warehouse; nothing was changed")
        raise SystemExit(128 + exc.signum) from None
    except WarehouseBusy as exc:
        log(str(exc))
        raise SystemExit(BUSY_EXIT) from None


# --- tessera runs -----------------------------------------------------------------------

def list_runs(instance: dg.DagsterInstance, limit: int = 20) -> list[dict]:
    rows = []
    for record in instance.get_run_records(limit=limit):
        run = record.dagster_run
        state = executor_state(run) if run.status in ACTIVE_STATUSES else ""
        rows.append({
            "run_id": run.run_id, "job": run.job_name, "status": run.status.value,
            "day": run.tags.get("dagster/partition", ""),
            "started": (dt.datetime.fromtimestamp(record.start_time).isoformat(timespec="seconds")
                        if record.start_time else ""),
            "executor": (f"pid {run.tags[PID_TAG]} on {run.tags.get(HOST_TAG)}"
                         if run.tags.get(PID_TAG) else ""),
            "executor_state": state,
        })
    return rows


def cmd_runs(args) -> int:
    """``tessera runs [--close-dead] [--close RUN_ID] [--limit N]``: runs with their state."""
    instance = dg.DagsterInstance.get()
    for run_id in args.close or []:
        run = instance.get_run_by_id(run_id)
        if run is None or run.status not in ACTIVE_STATUSES:
            print(f"run {run_id}: not found or not in progress; nothing to close", file=sys.stderr)
            return 2
        if executor_state(run) == "alive":
            print(f"run {run_id}: its process is alive; not closed", file=sys.stderr)
            return 2
        close_run(instance, run, "Closed by the operator (tessera runs --close): "
                                 "its process is gone or unknown")
        print(f"closed run {run_id}")
    if args.close_dead:
        closed = close_dead_runs(instance, _stderr)
        print(f"closed {len(closed)} dead run(s)")
    rows = list_runs(instance, args.limit)
    print(f"{'run id':<36}  {'job':<10}  {'day':<10}  {'status':<11}  {'started':<19}  executor")
    for r in rows:
        state = f" ({r['executor_state']})" if r["executor_state"] else ""
        print(f"{r['run_id']:<36}  {r['job']:<10}  {r['day']:<10}  {r['status']:<11}  "
              f"{r['started']:<19}  {r['executor']}{state}")
    dead = [r for r in rows if r["executor_state"] == "gone"]
    if dead and not args.close_dead:
        print(f"\n{len(dead)} run(s) whose process is gone: close them with "
              f"`tessera runs --close-dead`")
    return 0
