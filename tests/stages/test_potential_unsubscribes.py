"""Issue 5 item 2: unsubscribes from potential companies must be decided (unfreeze, block
or download) before that registry feeds any export, and the export says so until then.

The real daily job (Dagster, in process) over real files: a purchased list, an ESP
unsubscribe file, a B2C source; decisions through the real CLI.
"""

from __future__ import annotations

import json
import textwrap

import pytest

from tessera.cli import main
from tests.conftest import AS_OF, PipelineEnv
from tests.stages.small_world import crm_people

TESSERA_YAML = """
deployment: test
nodes: [{name: crm}, {name: lists}, {name: esp}]
tree: {priority: [crm, lists, esp]}
"""

SOURCES_YAML = """
sources:
""" + crm_people("source_record_id: id, first_name: nome, last_name: cognome, email: email") + """\
  - name: purchased_companies
    entity: potential_company
    node: lists
    format: csv
    path: "lists/potenziali_*.csv"
    csv: {delimiter: ";", encoding: utf-8}
    columns: {source_record_id: id, legal_name: ragione, country: paese, email: email}
  - name: esp_unsubscribes
    entity: unsubscribe
    node: esp
    format: csv
    path: "esp/unsub_*.csv"
    csv: {delimiter: ",", encoding: utf-8}
    columns: {email: email, channel: channel, requested_at: requested_at}
"""


def _drop(env, rel, text):
    path = env.landing / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("potential")
    cfg = root / "config"
    cfg.mkdir()
    (cfg / "tessera.yaml").write_text(TESSERA_YAML)
    (cfg / "sources.yaml").write_text(SOURCES_YAML)
    e = PipelineEnv(root, config=cfg)
    _drop(e, "crm/people_1.csv", "id;nome;cognome;email\nC1;Anna;Neri;anna@x.it\n")
    _drop(e, "lists/potenziali_1.csv", "id;ragione;paese;email\n"
          "L1;Alfa Srl;IT;info@alfa.it\nL2;Beta Srl;IT;info@beta.it\nL3;Gamma Srl;IT;\n")
    _drop(e, "esp/unsub_1.csv", "email,channel,requested_at\n"
          "INFO@alfa.it,email,2026-10-20T10:00:00\nanna@x.it,sms,2026-10-21T10:00:00\n")
    return e


def _cli(env, *args):
    return main(["--config", str(env.config), "--home", str(env.root), *args])


def _manifest(env):
    return json.loads((env.root / "feeds" / "potential_companies" /
                       f"potential_companies_{AS_OF.isoformat()}.manifest.json").read_text())


def test_undecided_unsubscribe_blocks_the_potential_export(env, capsys):
    result = env.run_daily()
    evals = {e.check_name: e for e in result.get_asset_check_evaluations()}
    check = evals["potential_unsubscribes_are_decided"]
    assert not check.passed
    assert check.metadata["undecided"].value == 1
    assert "NOT EXPORTED: 1 unsubscribe request(s)" in check.metadata["message"].value
    done = {e.event_specific_data.materialization.asset_key.to_user_string()
            for e in result.get_asset_materialization_events()}
    assert "exports/potential_companies" not in done          # blocked by the check
    assert "core/customers" in done                           # the rest of the run went on
    con = env.connect()
    try:
        # the B2C person's sms unsubscribe is a consent event, not a potential-company request
        assert con.execute("SELECT potential_record_id, channel, decision "
                           "FROM core.potential_unsubscribes").fetchall() == [("L1", "email", None)]
        assert con.execute("SELECT sms_consent FROM core.customers").fetchall() == [("withdrawn",)]
    finally:
        con.close()
    assert _cli(env, "potential-unsubscribes", "list") == 0
    out = capsys.readouterr().out
    assert "1 undecided" in out and "purchased_companies:L1" in out and "@" not in out


def test_export_run_alone_is_withheld_and_says_why(env):
    import dagster as dg

    from pipelines.definitions import build_assets, build_resources
    from tessera.deployment import load_deployment

    assets, _ = build_assets(load_deployment(env.config))
    res = dg.materialize(assets, selection=dg.AssetSelection.keys(["exports", "potential_companies"]),
                         partition_key=AS_OF.isoformat(),
                         resources=build_resources(env.warehouse, env.landing, env.root / "feeds"),
                         instance=dg.DagsterInstance.ephemeral())
    meta = res.asset_materializations_for_node("exports__potential_companies")[0].metadata
    assert meta["withheld"].value is True and meta["dagster/row_count"].value == 0
    assert "await a decision" in meta["message"].value
    m = _manifest(env)
    assert m["withheld"] is True and m["rows"] == 0 and m["file"] is None
    assert m["message"].startswith("NOT EXPORTED: 1 unsubscribe request(s) from potential companies")
    assert not (env.root / "feeds" / "potential_companies" /
                f"potential_companies_{AS_OF.isoformat()}.csv").exists()


def test_download_then_block_decides_and_the_export_leaves_the_company_out(env, tmp_path):
    out = tmp_path / "requests.csv"
    assert _cli(env, "potential-unsubscribes", "decide", "download", "--out", str(out)) == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "request_id,potential_record_id,legal_name,email,channel,requested_at"
    assert lines[1].split(",")[1:5] == ["L1", "Alfa Srl", "info@alfa.it", "email"]
    result = env.run_daily()
    assert result.success
    m = _manifest(env)
    assert m["withheld"] is False and m["rows"] == 2
    data = (env.root / "feeds" / "potential_companies" / m["file"]).read_text().splitlines()
    assert [r.split(",")[0] for r in data[1:]] == ["L2", "L3"]   # L1 blocked by the decision
    con = env.connect()
    try:
        assert con.execute("SELECT decision, origin FROM ops.potential_unsubscribe_decisions"
                           ).fetchall() == [("download", "cli")]
    finally:
        con.close()


def test_a_new_request_blocks_again_until_unfrozen(env):
    _drop(env, "esp/unsub_2.csv", "email,channel,requested_at\ninfo@beta.it,email,2026-10-25T09:00:00\n")
    assert not env.run_daily().success                         # the check fails: L2 undecided
    assert _cli(env, "potential-unsubscribes", "decide", "unfreeze", "--request", "nope") == 2
    con = env.connect()
    try:
        (req,) = con.execute("SELECT request_id FROM core.potential_unsubscribes "
                             "WHERE decision IS NULL").fetchone()
    finally:
        con.close()
    assert _cli(env, "potential-unsubscribes", "decide", "unfreeze", "--request", req) == 0
    assert env.run_daily().success
    m = _manifest(env)
    data = (env.root / "feeds" / "potential_companies" / m["file"]).read_text().splitlines()
    assert [r.split(",")[0] for r in data[1:]] == ["L2", "L3"]   # unfrozen: L2 stays
