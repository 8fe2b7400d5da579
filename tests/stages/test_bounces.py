"""Bounce states and the hard-bounce suppression, through real ingestion."""

from __future__ import annotations

import dagster as dg

from pipelines.definitions import build_assets, build_resources
from tessera.deployment import load_deployment
from tests.stages.test_identity_golden import World

SOURCES = """
sources:
  - name: crm_people
    entity: contact
    node: crm
    format: csv
    path: "crm/*.csv"
    csv: {delimiter: ",", encoding: utf-8}
    timestamp_format: "%Y-%m-%d"
    columns: {source_record_id: id, email: email, mobile: mobile, consent_email: consent, updated_at: updated}
  - name: bounces
    entity: bounce
    node: erp
    format: csv
    path: "bounces/*.csv"
    csv: {delimiter: ",", encoding: utf-8}
    columns: {campaign_id: campaign, email: email, bounce_type: type, bounced_at: at}
"""


def test_bounce_states_and_hard_bounce_suppression(tmp_path):
    w = World(tmp_path)
    (w.config / "sources.yaml").write_text(SOURCES)
    w.drop("crm/c.csv", "id,email,mobile,consent,updated\n"
                        "A,hard@x.it,3470000001,1,2026-01-01\n"
                        "B,thrice@x.it,3470000002,1,2026-01-01\n"
                        "C,once@x.it,3470000003,1,2026-01-01\n")
    w.drop("bounces/b.csv", "campaign,email,type,at\n"
                            "K1,hard@x.it,hard,2026-01-01T10:00:00\n"
                            "K1,thrice@x.it,soft,2026-01-01T10:00:00\n"
                            "K2,thrice@x.it,soft,2026-02-01T10:00:00\n"
                            "K3,thrice@x.it,soft,2026-03-01T10:00:00\n"
                            "K3,once@x.it,soft,2026-03-01T10:00:00\n")
    assets, checks = build_assets(load_deployment(w.config))
    result = dg.materialize([*assets, *checks],
                            selection=dg.AssetSelection.groups("ingestion", "staging", "identity", "consent"),
                            resources=build_resources(w.warehouse, w.landing, tmp_path / "feeds"),
                            instance=dg.DagsterInstance.ephemeral())
    assert result.success
    rows = {e: (h, s, l3, st) for e, h, s, l3, st in w.query(
        "SELECT email_key, hard_bounces, soft_bounces, bounced_in_last_3, state FROM core.bounce_status")}
    assert rows == {"hard@x.it": (1, 0, 1, "blocked"), "thrice@x.it": (0, 3, 3, "blocked"),
                    "once@x.it": (0, 1, 1, "to_handle")}
    supp = w.query("SELECT kind, reason, channel FROM ops.suppressions")
    assert supp == [("email", "hard_bounce", "email")]
    assert "hard@x.it" not in str(w.query("SELECT * FROM ops.suppressions"))
