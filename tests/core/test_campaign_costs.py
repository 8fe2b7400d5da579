"""The campaign cost entity (ROAS per campaign): its contract types and refuses lines like
every other source's, and staging keeps the latest version of each line."""

from __future__ import annotations

import datetime as dt
import decimal
from pathlib import Path


from tessera.deployment import load_deployment
from tessera.ingest.load import ingest_source
from tessera.ingest.staging import build_entity

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo"
NOW = dt.datetime(2026, 11, 1, 6, 0, 0)


def _write(landing: Path, name: str, lines: list[str]) -> None:
    path = landing / "marketing" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("campaign_id,channel,spend_date,cost\n" + "".join(f"{x}\n" for x in lines),
                    encoding="utf-8")


def test_campaign_costs_load_typed_and_refuse_bad_lines(con, tmp_path):
    dep = load_deployment(DEMO)
    source = dep.source("campaign_costs")
    assert source.entity == "campaign_cost"
    landing = tmp_path / "landing"
    _write(landing, "campaign_costs_20261031.csv", [
        "CMP-2026-10,email,2026-10-01,250.50",
        "CMP-2026-10,social,2026-10-01,1200",
        "CMP-2026-10,search,2026-10-01,about 300",   # line 4: not a number
        ",email,2026-10-01,10",                       # line 5: no campaign
        "CMP-2026-09,email,01/09/2026,99",            # line 6: not the source's date format
    ])
    ingest_source(con, dep, source, landing, "b1", now=NOW)
    build_entity(con, dep, "campaign_cost")
    got = con.execute("SELECT campaign_id, channel, spend_date, cost FROM staging.campaign_costs "
                      "ORDER BY cost").fetchall()
    assert got == [("CMP-2026-10", "email", dt.date(2026, 10, 1), decimal.Decimal("250.50")),
                   ("CMP-2026-10", "social", dt.date(2026, 10, 1), decimal.Decimal("1200"))]
    rejects = con.execute("SELECT line, field FROM ops.rejects WHERE source = 'campaign_costs' "
                          "ORDER BY line").fetchall()
    assert rejects == [(4, "cost"), (5, "campaign_id"), (6, "spend_date")]
    report = con.execute("SELECT records, new, rejected FROM ops.import_report "
                         "WHERE source = 'campaign_costs'").fetchall()
    assert report == [(5, 2, 3)]

    # a later file with the same line and another cost is a new line (the key is the
    # line's content); staging keeps every line, so a correction is sent as a delta
    _write(landing, "campaign_costs_20261101.csv", ["CMP-2026-10,email,2026-10-15,49.50"])
    ingest_source(con, dep, source, landing, "b2", now=NOW)
    build_entity(con, dep, "campaign_cost")
    assert con.execute("SELECT sum(cost) FROM staging.campaign_costs").fetchone()[0] == decimal.Decimal("1500.00")
