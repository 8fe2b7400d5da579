"""Where a deployment's files live: configuration, warehouse, landing, feeds, DAGSTER_HOME.

Read from the environment with the demo's folders as defaults, in a module that imports
nothing heavy, so that the command line, the resources and ``pipelines/`` agree on the
same paths without importing Dagster to learn them.

    TESSERA_CONFIG     configuration folder (default: examples/demo)
    TESSERA_HOME       data folder (default: var/demo)
    TESSERA_WAREHOUSE  the DuckDB file (default: $TESSERA_HOME/warehouse.duckdb)
    TESSERA_LANDING    landing folder (default: $TESSERA_HOME/landing)
    TESSERA_FEEDS      feeds folder (default: $TESSERA_HOME/feeds)
    DAGSTER_HOME       Dagster's instance (default: $TESSERA_HOME/dagster_home)
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = PROJECT_ROOT / "examples" / "demo"
DEFAULT_HOME = PROJECT_ROOT / "var" / "demo"
# Public on purpose: the demo works out of the box; a real deployment sets its own secret.
DEMO_SUPPRESSION_KEY = "demo-only-key-set-TESSERA_SUPPRESSION_KEY"


def tessera_paths(env: Mapping[str, str] | None = None) -> dict[str, Path]:
    env = os.environ if env is None else env
    home = Path(env.get("TESSERA_HOME", DEFAULT_HOME))
    return {
        "config": Path(env.get("TESSERA_CONFIG", DEFAULT_CONFIG)),
        "home": home,
        "warehouse": Path(env.get("TESSERA_WAREHOUSE", home / "warehouse.duckdb")),
        "landing": Path(env.get("TESSERA_LANDING", home / "landing")),
        "feeds": Path(env.get("TESSERA_FEEDS", home / "feeds")),
        "dagster_home": Path(env.get("DAGSTER_HOME") or home / "dagster_home"),
    }


def config_folder(config: str | Path | None = None) -> Path:
    """The configuration folder for commands that read it alone (no warehouse, no env set)."""
    return Path(config or os.environ.get("TESSERA_CONFIG") or DEFAULT_CONFIG)


def setup_env(config: str | Path | None = None, home: str | Path | None = None) -> None:
    """Fix the process environment once, before anything reads it.

    Dagster and the resources read the environment, so ``--config`` / ``--home`` are
    written into it rather than passed along; DAGSTER_HOME is then prepared.
    """
    if config:
        os.environ["TESSERA_CONFIG"] = str(Path(config).resolve())
    if home:
        os.environ["TESSERA_HOME"] = str(Path(home).resolve())
    os.environ.setdefault("TESSERA_CONFIG", str(DEFAULT_CONFIG))
    os.environ.setdefault("TESSERA_HOME", str(DEFAULT_HOME))
    os.environ.setdefault("DAGSTER_HOME", str(Path(os.environ["TESSERA_HOME"]) / "dagster_home"))
    # Nothing may phone home: Tessera runs on machines without internet access.
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    if not os.environ.get("TESSERA_SUPPRESSION_KEY"):
        os.environ["TESSERA_SUPPRESSION_KEY"] = DEMO_SUPPRESSION_KEY
        print("warning: TESSERA_SUPPRESSION_KEY is not set; using the demo key", file=sys.stderr)
    init_home()


def init_home() -> Path:
    """Create DAGSTER_HOME with the project's dagster.yaml (telemetry off, pool of 1).

    Copied rather than linked so a run never depends on the checkout's file changing
    under it; rewritten only when the project's copy differs.
    """
    home = tessera_paths()["dagster_home"]
    home.mkdir(parents=True, exist_ok=True)
    src = PROJECT_ROOT / "dagster.yaml"
    dst = home / "dagster.yaml"
    if not dst.exists() or dst.read_bytes() != src.read_bytes():
        shutil.copyfile(src, dst)
    return home
