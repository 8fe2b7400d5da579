"""Bounded memory by default: every warehouse connection gets the configured (or default)
memory limit and temp directory, read back from DuckDB itself."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tessera.engine.warehouse import (DEFAULT_MEMORY_SHARE, MIN_MEMORY_LIMIT, connect, memory_limit_bytes,
                                      physical_memory, warehouse_limits)

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo"


def _settings(con) -> tuple[str, str]:
    return tuple(con.execute("SELECT current_setting('memory_limit'), "
                             "current_setting('temp_directory')").fetchone())


def _duckdb_says(limit: str) -> str:
    """How DuckDB prints a limit it was given (its own rounding, e.g. '512.0 MiB')."""
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{limit}'")
    return con.execute("SELECT current_setting('memory_limit')").fetchone()[0]


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv("TESSERA_MEMORY_LIMIT", raising=False)
    monkeypatch.delenv("TESSERA_TEMP_DIRECTORY", raising=False)


def test_sizes_and_shares_parse():
    assert memory_limit_bytes("6GB") == 6 * 1000 ** 3
    assert memory_limit_bytes("512MiB") == 512 * 1024 ** 2
    assert memory_limit_bytes("1.5 GiB") == int(1.5 * 1024 ** 3)
    assert memory_limit_bytes("50%") == physical_memory() // 2
    assert memory_limit_bytes(None) == max(MIN_MEMORY_LIMIT, int(physical_memory() * DEFAULT_MEMORY_SHARE))
    assert memory_limit_bytes("1%") >= MIN_MEMORY_LIMIT
    for bad in ("lots", "0%", "150%", "-1GB", "6XB"):
        with pytest.raises(ValueError):
            memory_limit_bytes(bad)


def test_a_plain_connection_is_bounded_by_a_share_of_the_machine(tmp_path):
    db = tmp_path / "w.duckdb"
    con = connect(db)
    limit, temp = _settings(con)
    expected = f"{memory_limit_bytes(None) // 1024 ** 2}MiB"
    assert limit == _duckdb_says(expected)
    assert Path(temp) == Path(f"{db.resolve()}.tmp")
    con.close()
    ro = connect(db, read_only=True)  # front ends' read-only sessions too
    assert _settings(ro)[0] == _duckdb_says(expected)
    ro.close()


def test_environment_wins_over_the_deployment_and_temp_is_relative_to_the_warehouse(tmp_path, monkeypatch):
    db = tmp_path / "w.duckdb"
    con = connect(db, memory_limit="700MiB", temp_directory="spill")
    assert _settings(con) == (_duckdb_says("700MiB"), str(tmp_path.resolve() / "spill"))
    con.close()
    monkeypatch.setenv("TESSERA_MEMORY_LIMIT", "300MiB")
    monkeypatch.setenv("TESSERA_TEMP_DIRECTORY", str(tmp_path / "elsewhere"))
    assert warehouse_limits(db, "700MiB", "spill") == {
        "memory_limit": "300MiB", "temp_directory": str(tmp_path / "elsewhere")}
    con = connect(db, memory_limit="700MiB", temp_directory="spill")
    assert _settings(con) == (_duckdb_says("300MiB"), str(tmp_path / "elsewhere"))
    con.close()


def test_the_deployment_setting_reaches_every_asset_connection(tmp_path):
    """tessera.yaml's ``warehouse:`` -> the Dagster warehouse resource -> each connection."""
    from pipelines.definitions import build_resources
    from tessera.deployment import load_deployment

    config = tmp_path / "config"
    shutil.copytree(DEMO, config)
    main = (config / "tessera.yaml").read_text(encoding="utf-8")
    main = main.replace("\nwarehouse:\n", "\nwarehouse_unused:\n")  # the demo's own block, if any
    (config / "tessera.yaml").write_text(
        main + "\nwarehouse:\n  memory_limit: 640MiB\n  temp_directory: duck_spill\n", encoding="utf-8")
    deployment = load_deployment(config)
    assert deployment.warehouse.memory_limit == "640MiB"
    wh = build_resources(tmp_path / "wh" / "w.duckdb", tmp_path / "landing", tmp_path / "feeds",
                         deployment=deployment)["warehouse"]
    (tmp_path / "wh").mkdir()
    with wh.get_connection() as con:
        assert _settings(con) == (_duckdb_says("640MiB"), str((tmp_path / "wh" / "duck_spill").resolve()))


def test_a_bad_limit_fails_when_the_configuration_loads(tmp_path):
    from tessera.deployment import load_deployment
    from tessera.yamlfile import ConfigError

    config = tmp_path / "config"
    shutil.copytree(DEMO, config)
    with open(config / "tessera.yaml", "a", encoding="utf-8") as f:
        f.write("\nwarehouse:\n  memory_limit: plenty\n")
    with pytest.raises((ConfigError, ValueError)) as info:
        load_deployment(config)
    assert "memory_limit" in str(info.value)


def test_a_local_spark_driver_gets_a_share_of_the_machine_unless_configured():
    """Spark's own 1 GB driver heap fails on real data (the 1 M benchmark ran out of 4 GB):
    a local master gets 25 % of the machine, a configured value wins, a cluster's driver
    is left to where it is submitted."""
    from tessera.engine.spark_engine import LOCAL_DRIVER_MEMORY_SHARE, session_conf

    local = session_conf("local[2]")
    expected = max(1024, int(physical_memory() * LOCAL_DRIVER_MEMORY_SHARE) // 1024 ** 2)
    assert local["spark.driver.memory"] == f"{expected}m"
    assert local["spark.sql.session.timeZone"] == "UTC"
    assert session_conf("local[*]", {"spark.driver.memory": "6g"})["spark.driver.memory"] == "6g"
    assert "spark.driver.memory" not in session_conf("spark://host:7077")
