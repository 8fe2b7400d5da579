"""The seeds' segment examples, shipped in examples/demo, on the demo's own data (the sample
``make demo`` generates: 300 persons, seed 42), each with its expected members written
here and cross-checked against the landing files:

* Nurtigo: contacts of Turin companies with revenue over 5 M and a purchase in the last
  six months (``turin_companies_5m``; the companies are planted by
  ``tessera.sampledata.seeds``, with near misses: 4 M, exactly 5 M, Milan, a stale purchase);
* Flow: top-spending women who bought in the Milan store, a segment built on the segment
  ``top_spenders`` (``milan_store_women_top_spenders``);
* Contacthub: a customer rule with ALL and ANY (``reachable_loyal_italians``);
* Nurtigo scoring: page view +5, download +20, unopened e-mail -10, at 100 points a tag,
  a notification and the CRM feed.

One real run of the daily job (Dagster, in process) over a temporary warehouse. When the
demo's generator changes, the literal expectations below change with it (they are the
demo's answers; the cross-checks say why)."""
from __future__ import annotations

import csv
import datetime as dt

import pytest
from lxml import etree

from tests.conftest import AS_OF, PipelineEnv

# The demo's answers (ERP ids of the members), 2026-11-01.
TURIN_MEMBERS = ["ERP100003", "ERP100015", "ERP100029", "ERP100030"]
MILAN_MEMBERS = ["ERP100022", "ERP100081", "ERP100120", "ERP100144"]
CONTACTHUB_MEMBERS = sorted([
    "ERP100001", "ERP100009", "ERP100023", "ERP100024", "ERP100028", "ERP100031", "ERP100034",
    "ERP100036", "ERP100042", "ERP100044", "ERP100045", "ERP100053", "ERP100056", "ERP100072",
    "ERP100078", "ERP100082", "ERP100099", "ERP100133", "ERP100134", "ERP100136", "ERP100149",
    "ERP100154"])
HOT_LEADS = {"ERP100055": 102, "ERP100131": 104}  # engagement score >= 100: tag, notify, feed


def _records(path, tag):
    out = []
    for _, el in etree.iterparse(str(path), tag=tag, resolve_entities=False, no_network=True):
        out.append({c.tag: (c.text or "") for c in el})
        el.clear()
    return out


def _orders(landing):
    good = []
    for o in _records(next((landing / "ecommerce").glob("ordini_*.xml")), "ordine"):
        try:
            day = dt.datetime.strptime(o["data"], "%d/%m/%Y").date()
            float(o["importo"])
        except ValueError:
            continue
        if o["idOrdine"] and o["idCliente"]:
            good.append({**o, "day": day})
    return good


@pytest.fixture(scope="module")
def seed_env(tmp_path_factory):
    from tessera.sampledata.generator import generate

    env = PipelineEnv(tmp_path_factory.mktemp("seeds"))
    generate(env.landing, contacts=300, seed=42, as_of=AS_OF)  # exactly `make demo`'s sample
    env.erp = {r["idgestionale"]: r for r in _records(next((env.landing / "erp").glob("erp_contacts_*.xml")),
                                                       "utente") if r["idgestionale"] and "@" in r["email"]}
    env.orders = _orders(env.landing)
    with open(env.landing / "_truth" / "seed_examples.csv", encoding="utf-8") as fh:
        env.plan = {}
        for r in csv.DictReader(fh):
            env.plan.setdefault(r["group"], []).append(r["erp_id"])
    result = env.run_daily()
    assert result.success
    env.result = result
    return env


def _members(con, segment):
    return sorted(r[0] for r in con.execute(
        "SELECT customer_id FROM marketing.segment_members WHERE segment = ? AND as_of_date = ?",
        [segment, AS_OF]).fetchall())


def _cid_of_erp(con) -> dict:
    return dict(con.execute("SELECT source_record_id, customer_id FROM core.customer_sources "
                            "WHERE source = 'erp_contacts'").fetchall())


def test_nurtigo_turin_companies_over_5m_with_a_recent_purchase(seed_env):
    con = seed_env.connect()
    try:
        cid = _cid_of_erp(con)
        got = _members(con, "turin_companies_5m")
        linked = con.execute("SELECT count(*) FROM marts.contact_cards WHERE company_revenue IS NOT NULL").fetchone()[0]
    finally:
        con.close()
    erp_of = {c: e for e, c in cid.items()}
    assert sorted(erp_of[c] for c in got) == TURIN_MEMBERS
    # the planted "in" group, and none of the near misses (4 M, exactly 5 M, Milan, stale)
    assert TURIN_MEMBERS == sorted(seed_env.plan["in"])
    last = {}
    for o in seed_env.orders:
        last[o["idCliente"]] = max(last.get(o["idCliente"], dt.date.min), o["day"])
    assert all((AS_OF - last[e]).days <= 183 for e in TURIN_MEMBERS)
    assert all((AS_OF - last[e]).days > 183 for e in seed_env.plan["stale"])
    assert linked >= sum(len(v) for v in seed_env.plan.values())  # planted users are B2C people


