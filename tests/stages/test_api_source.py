"""An api source materialised with Dagster: the token comes from an environment
variable through dg.EnvVar, and neither the run's storage nor its metadata hold it."""
from __future__ import annotations


import dagster as dg

from pipelines.definitions import build_assets, build_resources
from tessera.deployment import load_deployment
from tessera.engine.warehouse import connect
from tests.core.test_api import TOKEN, Api, serve

TESSERA_YAML = """
deployment: test
nodes: [{name: crm}]
tree: {priority: [crm]}
"""


def test_api_asset_reads_token_from_env_and_never_stores_it(tmp_path, monkeypatch):
    api = Api()
    server = serve(api)
    try:
        config = tmp_path / "config"
        config.mkdir()
        (config / "tessera.yaml").write_text(TESSERA_YAML)
        (config / "sources.yaml").write_text(f"""
sources:
  - name: crm_api
    entity: contact
    node: crm
    format: api
    api:
      url: "http://127.0.0.1:{server.server_address[1]}/people"
      pagination: page
      page_size: 3
      token_env: TESSERA_TEST_TOKEN
      backoff_s: 0.01
    columns: {{source_record_id: id, email: profile.email, first_name: profile.name}}
""")
        monkeypatch.setenv("TESSERA_TEST_TOKEN", TOKEN)
        dep = load_deployment(config)
        assets, checks = build_assets(dep)
        home = tmp_path / "dagster_home"
        home.mkdir()
        instance = dg.DagsterInstance.local_temp(str(home))
        result = dg.materialize(
            [*assets, *checks], selection=dg.AssetSelection.groups("ingestion"),
            resources=build_resources(tmp_path / "wh.duckdb", tmp_path / "landing",
                                      tmp_path / "feeds", deployment=dep),
            instance=instance)
        assert result.success
        mat = result.asset_materializations_for_node("raw__crm_api")[0]
        assert mat.metadata["new"].value == 7
        assert all(auth == f"Bearer {TOKEN}" for _, auth in api.requests)
        con = connect(tmp_path / "wh.duckdb")
        assert con.execute("SELECT count(*) FROM raw.crm_api").fetchone()[0] == 7
        con.close()
        instance.dispose()
        # Nothing under DAGSTER_HOME (runs, event logs, compute logs) holds the token.
        for path in home.rglob("*"):
            if path.is_file():
                assert TOKEN.encode() not in path.read_bytes(), path
    finally:
        server.shutdown()
        server.server_close()
