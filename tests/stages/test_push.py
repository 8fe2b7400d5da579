"""The push endpoint on a real HTTP server on 127.0.0.1: per-source tokens, shape and size
limits, idempotent retries, and pushed records checked by the ordinary ingestion of the
next run (rejects with file and line) and then through the Dagster asset."""
from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import urllib.error
import urllib.request

import dagster as dg
import pytest

from pipelines.definitions import build_assets, build_resources
from tessera.deployment import load_deployment
from tessera.ingest.load import ingest_source
from tessera.ingest.push import PushConfigError, make_server
from tessera.engine.warehouse import connect, ensure_warehouse
from tessera.ingest.scrub import scrub_landing_files

TESSERA_YAML = """
deployment: test
nodes: [{name: web}, {name: shop}]
tree: {priority: [shop, web]}
"""
SOURCES_YAML = """
sources:
  - name: web_signups
    entity: contact
    node: web
    format: push
    push: {token_env: TESSERA_PUSH_WEB, max_body_kb: 4, max_records: 5}
    columns: {source_record_id: id, email: contact.email, first_name: contact.name, birth_date: born}
    date_format: "%Y-%m-%d"
  - name: shop_signups
    entity: contact
    node: shop
    format: push
    push: {token_env: TESSERA_PUSH_SHOP}
    columns: {source_record_id: id, email: email}
"""
WEB, SHOP = "web-token-123", "shop-token-456"


