"""The layering rule holds (import-linter contracts in pyproject.toml), and the check can
fail: a deliberate upward import in a copy of the tree breaks the contract."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
        "sys.exit(lint_imports_command())"]


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(LINT, cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"})


def test_layering_contracts_are_kept():
    out = _lint(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


def _copy_tree(dst: Path) -> None:
    for pkg in ("tessera", "assets", "pipelines", "resources"):
        shutil.copytree(ROOT / pkg, dst / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.txt",
                                                                              "*.sql"))
    shutil.copyfile(ROOT / "pyproject.toml", dst / "pyproject.toml")


def test_an_upward_import_breaks_the_layers(tmp_path):
    _copy_tree(tmp_path)
    engine = tmp_path / "tessera" / "engine" / "steps.py"
    engine.write_text(engine.read_text() + "\nfrom tessera.marketing import segments  # noqa\n")
    out = _lint(tmp_path)
    assert out.returncode != 0
    assert "tessera.engine.steps -> tessera.marketing.segments" in out.stdout


def test_a_stage_on_the_seam_importing_duckdb_breaks_its_contract(tmp_path):
    _copy_tree(tmp_path)
    rfm = tmp_path / "tessera" / "marketing" / "rfm.py"
    rfm.write_text(rfm.read_text() + "\nimport duckdb  # noqa\n")
    out = _lint(tmp_path)
    assert out.returncode != 0
    assert "tessera.marketing.rfm is not allowed to import duckdb" in out.stdout
