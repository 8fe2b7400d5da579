"""Shared fixtures: a generated sample, a temporary warehouse and DAGSTER_HOME, and one
real run of the daily job over them (module-scoped: the job runs once per module)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ["TESSERA_SUPPRESSION_KEY"] = "tests-only-suppression-key"  # same key everywhere in tests

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = PROJECT_ROOT / "examples" / "demo"
AS_OF = dt.date(2026, 11, 1)


class PipelineEnv:
    def __init__(self, root: Path, config: Path = DEMO_CONFIG):
        self.root = root
        self.config = config
        self.landing = root / "landing"
        self.feeds = root / "feeds"
        self.warehouse = root / "warehouse.duckdb"
        self.dagster_home = root / "dagster_home"
        self.dagster_home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PROJECT_ROOT / "dagster.yaml", self.dagster_home / "dagster.yaml")

    def definitions(self):
        from pipelines.definitions import build_definitions
        from tessera.deployment import load_deployment

        return build_definitions(load_deployment(self.config), self.warehouse, self.landing, self.feeds)

    def run_daily(self, day: dt.date = AS_OF):
        import dagster as dg

        instance = dg.DagsterInstance.from_config(str(self.dagster_home))
        job = self.definitions().resolve_job_def("daily_job")
        return job.execute_in_process(partition_key=day.isoformat(), instance=instance,
                                      raise_on_error=False)

    def connect(self):
        from tessera.engine.warehouse import connect

        return connect(self.warehouse)


@pytest.fixture(scope="module")
def demo_env(tmp_path_factory) -> PipelineEnv:
    from tessera.sampledata.generator import generate

    env = PipelineEnv(tmp_path_factory.mktemp("tessera"))
    generate(env.landing, contacts=150, seed=7, as_of=AS_OF)
    return env


@pytest.fixture(scope="module")
def demo_run(demo_env):
    result = demo_env.run_daily()
    assert result.success, "the daily job failed on the generated sample"
    return result


@pytest.fixture()
def small_fs(tmp_path):
    """``small_fs(size)``: a fresh tmpfs of ``size`` (e.g. "256k") mounted in tmp_path, to
    fill up for real; skipped where mounting is not allowed (needs root or CAP_SYS_ADMIN)."""
    import subprocess

    mounted = []

    def mount(size: str, name: str = "fs") -> Path:
        point = tmp_path / name
        point.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or 'mount failed'})")
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        subprocess.run(["umount", "-l", str(point)], check=False)


def fill(folder: Path, leave: int = 0) -> None:
    """Fill ``folder``'s file system, leaving about ``leave`` bytes free."""
    free = shutil.disk_usage(folder).free - leave
    with open(folder / "filler", "wb") as fh:
        while free > 0:
            try:
                fh.write(b"\0" * min(free, 1 << 16))
                fh.flush()
            except OSError:
                break
            free -= 1 << 16


# ------------------------------------------------------------------------- one real browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="session")
def browser():
    """One headless Debian Chromium per test process (``make browser`` installs it).

    Session-scoped and shared on purpose: Playwright's sync API runs its own event loop,
    and a second ``sync_playwright()`` opened while the first is alive in the same process
    fails with "using Playwright Sync API inside the asyncio loop" (two test files landed
    on one xdist worker and CI failed that way)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing and could not be installed (make browser installs "
                    "Debian's chromium package with apt-get)")
    from playwright.sync_api import sync_playwright

    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def serve_app(warehouse):
    """Serve Tessera's web app over this warehouse with uvicorn on a free loopback port, in a
    thread of this process; yields the base URL (use with ``yield from`` in a fixture)."""
    import uvicorn

    from tessera.web.app import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(warehouse), host="127.0.0.1", port=port,
                                        access_log=False, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)