@pytest.fixture
def world(tmp_path, monkeypatch):
    config = tmp_path / "config"
    config.mkdir()
    (config / "tessera.yaml").write_text(TESSERA_YAML)
    (config / "sources.yaml").write_text(SOURCES_YAML)
    monkeypatch.setenv("TESSERA_PUSH_WEB", WEB)
    monkeypatch.setenv("TESSERA_PUSH_SHOP", SHOP)
    dep = load_deployment(config)
    landing = tmp_path / "landing"
    server = make_server(dep, landing, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    yield dep, landing, base, tmp_path
    server.shutdown()
    server.server_close()


def post(base, source, body, token, key=None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(f"{base}/v1/sources/{source}/records", data=data, method="POST",
                                 headers={"Authorization": f"Bearer {token}",
                                          "Content-Type": "application/json",
                                          **({"Idempotency-Key": key} if key else {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_push_lands_records_and_ingestion_checks_them(world, caplog):
    dep, landing, base, tmp = world
    caplog.set_level(logging.INFO, logger="tessera.push")
    records = [{"id": "W1", "contact": {"email": "anna.rossi@example.it", "name": "Anna"}, "born": "1980-02-14"},
               {"id": "W2", "contact": {"email": "not-an-email", "name": "Bruno"}},
               {"id": "W3", "contact": {"email": "carla@example.it"}, "born": "1980-02-31"}]
    status, body = post(base, "web_signups", {"records": records}, WEB)
    assert status == 202 and body["accepted"] == 3
    files = list((landing / "_push" / "web_signups").glob("*.jsonl"))
    assert [f.name for f in files] == [body["file"]]
    assert len(files[0].read_text().splitlines()) == 3

    # A token is scoped to its source (and so to its node).
    assert post(base, "web_signups", records, SHOP)[0] == 401
    assert post(base, "shop_signups", records, WEB)[0] == 401
    assert post(base, "web_signups", records, "")[0] == 401
    assert post(base, "nope", records, WEB)[0] == 404
    # Shape and size are refused before anything is written.
    status, body = post(base, "web_signups", b'{"id": "W9", ', WEB)
    assert status == 400 and "not valid JSON" in body["error"]
    status, body = post(base, "web_signups", [{"id": "W9"}, "text"], WEB)
    assert status == 400 and body["error"] == "record 1: a JSON object is expected"
    assert post(base, "web_signups", [{"id": f"W{i}"} for i in range(6)], WEB)[0] == 400
    assert post(base, "web_signups", [{"id": "W9", "pad": "x" * 5000}], WEB)[0] == 413
    assert len(list((landing / "_push" / "web_signups").glob("*.jsonl"))) == 1

    # A retried request with the same Idempotency-Key lands once.
    one = [{"id": "S1", "email": "shop.one@example.it"}]
    assert post(base, "shop_signups", one, SHOP, key="order-77")[0] == 202
    status, body = post(base, "shop_signups", one, SHOP, key="order-77")
    assert status == 200 and body["duplicate"] is True and body["accepted"] == 0
    assert len(list((landing / "_push" / "shop_signups").glob("*.jsonl"))) == 1

    # The server's log has sources, statuses and counts, never bodies or tokens.
    logged = caplog.text
    assert "source=web_signups status=202 records=3" in logged
    assert "anna.rossi" not in logged and WEB not in logged and SHOP not in logged

    # The next run's ingestion enforces the contract on pushed records.
    con = connect(tmp / "wh.duckdb")
    ensure_warehouse(con)
    now = dt.datetime(2026, 11, 1, 6)
    out = ingest_source(con, dep, dep.source("web_signups"), landing, "b1", now)
    assert [(f.status, f.records, f.new, f.rejected) for f in out.files] == [("loaded", 3, 1, 2)]
    rejects = con.execute("SELECT file, line, field FROM ops.rejects ORDER BY line").fetchall()
    rel = f"_push/web_signups/{files[0].name}"
    assert rejects == [(rel, 2, "email"), (rel, 3, "birth_date")]
    assert con.execute("SELECT email, first_name FROM raw.web_signups").fetchall() == [("anna.rossi@example.it", "Anna")]
    again = ingest_source(con, dep, dep.source("web_signups"), landing, "b2", now)
    assert [f.status for f in again.files] == ["already_loaded"]
    # Forget reaches pushed files like any landing file.
    from tessera.privacy import suppression as privacy

    key = __import__("os").environ["TESSERA_SUPPRESSION_KEY"]
    gone = privacy.forget(con, dep, key, emails=["Anna.Rossi@example.it"], request_id="r1")
    assert scrub_landing_files(con, dep, landing, key, "r1", gone["records"], gone["orders"]) == 1
    assert "anna.rossi" not in files[0].read_text() and len(files[0].read_text().splitlines()) == 2
    assert con.execute("SELECT line FROM ops.rejects ORDER BY line").fetchall() == [(1,), (2,)]
    con.close()


def test_pushed_records_through_the_dagster_asset(world):
    dep, landing, base, tmp = world
    assert post(base, "shop_signups", [{"id": "S1", "email": "a@example.it"},
                                       {"id": "S2", "email": "b@example.it"}], SHOP)[0] == 202
    assets, checks = build_assets(dep)
    result = dg.materialize([*assets, *checks], selection=dg.AssetSelection.assets(["raw", "shop_signups"]),
                            resources=build_resources(tmp / "wh.duckdb", landing, tmp / "feeds", deployment=dep),
                            instance=dg.DagsterInstance.ephemeral())
    assert result.success
    mat = result.asset_materializations_for_node("raw__shop_signups")[0]
    assert mat.metadata["new"].value == 2
    key = dg.AssetKey(["raw", "shop_signups"])
    spec = next(a for a in assets if isinstance(a, dg.AssetsDefinition) and key in a.keys)
    assert spec.metadata_by_key[key]["landing_glob"] == "_push/shop_signups/*.jsonl"


def test_missing_token_names_the_variable(tmp_path, monkeypatch):
    config = tmp_path / "config"
    config.mkdir()
    (config / "tessera.yaml").write_text(TESSERA_YAML)
    (config / "sources.yaml").write_text(SOURCES_YAML)
    monkeypatch.delenv("TESSERA_PUSH_WEB", raising=False)
    monkeypatch.setenv("TESSERA_PUSH_SHOP", SHOP)
    with pytest.raises(PushConfigError, match="TESSERA_PUSH_WEB \\(source web_signups\\)"):
        make_server(load_deployment(config), tmp_path / "landing", "127.0.0.1", 0)


def test_push_source_takes_no_path(tmp_path):
    from tessera.yamlfile import ConfigError

    config = tmp_path / "config"
    config.mkdir()
    (config / "tessera.yaml").write_text(TESSERA_YAML)
    (config / "sources.yaml").write_text(SOURCES_YAML.replace(
        "    format: push\n    push: {token_env: TESSERA_PUSH_SHOP}",
        "    format: push\n    path: 'x/*.jsonl'\n    push: {token_env: TESSERA_PUSH_SHOP}"))
    with pytest.raises(ConfigError, match="sources.yaml:\\d+: sources\\[1\\].path: a push source lands under"):
        load_deployment(config)
