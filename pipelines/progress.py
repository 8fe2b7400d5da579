"""Progress of a run on the command line: each step as it starts and as it ends, with its
duration and rows, the steps' own progress lines, and a heartbeat while a step is quiet.

Dagster's console logger prints either almost nothing (INFO: only the assets' own lines)
or everything (DEBUG); ``tessera run`` wants the steps. This logger reads the structured
event on each record (a step started, succeeded, failed; an asset materialised with its
``dagster/row_count``). It is a job logger: only runs whose config names it use it (the
command line's), so runs from the UI or the schedule are unchanged.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import TextIO

import dagster as dg

QUIET_S = 20.0  # a step silent this long gets a "still running" line


def _name(step_key: str | None) -> str:
    return (step_key or "run").replace("__", "/")


class ProgressPrinter(logging.Handler):
    """Turns Dagster's log records into one line per step event (counts only)."""

    def __init__(self, stream: TextIO | None = None, quiet_s: float = QUIET_S) -> None:
        super().__init__(logging.DEBUG)  # step events are DEBUG records; plain lines from INFO
        self.stream = stream or sys.stderr
        self.quiet_s = quiet_s
        self.started: dict[str, float] = {}
        self.rows: dict[str, list[tuple[str, int | None]]] = {}
        self.checks: dict[str, list[str]] = {}
        self.last_line = time.monotonic()
        self.out_lock = threading.Lock()
        self.done = threading.Event()
        self.beat: threading.Thread | None = None

    def line(self, text: str) -> None:
        with self.out_lock:
            self.stream.write(f"{time.strftime('%H:%M:%S')}  {text}\n")
            self.stream.flush()
            self.last_line = time.monotonic()

    def _heartbeat(self) -> None:
        while not self.done.wait(min(5.0, self.quiet_s / 2)):
            now = time.monotonic()
            if now - self.last_line < self.quiet_s:
                continue
            with self.out_lock:
                running = sorted(dict(self.started).items(), key=lambda kv: kv[1])
            if running:
                self.line("  ... still running: " + ", ".join(
                    f"{_name(k)} ({now - t:.0f} s)" for k, t in running))

    def emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "dagster_meta", None) or {}
        event = meta.get("dagster_event")
        step = meta.get("step_key")
        if event is None:  # an asset's own line (file progress, warnings): as it is
            if record.levelno >= logging.INFO and meta.get("orig_message"):
                level = "" if record.levelno < logging.WARNING else f"{record.levelname}: "
                self.line(f"    {_name(step)}: {level}{meta['orig_message']}")
            return
        if self.beat is None:
            self.beat = threading.Thread(target=self._heartbeat, name="tessera progress", daemon=True)
            self.beat.start()
        if event.is_step_start:
            self.started[step] = time.monotonic()
            self.rows[step] = []
            self.line(f"start  {_name(step)}")
        elif event.is_step_materialization:
            data = event.step_materialization_data.materialization
            rows = data.metadata.get("dagster/row_count")
            value = getattr(rows, "value", rows)
            self.rows.setdefault(step, []).append(
                (data.asset_key.to_user_string(), int(value) if value is not None else None))
        elif event.event_type_value == "ASSET_CHECK_EVALUATION":
            check = event.event_specific_data
            self.checks.setdefault(step, []).append(
                f"check {check.check_name} {'passed' if check.passed else 'FAILED'}")
        elif event.is_step_success:
            self.started.pop(step, None)
            took = event.event_specific_data.duration_ms / 1000
            self.line(f"done   {_name(step)}  {took:.1f} s{self._rows(step, took)}")
        elif event.is_step_failure:
            self.started.pop(step, None)
            self.line(f"FAILED {_name(step)}")
        elif event.is_step_skipped:
            self.line(f"skip   {_name(step)} (an upstream step failed or a blocking check did)")
        elif event.is_job_success or event.is_job_failure:
            self.done.set()
            self.line(f"run {'succeeded' if event.is_job_success else 'FAILED'}")

    def _rows(self, step: str, took: float) -> str:
        parts = []
        for asset, n in self.rows.pop(step, []):
            if n is None:
                continue
            rate = f", {n / took:,.0f} rows/s" if took >= 1 and n else ""
            parts.append(f"{asset} {n:,} rows{rate}")
        parts += self.checks.pop(step, [])
        return ("  " + "; ".join(parts)) if parts else ""


@dg.logger(config_schema={"quiet_s": dg.Field(float, default_value=QUIET_S, is_required=False)},
           description="One line per step start and end (duration, rows), the steps' own lines "
                       "and a heartbeat while a step is quiet (tessera run).")
def progress_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    log = logging.getLogger(f"tessera.progress.{id(init_context)}")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    log.handlers = [ProgressPrinter(quiet_s=init_context.logger_config["quiet_s"])]
    return log