def test_flow_top_spending_women_who_bought_in_the_milan_store(seed_env):
    con = seed_env.connect()
    try:
        cid = _cid_of_erp(con)
        top = {r[0] for r in con.execute("SELECT customer_id FROM marketing.rfm_scores "
                                         "WHERE as_of_date = ? AND m_score = 5", [AS_OF]).fetchall()}
        got = _members(con, "milan_store_women_top_spenders")
        top_seg = set(_members(con, "top_spenders"))
    finally:
        con.close()
    milan_buyers = {o["idCliente"] for o in seed_env.orders
                    if o["idCanaleMacro"] == "2" and o["idCanaleMicro"] == "1"}
    women = {e for e, r in seed_env.erp.items() if r["sesso"] == "F"}
    expected = sorted(cid[e] for e in milan_buyers & women if e in cid and cid[e] in top)
    assert top_seg == top
    assert got == expected
    erp_of = {c: e for e, c in cid.items()}
    assert sorted(erp_of[c] for c in got) == MILAN_MEMBERS


def test_contacthub_customer_rule_with_all_and_any(seed_env):
    con = seed_env.connect()
    try:
        cards = con.execute("""SELECT customer_id, country, order_number, email_consent, sms_consent,
                                      loyalty_tier, birth_date FROM marts.contact_cards""").fetchall()
        got = _members(con, "reachable_loyal_italians")
        erp_of = {c: e for e, c in _cid_of_erp(con).items()}
    finally:
        con.close()
    assert sorted(erp_of[c] for c in got) == CONTACTHUB_MEMBERS
    expected = sorted(
        c for c, country, orders, email, sms, tier, birth in cards
        if country == "IT" and orders >= 1 and "granted" in (email, sms)
        and (tier in ("gold", "silver") or (birth is not None and birth < dt.date(1980, 1, 1))))
    assert expected and got == expected


def test_scores_stages_and_threshold_feed_in_the_daily_job(seed_env):
    con = seed_env.connect()
    try:
        low = con.execute("SELECT count(*) FROM marketing.score_actions WHERE score < threshold").fetchone()[0]
        fired = con.execute("SELECT count(DISTINCT customer_id) FROM marketing.score_actions "
                            "WHERE score_type = 'engagement' AND action = 'feed'").fetchone()[0]
        hot = con.execute("SELECT count(*) FROM marketing.scores WHERE as_of_date = ? "
                          "AND score_type = 'engagement' AND score >= 100", [AS_OF]).fetchone()[0]
        funnel = con.execute("SELECT sum(contacts) FROM marketing.funnel_daily WHERE as_of_date = ?",
                             [AS_OF]).fetchone()[0]
        staged = con.execute("SELECT count(*) FROM marketing.stages WHERE as_of_date = ?", [AS_OF]).fetchone()[0]
        fed = con.execute("SELECT count(*) FROM exports.crm_hot_leads WHERE as_of_date = ?", [AS_OF]).fetchone()[0]
    finally:
        con.close()
    assert low == 0
    assert fired == hot > 0  # first day: everybody at or above 100 crossed today
    con = seed_env.connect()
    try:
        erp_of = {c: e for e, c in _cid_of_erp(con).items()}
        hot_rows = con.execute("SELECT customer_id, score FROM marketing.scores WHERE as_of_date = ? "
                               "AND score_type = 'engagement' AND score >= 100", [AS_OF]).fetchall()
        tagged = {r[0] for r in con.execute("SELECT customer_id FROM marketing.contact_tags "
                                            "WHERE tag = 'hot_lead'").fetchall()}
    finally:
        con.close()
    assert {erp_of[c]: int(v) for c, v in hot_rows} == HOT_LEADS
    assert tagged == {c for c, _ in hot_rows}
    assert fed == fired
    assert funnel == staged > 0
    mats = {e.event_specific_data.materialization.asset_key.to_user_string()
            for e in seed_env.result.get_asset_materialization_events()}
    assert {"marketing/scores", "marketing/score_actions", "marketing/stages", "marketing/funnel_daily",
            "segments/milan_store_women_top_spenders", "exports/crm_hot_leads"} <= mats


def test_cli_dry_run_and_overrides(seed_env, monkeypatch, capsys):
    from tessera.cli import main

    monkeypatch.setenv("TESSERA_CONFIG", str(seed_env.config))
    monkeypatch.setenv("TESSERA_HOME", str(seed_env.root))
    monkeypatch.setenv("DAGSTER_HOME", str(seed_env.dagster_home))
    assert main(["segment", "dry-run", "turin_companies_5m", "--date", AS_OF.isoformat()]) == 0
    out = capsys.readouterr().out
    assert "would enter: 0   would leave: 0" in out
    assert "@" not in out  # ids and counts only
    assert main(["segment", "add", "turin_companies_5m", "--ids", "1", "2", "--date", AS_OF.isoformat()]) == 0
    assert main(["segment", "dry-run", "turin_companies_5m", "--date", AS_OF.isoformat()]) == 0
    out = capsys.readouterr().out
    con = seed_env.connect()
    try:
        stored = len(_members(con, "turin_companies_5m"))
        members = _members(con, "turin_companies_5m")
        new = len({1, 2} - set(members))
    finally:
        con.close()
    assert f"would enter: {new}   would leave: 0" in out
    assert "entering ids: " + (", ".join(map(str, sorted({1, 2} - set(members)))) or "(none)") in out
    assert "leaving ids: (none)" in out
    assert f"{stored + new} members" in out
    assert main(["segment", "dry-run", "nope"]) == 2
