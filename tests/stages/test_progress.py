"""`tessera run`'s progress lines: each step as it starts and ends with duration and rows,
the steps' own lines, and a heartbeat while a step is quiet."""

import io
import logging
import re
import time

import dagster as dg

from pipelines.progress import ProgressPrinter, progress_logger


def _job(stream: io.StringIO):
    @dg.asset
    def first(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        context.log.info("file 1/1 a.csv started")
        return dg.MaterializeResult(metadata={"dagster/row_count": 1234})

    @dg.asset(deps=[first])
    def second() -> dg.MaterializeResult:
        time.sleep(1.5)  # quiet longer than the heartbeat's threshold below
        return dg.MaterializeResult(metadata={"dagster/row_count": 0})

    @dg.asset(deps=[second])
    def third() -> None:
        raise RuntimeError("boom")

    @dg.logger
    def captured(_init) -> logging.Logger:
        log = logging.getLogger("tessera.test.progress")
        log.setLevel(logging.DEBUG)
        log.propagate = False
        log.handlers = [ProgressPrinter(stream=stream, quiet_s=0.5)]
        return log

    return dg.Definitions(assets=[first, second, third],
                          loggers={"progress": captured}).resolve_implicit_global_asset_job_def()


def test_each_step_starts_and_ends_with_duration_and_rows():
    out = io.StringIO()
    result = _job(out).execute_in_process(run_config={"loggers": {"progress": {"config": {}}}},
                                          raise_on_error=False)
    assert not result.success
    lines = [line.split("  ", 1)[1] for line in out.getvalue().splitlines()]
    assert lines[0] == "start  first"
    assert lines[1] == "    first: file 1/1 a.csv started"
    assert re.fullmatch(r"done   first  \d+\.\d s  first 1,234 rows(, [\d,]+ rows/s)?", lines[2]), lines[2]
    assert lines[3] == "start  second"
    # a quiet step is never silent for long: at least one heartbeat naming it
    assert any(re.fullmatch(r"  \.\.\. still running: second \(\d+ s\)", x) for x in lines), lines
    assert any(re.fullmatch(r"done   second  \d+\.\d s  second 0 rows", x) for x in lines), lines
    assert "start  third" in lines and "FAILED third" in lines
    assert lines[-1] == "run FAILED"


def test_the_cli_logger_is_defined_for_the_daily_job():
    from pipelines.definitions import defs

    job = defs.resolve_job_def("daily_job")
    assert job.loggers["progress"] is progress_logger
    assert "console" in job.loggers  # runs from the UI or the schedule keep Dagster's


def test_a_long_statement_reports_duckdbs_progress(tmp_path):
    from assets._common import heartbeat
    from tessera.engine.warehouse import connect

    class Log:
        lines: list[str] = []

        def info(self, text: str) -> None:
            self.lines.append(text)

    class Context:
        log = Log()

    con = connect(tmp_path / "w.duckdb")
    with heartbeat(Context(), con, "loading big", every_s=0.2):
        con.execute("SELECT count(DISTINCT md5(range::VARCHAR)) FROM range(3000000)").fetchall()
    lines = Context.log.lines
    assert lines and all(re.match(r"loading big: still running after \d+ s", x) for x in lines), lines
    assert any(re.search(r"current statement about \d+ % done$", x) for x in lines), lines
