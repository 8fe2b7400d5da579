"""The benchmarks' own deployments still load their files.

Why: the FEBRL benchmark's configuration silently loaded nothing (F1 0) for a session
after ingestion began refusing unmapped header columns; no test read it. This test
loads three FEBRL-shaped rows through the real ingestion with that configuration.
"""

from __future__ import annotations

import csv
from pathlib import Path

from tessera.deployment import load_deployment
from tessera.engine.warehouse import connect, ensure_warehouse
from tessera.ingest.load import ingest_source

ROOT = Path(__file__).resolve().parents[2]
FEBRL_FIELDS = ["rec_id", "given_name", "surname", "street", "address_2", "suburb", "postcode", "state",
                "date_of_birth", "soc_sec_id"]


def test_febrl_configuration_loads_its_files(tmp_path):
    deployment = load_deployment(ROOT / "bench" / "identity" / "febrl_config")
    landing = tmp_path / "landing"
    landing.mkdir()
    with (landing / "febrl_dataset3.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(FEBRL_FIELDS)
        w.writerow(["rec-1-org", "mitchell", "green", "7 wallaby place", "delmar", "cleveland", "2119", "sa",
                    "19560409", "1804974"])
        w.writerow(["rec-1-dup-0", "mitchell", "gren", "7 wallaby pl", "", "cleveland", "2119", "sa",
                    "19561509", "1804974"])  # an impossible date: emptied and reported, the row kept
        w.writerow(["rec-2-org", "harley", "mccarthy", "177 pridham street", "milton", "marsden", "3165", "nsw",
                    "19080419", "6089216"])
    con = connect(tmp_path / "w.duckdb")
    try:
        ensure_warehouse(con)
        outcome = ingest_source(con, deployment, deployment.sources[0], landing, "test")
        assert outcome.total("records") == 3
        assert outcome.total("rejected") == 0
        assert con.execute("SELECT count(*) FROM raw.febrl").fetchone()[0] == 3
    finally:
        con.close()
